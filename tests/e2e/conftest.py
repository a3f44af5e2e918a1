"""End-to-end fixtures: real `dvc repro` in a temporary copy of the repository."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.project import SLICE, copy_repo, run


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repo on the digits slice after one complete `dvc repro`."""
    project = copy_repo(tmp_path_factory.mktemp("pipeline"), SLICE)
    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return project


@pytest.fixture
def mlflow_client() -> Callable[[Path], Any]:
    """An MlflowClient on a project's embedded tracking store."""

    def make(project: Path) -> Any:
        uri = f"sqlite:///{project / '.mlops' / 'mlflow.db'}"
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    return make

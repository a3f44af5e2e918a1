"""Fixtures for integration tests: a throwaway project with real SQLite stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.config import Settings


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder that looks like a DVC repo (so stores resolve under it)."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    return tmp_path


@pytest.fixture
def settings(project: Path) -> Iterator[Settings]:
    """Settings of the embedded default under `project`, with MLflow pointed at them."""
    import mlflow

    from mlops import tracking

    s = Settings.from_env(env={}, cwd=project)
    tracking.connect(s)
    yield s
    while mlflow.active_run() is not None:
        mlflow.end_run()

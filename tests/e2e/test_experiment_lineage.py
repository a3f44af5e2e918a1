"""A version trained by `dvc exp run` records the experiment, not only HEAD: its name, the
ref DVC commits it to, and the params that differ from HEAD's params.yaml."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from registry.registration import version_info
from tests.e2e.project import SLICE, copy_repo, run

pytestmark = pytest.mark.e2e


def test_workspace_experiment_is_in_the_lineage(
    tmp_path: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = copy_repo(tmp_path, SLICE)
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    done = run(
        ["dvc", "exp", "run", "-n", "fast-lr", "-S", "train.learning_rate=0.002",
         "-S", "train.epochs=12"],
        project,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    tags = version_info(mlflow_client(project).get_model_version("digits", "1").tags)
    ref = f"refs/exps/{head[:2]}/{head[2:]}/fast-lr"
    assert tags["mlops.dvc_exp.name"] == "fast-lr"
    assert tags["mlops.dvc_exp.ref"] == ref
    assert json.loads(tags["mlops.dvc_exp.params"]) == {
        "train.epochs": 12,
        "train.learning_rate": 0.002,
    }
    assert tags["mlops.git_commit"] == head
    assert tags["mlops.git_dirty"] == "false"  # only params changed, and they are recorded
    # The ref exists once the experiment ended, and holds those params.
    assert run(["git", "show-ref", "--verify", ref], project).returncode == 0
    shown = run(["git", "show", f"{ref}:params.yaml"], project).stdout
    assert "learning_rate: 0.002" in shown
    shown = run(["mlops", "registry", "lineage", "digits", "1", "--json"], project).stdout
    chain = json.loads(shown)
    assert chain["dvc_experiment"]["name"] == "fast-lr" and chain["dvc_experiment"]["ref"] == ref

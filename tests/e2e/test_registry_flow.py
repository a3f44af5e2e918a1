"""The registry's life cycle as a user runs it: `dvc repro` registers v1, it goes to
staging then production through the gates, `dvc exp run` trains a CNN as v2, v2 is
compared against production and promoted, then rolled back, with `history` showing
it all and MLflow's aliases agreeing at every step."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.project import SLICE, copy_repo, run

pytestmark = pytest.mark.e2e

GATES = {
    "registry": {
        "gates": {
            "staging": {"integrity": True},
            "production": {
                "thresholds": {"accuracy": 0.8},
                "beat_holder_by": -0.1,  # a tolerance: v2 may be up to 10 points worse
                "signature": True,
                "integrity": True,
                "max_size_mb": 50.0,
            },
        }
    }
}


def _mlops(project: Path, *args: str) -> Any:
    return run(["mlops", "registry", *args], project)


def test_promote_compare_rollback_history(
    tmp_path: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = copy_repo(tmp_path, SLICE | GATES)
    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow_client(project)

    def aliases() -> dict[str, str]:
        return {k: str(v) for k, v in client.get_registered_model("digits").aliases.items()}

    step = _mlops(project, "promote", "digits", "1", "--to", "staging", "--reason", "first")
    assert step.returncode == 0, step.stderr
    assert aliases() == {"staging": "1"}
    step = _mlops(project, "promote", "digits", "@staging", "--to", "production")
    assert step.returncode == 0, step.stderr
    assert "metric accuracy" in step.stdout
    assert aliases() == {"production": "1"}

    exp = run(["dvc", "exp", "run", "-S", "train.model.family=cnn"], project)
    assert exp.returncode == 0, exp.stderr[-3000:]
    listed = json.loads(_mlops(project, "list", "digits", "--json").stdout)
    assert [r["version"] for r in listed] == [2, 1]

    compared = _mlops(project, "compare", "digits", "@production", "2", "--markdown")
    assert compared.returncode == 0, compared.stderr
    assert "**Verdict:** v2 " in compared.stdout
    assert "| family | mlp | cnn |" in compared.stdout

    step = _mlops(project, "promote", "digits", "2", "--to", "production", "--reason", "cnn")
    assert step.returncode == 0, step.stderr
    assert aliases() == {"production": "2"}
    step = _mlops(project, "rollback", "digits", "--reason", "cnn misbehaves")
    assert step.returncode == 0, step.stderr
    assert aliases() == {"production": "1"}
    assert client.get_model_version("digits", "1").tags["mlops.stage"] == "production"
    assert client.get_model_version("digits", "2").tags["mlops.stage"] == "none"

    history = json.loads(_mlops(project, "history", "digits", "--json").stdout)
    assert [(e["action"], e["version"], e["to_stage"]) for e in history] == [
        ("register", 1, "none"),
        ("promote", 1, "staging"),
        ("promote", 1, "production"),
        ("register", 2, "none"),
        ("promote", 2, "production"),
        ("rollback", 1, "production"),
    ]
    assert history[-1]["reason"] == "cnn misbehaves"
    assert all(g["passed"] for g in history[-2]["evidence"]["gates"])
    shown = json.loads(_mlops(project, "show", "digits", "@production", "--json").stdout)
    assert shown["version"] == 1 and shown["holders"] == {"production": 1}
    assert shown["lineage"]["data_md5"]["test"]

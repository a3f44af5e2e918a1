"""A user's own CSV goes through the same pipeline by changing params.yaml alone; bad data
is stopped by `validate` with one clear line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_wine

from registry.registration import version_info
from tests.e2e.project import copy_repo, point_at_file, run

pytestmark = pytest.mark.e2e


def _wine_csv(path: Path) -> None:
    bunch = load_wine(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "cultivar"})
    frame["cultivar"] = frame["cultivar"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def test_csv_through_the_pipeline(tmp_path: Path, mlflow_client: Callable[[Path], Any]) -> None:
    project = copy_repo(tmp_path)
    _wine_csv(project / "data" / "external" / "wine.csv")
    point_at_file(project, "wine.csv", "cultivar", name="wine")

    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    schema = json.loads((project / "data" / "raw" / "schema.json").read_text())
    assert schema["classes"] == ["barbera", "barolo", "grignolino"]
    assert len(schema["features"]) == 13
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9
    version = mlflow_client(project).get_model_version("wine", "1")
    assert version_info(version.tags)["mlops.metric.test_accuracy"]


def test_unusable_csv_fails_validate_with_one_line(tmp_path: Path) -> None:
    project = copy_repo(tmp_path)
    csv = project / "data" / "external" / "bad.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i % 3},x\n" for i in range(40)) + "1,2,y\n")
    point_at_file(project, "bad.csv", "label")
    done = run(["dvc", "repro"], project)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("validate: error:")]
    assert len(lines) == 1
    assert "labels.min_rows_per_class" in lines[0]
    report = json.loads((project / "reports" / "validation.json").read_text())
    assert report["passed"] is False
    assert not (project / "data" / "split" / "train.parquet").exists()

"""A regression target (a float column, even one of whole values like diabetes' 151.0,
75.0, ...) goes through the same pipeline: the target type decides the loss (MSE), the
metrics (RMSE, MAE, R²) and the plots, which `dvc plots show` draws without a warning."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_diabetes

from registry.registration import version_info
from tests.e2e.project import assert_plots, copy_repo, point_at_file, run

pytestmark = pytest.mark.e2e


def test_regression_csv_through_the_pipeline(
    tmp_path: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = copy_repo(tmp_path, {"train": {"epochs": 80}})
    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    csv = project / "data" / "external" / "diabetes.csv"
    frame.to_csv(csv, index=False)
    assert csv.read_text().splitlines()[1].endswith(",151.0")  # whole values, as floats
    point_at_file(project, "diabetes.csv", "progression", name="diabetes")

    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "a regression target (data.task: auto)" in done.stdout
    schema = json.loads((project / "data" / "raw" / "schema.json").read_text())
    assert schema["task"] == "regression" and schema["classes"] == []
    metrics = json.loads((project / "reports" / "metrics.json").read_text())["test"]
    assert set(metrics) >= {"rmse", "mae", "r2"}
    assert metrics["r2"] > 0.3
    history = json.loads((project / "reports" / "train_history.json").read_text())
    assert "val_rmse" in history[0] and "val_accuracy" not in history[0]
    version = mlflow_client(project).get_model_version("diabetes", "1")
    lineage = version_info(version.tags)
    assert float(lineage["mlops.metric.test_r2"]) == pytest.approx(metrics["r2"], rel=1e-4)
    assert lineage["mlops.task"] == "regression"

    plots = run(["dvc", "plots", "show", "--json"], project)
    assert plots.returncode == 0, plots.stderr
    assert "WARNING" not in plots.stderr, plots.stderr
    shown = json.loads(plots.stdout)
    assert not shown.get("errors"), shown.get("errors")
    assert_plots(shown["data"], epochs=len(history), score="val_r2")
    confusion = json.loads((project / "reports" / "confusion.json").read_text())
    assert len(confusion) == metrics["n_samples"]  # binned actual against predicted

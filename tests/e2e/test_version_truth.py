"""A version answers for itself: after the data source's columns are reordered and the
pipeline re-run, the version trained before still reads requests and test rows through
its own feature names — `mlops serve`, `mlops registry compare`, `mlops export`,
`mlops monitor drift` and `mlflow.pyfunc` agree with what it scored when it was trained.

(Before: serving took the feature names and order from the workspace, so `records`
answered garbage and `/metadata` advertised the new order.)
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from mlops.exposure import free_port
from tests.e2e.project import clean_env, copy_repo, point_at_file, run

pytestmark = pytest.mark.e2e
MAIN = "from mlops.cli import main; main()"


def _write(project: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(project / "data" / "external" / "diabetes.csv", index=False)


def _mlops(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", MAIN, *args], project)


def _post(port: int, doc: Any) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/predict", json.dumps(doc), {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    return json.loads(body)


def _get(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def _serve(project: Path, target: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", MAIN, "serve", target, "--port", str(port), "--poll", "0"],
        cwd=project, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.communicate())
        try:
            if _get(port, "/ready")[0] == 200:
                return process, port
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server not ready")


@pytest.fixture(scope="module")
def reordered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """diabetes trained as v1; then the CSV's feature columns reversed and the pipeline
    re-run (v2 reads the new order)."""
    params = {"data": {"task": "regression"}, "train": {"epochs": 60}}
    project = copy_repo(tmp_path_factory.mktemp("truth"), params)
    frame = load_diabetes(as_frame=True).frame
    features = [c for c in frame.columns if c != "target"]
    _write(project, frame)
    point_at_file(project, "diabetes.csv", "target", name="diabetes")
    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    logged = json.loads((project / "reports" / "metrics.json").read_text())["test"]
    test = pd.read_parquet(project / "data" / "split" / "test.parquet")

    _write(project, frame[[*reversed(features), "target"]])
    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    schema = json.loads((project / "data" / "raw" / "schema.json").read_text())
    assert schema["features"] == list(reversed(features))  # the workspace moved on
    return {"project": project, "features": features, "logged": logged, "test": test}


def test_serving_reads_requests_through_the_versions_own_features(
    reordered: dict[str, Any],
) -> None:
    project, features, test = reordered["project"], reordered["features"], reordered["test"]
    rows = test[features].head(20)
    truth = np.asarray(test["target"].head(20), dtype=np.float64)
    process, port = _serve(project, "diabetes@1")
    try:
        status, meta = _get(port, "/metadata")
        assert status == 200 and meta["features"] == features  # v1's order, not the new one
        by_name = _post(port, {"records": rows.to_dict(orient="records")})["predictions"]
        in_order = _post(port, {"inputs": rows.to_numpy().tolist()})["predictions"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    np.testing.assert_allclose(by_name, in_order, rtol=1e-5)
    # the answers are v1's: as good as it scored on its test split when it was trained
    rmse = float(np.sqrt(np.mean((np.asarray(by_name) - truth) ** 2)))
    assert rmse < 1.5 * reordered["logged"]["rmse"], (rmse, reordered["logged"])

    uri = f"sqlite:///{project / '.mlops' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/diabetes/1")
    shuffled = rows[list(reversed(features))].astype(np.float64)  # named: any order
    np.testing.assert_allclose(model.predict(shuffled), by_name, rtol=1e-5)


def test_compare_re_evaluates_each_version_as_it_reads(reordered: dict[str, Any]) -> None:
    done = _mlops(reordered["project"], "registry", "compare", "diabetes", "1", "2", "--json")
    assert done.returncode == 0, done.stderr
    v1 = json.loads(done.stdout)["versions"][0]
    assert v1["version"] == 1
    assert v1["now"]["rmse"] == pytest.approx(reordered["logged"]["rmse"], rel=1e-4)


def test_export_holds_parity_on_the_rows_the_version_reads(reordered: dict[str, Any]) -> None:
    done = _mlops(reordered["project"], "export", "diabetes@1", "--format", "onnx", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["baseline"]["metric"] == pytest.approx(reordered["logged"]["rmse"], rel=1e-4)


def test_drift_reads_the_current_rows_by_the_versions_features(
    reordered: dict[str, Any], tmp_path: Path
) -> None:
    current = tmp_path / "current.csv"
    test = reordered["test"]
    test[[*reversed(reordered["features"]), "target"]].to_csv(current, index=False)
    done = _mlops(reordered["project"], "monitor", "drift", "diabetes@1", "--input", str(current),
                  "--json")  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    found = json.loads(done.stdout)
    assert sorted(f["name"] for f in found["features"]) == sorted(reordered["features"])
    # v1 on its own test rows does as well as when it was trained
    assert found["performance"]["rmse"] == pytest.approx(reordered["logged"]["rmse"], rel=1e-4)


def test_the_version_page_shows_its_model_card(
    mlflow_client: Callable[[Path], Any], reordered: dict[str, Any]
) -> None:
    version = mlflow_client(reordered["project"]).get_model_version("diabetes", "1")
    assert "**diabetes version 1**" in version.description  # the model card

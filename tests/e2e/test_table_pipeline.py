"""A mixed customer table (countries, plans, 40 sales channels, ages and tenures with gaps,
an id column; made in tests/tables.py) goes through `dvc repro` by params.yaml alone, to
a registered classifier that `mlops serve` (torch and ONNX) and `mlflow.pyfunc` answer
from raw records alike, unseen categories, missing values and free-text support tickets
included; a regression on the same table trains a transformer; `mlops monitor drift`
compares categories by category."""

from __future__ import annotations

import http.client
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops.serving.sink import read_sink
from tests.e2e.project import copy_repo, run
from tests.servers import serving
from tests.tables import CHANNELS, customers

pytestmark = pytest.mark.e2e

ROWS = 2000
PARAMS = {
    "pipeline": {"name": "churn"},
    "data": {
        "source": "data/external/customers.csv",
        "target": "churn",
        "columns": {"customer_id": "drop", "spend": "drop"},
    },
    "train": {"epochs": 20, "early_stopping": {"patience": 0}, "model": {"family": "mlp"}},
    "registry": {"gates": {"production": {"thresholds": {"accuracy": 0.5}}}},
}
RECORDS = [
    {"country": "NO", "plan": "basic", "channel": CHANNELS[3], "age": 30, "tenure_months": 2,
     "ticket": "cannot log in since the update. please cancel my subscription"},
    {"country": "US", "plan": "enterprise", "channel": "partner-99", "age": None,
     "tenure_months": 100, "ticket": None},  # an unseen country and channel, gaps
    {"country": None, "plan": "pro", "channel": CHANNELS[4], "age": 50.5,
     "tenure_months": None, "ticket": "Zürich office asks: is there an API for bulk uploads?"},
]  # fmt: skip


def _project(base: Path, params: dict[str, Any]) -> Path:
    root = copy_repo(base, params)
    customers(ROWS, seed=0).to_csv(root / "data" / "external" / "customers.csv", index=False)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repo on the churn table after one complete `dvc repro`."""
    root = _project(tmp_path_factory.mktemp("table"), PARAMS)
    done = run(["dvc", "repro"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


def test_the_table_trains_a_registered_classifier(project: Path) -> None:
    schema = json.loads((project / "data" / "split" / "schema.json").read_text())
    assert schema["columns"] == {
        "country": "categorical", "plan": "categorical", "channel": "categorical",
        "age": "numeric", "tenure_months": "numeric", "ticket": "text",  # inferred
    }  # fmt: skip
    encoding = schema["encoding"]
    assert encoding["indicators"] == ["age", "tenure_months"]
    assert encoding["categorical"] == ["channel", "country", "plan"]
    assert encoding["one_hot"] == [False, True, True]  # 40 channels: an embedding
    train = pd.read_parquet(project / "data" / "split" / "train.parquet")
    assert train["age"].isna().any() and len(train) == round(ROWS * 0.7)  # gaps kept
    assert encoding["medians"][0] == train["age"].median()  # fitted on train only
    spec = json.loads((project / "models" / "model.json").read_text())
    assert spec["encoding"] == encoding and set(spec["features"]) == set(schema["columns"])
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    majority = customers(ROWS, seed=0)["churn"].value_counts(normalize=True).max()
    assert metrics["test"]["accuracy"] >= majority + 0.15, (metrics["test"], majority)
    registered = json.loads((project / "reports" / "registered.json").read_text())
    assert registered["name"] == "churn" and registered["version"] == "1"


def _post(port: int, doc: Any) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/predict", json.dumps(doc), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def _metrics(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    return conn.getresponse().read().decode()


@pytest.fixture(scope="module", params=["torch", "onnx"])
def server(request: pytest.FixtureRequest, project: Path) -> Iterator[int]:
    """`mlops serve churn@1` on each backend, ready."""
    with serving(project, "churn@1", "--backend", request.param) as port:
        yield port


def _pyfunc(project: Path, frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    uri = f"sqlite:///{project / '.mlops' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/churn/1")
    labels = [str(v) for v in model.predict(frame)]
    proba = model.predict(frame, params={"output": "probabilities"}).to_numpy()
    return labels, proba


def test_serve_answers_raw_records_as_pyfunc_does(server: int, project: Path) -> None:
    status, answered = _post(server, {"records": RECORDS})
    assert status == 200, answered
    assert len(answered["predictions"]) == 3 and set(answered["predictions"]) <= {"yes", "no"}
    frame = pd.DataFrame(RECORDS).astype({"age": "float64", "tenure_months": "float64"})
    assert frame["ticket"].isna().sum() == 1
    labels, proba = _pyfunc(project, frame)
    assert labels == answered["predictions"]
    assert proba == pytest.approx(np.array(answered["probabilities"]), abs=1e-4)
    exposed = _metrics(server)
    for column in ("country", "channel"):
        line = f'mlops_unseen_categories_total{{column="{column}",model="churn",version="1"}}'
        assert f"{line} 1.0" in exposed, exposed[-1500:]
    # The test split, as serving reads it, scores what evaluate measured.
    test = pd.read_parquet(project / "data" / "split" / "test.parquet")
    records = json.loads(test.drop(columns=["target"]).to_json(orient="records"))
    status, answered = _post(server, {"records": records})
    assert status == 200, answered
    accuracy = float(np.mean(np.array(answered["predictions"]) == test["target"].to_numpy()))
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)


def test_metadata_names_each_column_with_its_kind(server: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    conn.request("GET", "/metadata")
    found = json.loads(conn.getresponse().read())
    assert found["columns"] == {
        "age": "numeric", "tenure_months": "numeric", "channel": "categorical",
        "country": "categorical", "plan": "categorical", "ticket": "text",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"records": [{**RECORDS[0], "age": "old"}]},
         "records[0].age: expected a number or null, not a string"),
        ({"records": [{k: v for k, v in RECORDS[0].items() if k != "plan"}]},
         "records[0]: missing column 'plan'"),
        ({"records": [{**RECORDS[0], "customer_id": "c1"}]},
         "records[0]: unknown column 'customer_id'"),
        ({"records": [{**RECORDS[0], "plan": {"a": 1}}]},
         "records[0].plan: expected a category (a string), not an object"),
        ({"records": [{**RECORDS[0], "ticket": 42}]},
         "records[0].ticket: expected text (a string) or null, not a number"),
        ({"inputs": [[0.0] * 18]}, "this model reads raw columns by name"),
    ],
)  # fmt: skip
def test_a_bad_record_is_a_422_naming_the_column(server: int, doc: Any, message: str) -> None:
    status, answered = _post(server, doc)
    assert status == 422 and answered["error"].startswith(message), answered


def test_export_is_parity_checked_on_the_encoded_test_split(project: Path) -> None:
    exported = run([sys.executable, "-m", "mlops", "export", "churn@1", "--format", "onnx",
                    "--json"], project)  # fmt: skip
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-2000:]
    report = json.loads(exported.stdout)
    assert report["passed"] is True and report["rows"] == round(ROWS * 0.15), report


def test_a_regression_on_the_table_trains_a_transformer(tmp_path: Path) -> None:
    params = {
        "pipeline": {"name": "spend"},
        "data": {"source": "data/external/customers.csv", "target": "spend",
                 "columns": {"customer_id": "drop", "churn": "drop"}, "one_hot_max": 4},
        "train": {"epochs": 30, "early_stopping": {"patience": 0},
                  "model": {"family": "transformer"}},
        "registry": {"gates": {"production": {"thresholds": {"rmse": 1e9}}}},
    }  # fmt: skip
    root = _project(tmp_path, params)
    done = run(["dvc", "repro"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    spec = json.loads((root / "models" / "model.json").read_text())
    assert spec["task"] == "regression" and spec["encoding"]["one_hot"] == [False, False, True]
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    spread = float(customers(ROWS, seed=0)["spend"].std())
    assert metrics["test"]["rmse"] <= 0.35 * spread, (metrics["test"], spread)


def test_a_column_declared_numeric_that_holds_text_stops_ingest(tmp_path: Path) -> None:
    params = {**PARAMS, "data": {**PARAMS["data"], "columns": {"country": "numeric"}}}
    root = _project(tmp_path, params)
    done = run(["dvc", "repro", "ingest"], root)
    assert done.returncode != 0
    assert "data.columns.country = numeric: the column holds text" in done.stderr
    assert "Traceback" not in done.stderr


def _shifted(rows: int, seed: int) -> pd.DataFrame:
    """Customers whose first 40% come from a country training never saw."""
    frame = customers(rows, seed=seed).drop(columns=["customer_id", "spend", "churn"])
    frame.loc[: int(rows * 0.4) - 1, "country"] = "US"
    return frame


def _drift(project: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = run([sys.executable, "-m", "mlops", "monitor", "drift", "churn@1", *args, "--json"],
               project)  # fmt: skip
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    return done.returncode, json.loads(done.stdout)


def test_drift_compares_categories_with_their_unseen_share(project: Path, tmp_path: Path) -> None:
    same = tmp_path / "same.csv"
    customers(500, seed=8).drop(columns=["customer_id", "spend"]).to_csv(same, index=False)
    code, report = _drift(project, "--input", str(same))
    assert code == 0 and not report["drift"], report["reasons"]
    shifted = tmp_path / "shifted.csv"
    _shifted(500, seed=7).to_csv(shifted, index=False)
    code, report = _drift(project, "--input", str(shifted))
    assert code == 1 and report["drifted_features"] == ["country"], report["reasons"]
    found = {f["name"]: f for f in report["features"]}
    assert found["country"]["unseen_share"] == pytest.approx(0.4)
    assert found["age"]["unseen_share"] is None and found["age"]["ks_pvalue"] > 0.01


def test_drift_reads_the_served_rows_from_the_sink(project: Path, tmp_path: Path) -> None:
    sink = tmp_path / "sink.db"
    with serving(project, "churn@1", "--log-inputs", "1", "--sink", str(sink)) as port:
        frame = _shifted(400, seed=9)
        records = json.loads(frame.to_json(orient="records"))
        for start in range(0, len(records), 50):
            status, answered = _post(port, {"records": records[start : start + 50]})
            assert status == 200, answered
        deadline = time.monotonic() + 60
        while _sunk(sink) < len(records):  # the sink writes off the response path
            assert time.monotonic() < deadline, f"{_sunk(sink)} rows in the sink"
            time.sleep(0.1)
    code, report = _drift(project, "--sink", str(sink))
    assert code == 1 and "country" in report["drifted_features"], report["reasons"]
    found = {f["name"]: f for f in report["features"]}
    assert found["country"]["unseen_share"] == pytest.approx(0.4)


def _sunk(path: Path) -> int:
    if not path.is_file():
        return 0
    try:
        return len(read_sink(path, "churn"))
    except (sqlite3.Error, ValueError):
        return 0

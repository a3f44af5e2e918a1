"""Free text through `dvc repro` by params.yaml alone: the installed packages' summaries and
description paragraphs (tests/corpus.py), labelled by their Trove topic, train a
transformer and an RNN that beat the majority class; the tokenizer fitted by `split` is
the one `mlops serve` (torch and ONNX) and `mlflow.pyfunc` apply to raw strings."""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.corpus import package_texts
from tests.e2e.project import copy_repo, run
from tests.servers import serving

pytestmark = pytest.mark.e2e

MARGIN = 0.05  # over the majority class's share of the test split


def _params(family: str) -> dict[str, Any]:
    return {
        "pipeline": {"name": f"topics_{family}"},
        "data": {
            "source": "data/external/packages.csv",
            "target": "topic",
            "text": "text",
            "columns": {"package": "drop"},  # the name would give the label away
            "tokenizer": {"vocab_size": 4000, "max_length": 64},
        },
        "train": {"epochs": 15, "early_stopping": {"patience": 0},
                  "model": {"family": family}},
        "registry": {"gates": {"production": {"thresholds": {"accuracy": 0.5}}}},
    }  # fmt: skip


def _repro(base: Path, family: str) -> tuple[Path, str]:
    root = copy_repo(base, _params(family))
    package_texts().to_csv(root / "data" / "external" / "packages.csv", index=False)
    done = run(["dvc", "repro"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, done.stdout


def _majority(root: Path) -> float:
    test = pd.read_parquet(root / "data" / "split" / "test.parquet")
    return float(test["target"].value_counts(normalize=True).max())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The transformer's project after one complete `dvc repro`, and what it printed."""
    return _repro(tmp_path_factory.mktemp("text"), "transformer")


def test_a_transformer_reads_the_text_and_beats_the_majority(
    project: tuple[Path, str],
) -> None:
    root, printed = project
    schema = json.loads((root / "data" / "split" / "schema.json").read_text())
    assert schema["columns"] == {"text": "text"}
    encoding = schema["encoding"]
    assert encoding["text"] == ["text"] and encoding["max_length"] == 64
    assert json.loads(encoding["tokenizer"])["model"]["type"] == "BPE"
    spec = json.loads((root / "models" / "model.json").read_text())
    assert spec["encoding"] == encoding  # the tokenizer travels with the model
    report = json.loads((root / "reports" / "validation.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["text.empty"]["passed"] and checks["text.length"]["value"] > 0
    assert "longer than 64 words and will be cut" in checks["text.length"]["detail"]
    assert "split: tokenizer of" in printed and "cut at 64 tokens" in printed
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= _majority(root) + MARGIN, metrics["test"]


def test_an_rnn_reads_the_text_and_beats_the_majority(tmp_path: Path) -> None:
    root, _ = _repro(tmp_path, "rnn")
    spec = json.loads((root / "models" / "model.json").read_text())
    assert spec["family"] == "rnn" and spec["encoding"]["text"] == ["text"]
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= _majority(root) + MARGIN, metrics["test"]


def _post(port: int, doc: Any) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/predict", json.dumps(doc), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


@pytest.fixture(scope="module", params=["torch", "onnx"])
def server(request: pytest.FixtureRequest, project: tuple[Path, str]) -> Iterator[int]:
    """`mlops serve topics_transformer@1` on each backend, ready."""
    with serving(project[0], "topics_transformer@1", "--backend", request.param) as port:
        yield port


def test_serve_and_pyfunc_tokenize_raw_strings_as_training_did(
    server: int, project: tuple[Path, str]
) -> None:
    root = project[0]
    test = pd.read_parquet(root / "data" / "split" / "test.parquet")
    records = [{"text": t} for t in test["text"]]
    status, answered = _post(server, {"records": records})
    assert status == 200, answered
    accuracy = float(np.mean(np.array(answered["predictions"]) == test["target"].to_numpy()))
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
    uri = f"sqlite:///{root / '.mlops' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/topics_transformer/1")
    frame = pd.DataFrame({"text": test["text"].tolist()})
    assert [str(v) for v in model.predict(frame)] == answered["predictions"]
    proba = model.predict(frame, params={"output": "probabilities"}).to_numpy()
    assert proba == pytest.approx(np.array(answered["probabilities"]), abs=1e-4)
    odd = [{"text": None}, {"text": ""}, {"text": "Ωμέγα ✓ " * 500}]  # empty, unknown, long
    status, answered = _post(server, {"records": odd})
    assert status == 200 and len(answered["predictions"]) == 3, answered
    status, answered = _post(server, {"records": [{"text": ["a"]}]})
    assert status == 422
    assert answered["error"] == "records[0].text: expected text (a string) or null, not a list"


def test_export_checks_parity_on_the_tokenized_test_split(project: tuple[Path, str]) -> None:
    root = project[0]
    done = run([sys.executable, "-m", "mlops", "export", "topics_transformer@1",
                "--format", "onnx", "--json"], root)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["passed"] is True and report["parity"]["agreement"] == 1.0, report

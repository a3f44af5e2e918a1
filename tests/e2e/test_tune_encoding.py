"""`tune.space` over how a mixed table is encoded (the tokenizer's vocabulary and length,
one-hot versus embedding) through `dvc repro`: each trial refits the encoding on the
train split; `train` refits it with the best trial's values and the model carries it, so
evaluate, the registered version and `mlflow.pyfunc` read raw columns the tuned way;
`mlops sweep apply` writes those values into params.yaml's data section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.e2e.project import copy_repo, run
from tests.tables import customers

pytestmark = pytest.mark.e2e

SPACE = {
    "data.tokenizer.vocab_size": {"type": "categorical", "choices": [60, 300]},
    "data.tokenizer.max_length": {"type": "categorical", "choices": [6, 24]},
    "data.one_hot_max": {"type": "categorical", "choices": [4, 64]},
    "data.category_embedding_max": {"type": "categorical", "choices": [2, 8]},
    "learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
}
PARAMS = {
    "pipeline": {"name": "churn_tuned"},
    "data": {
        "source": "data/external/customers.csv",
        "target": "churn",
        "columns": {"customer_id": "drop", "spend": "drop"},
    },
    "tune": {"n_trials": 4, "epochs": 2, "sampler": "random", "pruner": "none", "space": SPACE},
    "train": {"epochs": 3, "model": {"family": "mlp"}},
    "registry": {"gates": {"production": {"thresholds": {"accuracy": 0.0}}}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tuned churn project after one `dvc repro`, and what it printed."""
    root = copy_repo(tmp_path_factory.mktemp("tune_encoding"), PARAMS)
    customers(600, seed=1).to_csv(root / "data" / "external" / "customers.csv", index=False)
    done = run(["dvc", "repro"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, done.stdout


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_the_model_carries_the_encoding_of_the_best_trial(project: tuple[Path, str]) -> None:
    root, printed = project
    best = _json(root / "reports" / "best_params.json")
    assert best["tuned"] is True
    values = best["values"]
    assert set(SPACE) <= set(values)  # and the default space of params.yaml
    split = _json(root / "data" / "split" / "schema.json")["encoding"]
    assert split["max_length"] == 128  # split's own, from params.yaml: left as it is
    spec = _json(root / "models" / "model.json")
    encoding = spec["encoding"]
    assert encoding["max_length"] == values["data.tokenizer.max_length"]
    vocab = json.loads(encoding["tokenizer"])["model"]["vocab"]
    assert len(vocab) <= values["data.tokenizer.vocab_size"]
    # country has 8 categories: one-hot at one_hot_max 64, embedded at 4
    country = encoding["categorical"].index("country")
    assert encoding["one_hot"][country] is (values["data.one_hot_max"] >= 8)
    assert encoding["embedding_max"] == values["data.category_embedding_max"]
    assert "train: column encoding refitted on the train split with the tuned" in printed


def test_evaluate_and_the_registered_version_read_raw_columns_the_tuned_way(
    project: tuple[Path, str],
) -> None:
    root, _ = project
    metrics = _json(root / "reports" / "metrics.json")
    registered = _json(root / "reports" / "registered.json")
    uri = f"sqlite:///{root / '.mlops' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/churn_tuned/{registered['version']}")
    test = pd.read_parquet(root / "data" / "split" / "test.parquet")
    predicted = model.predict(test.drop(columns=["target"]))
    accuracy = float(np.mean([str(p) for p in predicted] == test["target"].astype(str)))
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)


def test_sweep_apply_writes_the_data_values_and_split_is_stale(project: tuple[Path, str]) -> None:
    root, _ = project
    values = _json(root / "reports" / "best_params.json")["values"]
    done = run(["mlops", "sweep", "apply", "--json"], root)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = yaml.safe_load((root / "params.yaml").read_text())["data"]
    assert data["tokenizer"]["vocab_size"] == values["data.tokenizer.vocab_size"]
    assert data["tokenizer"]["max_length"] == values["data.tokenizer.max_length"]
    assert data["one_hot_max"] == values["data.one_hot_max"]
    assert data["source"] == PARAMS["data"]["source"]
    status = run(["dvc", "status", "split"], root)
    assert "modified:           data.tokenizer" in status.stdout, status.stdout

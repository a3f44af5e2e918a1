"""Every model family reaches the promised accuracy on the full digits set with its
default preset from the repo's params.yaml (CPU, seeded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.metrics import classification_metrics
from mlops.models import build_model
from mlops.params import Params, load_params
from mlops.training import predict_proba, train_model
from tests.integration.digits import digits_job

REPO = Path(__file__).resolve().parents[2]


def _with_family(params: Params, family: str) -> Params:
    data = params.as_dict()
    data["train"]["model"]["family"] = family
    return Params.model_validate(data)


@pytest.mark.parametrize("family", ["mlp", "cnn", "rnn", "transformer"])
def test_default_preset_reaches_095_on_digits(family: str, tmp_path: Path) -> None:
    params = _with_family(load_params(REPO / "params.yaml"), family)
    spec, (x_train, y_train), (x_val, y_val), (x_test, y_test) = digits_job(params)
    result = train_model(
        lambda: build_model(spec), params.train, (x_train, y_train), (x_val, y_val)
    )
    metrics = classification_metrics(y_test, predict_proba(result.model, x_test))
    assert metrics["accuracy"] >= 0.95, (family, metrics)

"""Every model family reaches the promised accuracy on the full digits set with its
default preset from the repo's params.yaml (CPU, seeded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.config import Params, load_params
from mlops.data import features_and_target, infer_schema, load_source
from mlops.metrics import classification_metrics
from mlops.models import build_model, make_spec
from mlops.splitting import stratified_split
from mlops.training import predict_proba, train_model

REPO = Path(__file__).resolve().parents[2]


def _with_family(params: Params, family: str) -> Params:
    data = params.as_dict()
    data["train"]["model"]["family"] = family
    return Params.model_validate(data)


@pytest.mark.parametrize("family", ["mlp", "cnn", "rnn", "transformer"])
def test_default_preset_reaches_095_on_digits(family: str, tmp_path: Path) -> None:
    params = _with_family(load_params(REPO / "params.yaml"), family)
    frame = load_source("builtin:digits", "target", tmp_path)
    schema = infer_schema(frame, "builtin:digits", "target")
    train, val, test = stratified_split(frame, params.split)
    x_train, y_train = features_and_target(train, schema)
    x_val, y_val = features_and_target(val, schema)
    x_test, y_test = features_and_target(test, schema)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std < 1e-6] = 1.0
    spec = make_spec(
        params.train.model, schema.classes, mean.tolist(), std.tolist(), schema.input_shape
    )
    result = train_model(
        lambda: build_model(spec), params.train, (x_train, y_train), (x_val, y_val)
    )
    metrics = classification_metrics(y_test, predict_proba(result.model, x_test))
    assert metrics["accuracy"] >= 0.95, (family, metrics)

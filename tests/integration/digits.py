"""The digits job shared by the accuracy and DDP tests: split arrays and a model spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops.data import features_and_target, infer_schema, load_source
from mlops.models import ModelSpec, feature_stats, make_spec
from mlops.params import Params
from mlops.splitting import stratified_split


def digits_job(
    params: Params,
) -> tuple[ModelSpec, tuple[Any, Any], tuple[Any, Any], tuple[Any, Any]]:
    """The spec of `params`' model family and the (x, y) train/val/test arrays of digits."""
    frame = load_source("builtin:digits", "target", Path.cwd())
    schema = infer_schema(frame, "builtin:digits", "target")
    train, val, test = (
        features_and_target(part, schema) for part in stratified_split(frame, params.split)
    )
    mean, std = feature_stats(train[0])
    spec = make_spec(params.train.model, schema.classes, mean, std, schema.input_shape)
    return spec, train, val, test

"""Registering models in a real MLflow registry: lineage tags, idempotence by content,
and a logged model that pyfunc can load and run on batches of any size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlops import tracking
from mlops.config import MLPParams, ModelParams, Settings
from mlops.models import build_model, make_spec
from registry.service import NO_STAGE, STAGE_TAG, list_versions, register_model


def _model(seed: int):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(seed)
    spec = make_spec(
        ModelParams(mlp=MLPParams(hidden_sizes=[8])), [0, 1, 2], [0.0] * 4, [1.0] * 4, [4]
    )
    return build_model(spec).eval()


@pytest.fixture
def example() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)


def test_register_tags_lineage_and_is_idempotent(settings: Settings, example: np.ndarray) -> None:
    model = _model(0)
    with tracking.stage_run(settings, "exp", "register"):
        first = register_model(model, "clf", "sha-a", example, {"mlops.git_commit": "abc"})
    assert (first.name, first.version, first.reused) == ("clf", "1", False)
    mv = MlflowClient().get_model_version("clf", "1")
    assert mv.tags["mlops.git_commit"] == "abc"
    assert mv.tags[tracking.TAG_MODEL_SHA] == "sha-a"
    assert mv.tags[STAGE_TAG] == NO_STAGE

    with tracking.stage_run(settings, "exp", "register"):
        again = register_model(model, "clf", "sha-a", example, {})
    assert (again.version, again.reused) == ("1", True)

    with tracking.stage_run(settings, "exp", "register"):
        other = register_model(_model(1), "clf", "sha-b", example, {})
    assert (other.version, other.reused) == ("2", False)
    rows = list_versions("clf")
    assert [r.version for r in rows] == ["2", "1"]
    assert list_versions("missing") == []


def test_pyfunc_predicts_batches_of_any_size(settings: Settings, example: np.ndarray) -> None:
    import mlflow.pyfunc
    import torch

    model = _model(0)
    with tracking.stage_run(settings, "exp", "register"):
        version = register_model(model, "clf", "sha-c", example, {})
    loaded = mlflow.pyfunc.load_model(f"models:/clf/{version.version}")
    for n in (1, 5, 37):
        batch = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
        out = np.asarray(loaded.predict(batch))
        assert out.shape == (n, 3)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    frame = pd.DataFrame(example)
    assert np.asarray(loaded.predict(frame)).shape == (6, 3)


def test_example_needs_two_rows(settings: Settings, example: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least 2"), tracking.stage_run(settings, "exp", "r"):
        register_model(_model(0), "clf", "sha-d", example[:1], {})


@pytest.mark.parametrize("family", ["cnn", "rnn", "transformer"])
def test_every_family_logs_and_predicts_through_pyfunc(settings: Settings, family: str) -> None:
    import mlflow.pyfunc
    import torch

    params = ModelParams.model_validate({"family": family})
    spec = make_spec(params, list(range(10)), [0.0] * 64, [1.0] * 64, [1, 8, 8])
    torch.manual_seed(0)
    model = build_model(spec).eval()
    example = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    with tracking.stage_run(settings, "exp", "register"):
        version = register_model(model, "zoo", f"sha-{family}", example, {})
    loaded = mlflow.pyfunc.load_model(f"models:/zoo/{version.version}")
    for n in (1, 3, 50):
        batch = np.random.default_rng(n).normal(size=(n, 64)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(np.asarray(loaded.predict(batch)), expected, atol=1e-5)

"""Registering models in a real MLflow registry: lineage tags, idempotence by content,
and a logged model that pyfunc can load and run on batches of any size."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from mlops import tracking
from mlops.models import build_model, make_spec, save_model
from mlops.params import NO_STAGE, MLPParams, ModelParams
from mlops.settings import Settings
from registry import registration
from registry.context import Context
from registry.mlflow_port import STAGE_TAG
from registry.queries import list_versions

_SPECS: dict[int, object] = {}


def _register(settings: Settings, model, name: str, sha: str, example, tags):  # type: ignore[no-untyped-def]
    """Register through the service, with the model's safetensors files beside it (the
    sha256 given stands in for the real one, to exercise idempotence by content)."""

    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, _SPECS[id(model)], tmp)  # type: ignore[arg-type]
        return registration.register_model(
            Context(settings), model, name, Path(tmp), sha, example, tags
        )


def _model(seed: int):  # type: ignore[no-untyped-def]

    torch.manual_seed(seed)
    spec = make_spec(
        ModelParams(mlp=MLPParams(hidden_sizes=[8])), [0, 1, 2], [0.0] * 4, [1.0] * 4, [4]
    )
    model = build_model(spec).eval()
    _SPECS[id(model)] = spec
    return model


@pytest.fixture
def example() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)


def test_register_tags_lineage_and_is_idempotent(settings: Settings, example: np.ndarray) -> None:
    model = _model(0)
    with tracking.stage_run(settings, "exp", "register"):
        first = _register(settings, model, "clf", "sha-a", example, {"mlops.git_commit": "abc"})
    assert (first.name, first.version, first.reused) == ("clf", "1", False)
    mv = MlflowClient().get_model_version("clf", "1")
    assert registration.version_info(mv.tags)["mlops.git_commit"] == "abc"
    assert mv.tags[tracking.TAG_MODEL_SHA] == "sha-a"
    assert mv.tags[STAGE_TAG] == NO_STAGE
    # few tags on the version: the lineage is one JSON tag, the rest is in the card
    assert sorted(mv.tags) == sorted(
        [STAGE_TAG, tracking.TAG_MODEL_SHA, registration.TAG_ARTIFACT_SHA,
         registration.TAG_LINEAGE, "mlops.manifest"]
    )  # fmt: skip
    assert "**clf version 1**" in mv.description and "`abc`" in mv.description

    with tracking.stage_run(settings, "exp", "register"):
        again = _register(settings, model, "clf", "sha-a", example, {})
    assert (again.version, again.reused) == ("1", True)

    with tracking.stage_run(settings, "exp", "register"):
        other = _register(settings, _model(1), "clf", "sha-b", example, {})
    assert (other.version, other.reused) == ("2", False)
    ctx = Context(settings)
    rows = list_versions(ctx, "clf")
    assert [(r.version, r.stage) for r in rows] == [(2, NO_STAGE), (1, NO_STAGE)]
    assert list_versions(ctx, "missing") == []
    assert [e.action for e in ctx.store.history("clf")] == ["register", "register"]


def test_pyfunc_predicts_batches_of_any_size(settings: Settings, example: np.ndarray) -> None:
    model = _model(0)
    with tracking.stage_run(settings, "exp", "register"):
        version = _register(settings, model, "clf", "sha-c", example, {})
    loaded = mlflow.pyfunc.load_model(f"models:/clf/{version.version}")
    for n in (1, 5, 37):
        rows = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
        # the signature names the columns: MLflow refuses unnamed rows, so name them
        batch = pd.DataFrame(rows, columns=["f0", "f1", "f2", "f3"])
        with torch.no_grad():
            logits = model(torch.from_numpy(rows))
        # labels out (the classes are 0, 1, 2), probabilities on request
        np.testing.assert_array_equal(loaded.predict(batch), logits.argmax(dim=1).numpy())
        proba = loaded.predict(batch, params={"output": "probabilities"})
        assert list(proba.columns) == ["0", "1", "2"]
        np.testing.assert_allclose(proba.to_numpy(), logits.softmax(dim=1).numpy(), atol=1e-6)
    frame = pd.DataFrame(example.astype(np.float64), columns=["f0", "f1", "f2", "f3"])
    assert np.asarray(loaded.predict(frame)).shape == (6,)


def test_example_needs_two_rows(settings: Settings, example: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least 2"), tracking.stage_run(settings, "exp", "r"):
        _register(settings, _model(0), "clf", "sha-d", example[:1], {})


@pytest.mark.parametrize("family", ["cnn", "rnn", "transformer"])
def test_every_family_logs_and_predicts_through_pyfunc(settings: Settings, family: str) -> None:
    params = ModelParams.model_validate({"family": family})
    spec = make_spec(params, list(range(10)), [0.0] * 64, [1.0] * 64, [1, 8, 8])
    torch.manual_seed(0)
    model = build_model(spec).eval()
    _SPECS[id(model)] = spec
    example = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    with tracking.stage_run(settings, "exp", "register"):
        version = _register(settings, model, "zoo", f"sha-{family}", example, {})
    loaded = mlflow.pyfunc.load_model(f"models:/zoo/{version.version}")
    for n in (1, 3, 50):
        rows = np.random.default_rng(n).normal(size=(n, 64)).astype(np.float32)
        batch = pd.DataFrame(rows, columns=[f"f{i}" for i in range(64)])
        with torch.no_grad():
            expected = model(torch.from_numpy(rows)).argmax(dim=1).numpy()
        np.testing.assert_array_equal(loaded.predict(batch), expected)

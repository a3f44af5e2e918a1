"""The training loop on tiny synthetic problems: learns, reports, is reproducible, stops early."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mlops.config import MLPParams, TrainParams
from mlops.models import build_model, make_spec
from mlops.training import (
    EpochCallback,
    EpochResult,
    TrainResult,
    predict_proba,
    train_model,
)

Arrays = tuple[np.ndarray, np.ndarray]


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def _problem(n: int = 200, seed: int = 0) -> tuple[Arrays, Arrays]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    cut = int(n * 0.75)
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _params(**overrides: object) -> TrainParams:
    model = MLPParams(hidden_sizes=[8], dropout=0.0)
    base: dict[str, object] = {
        "epochs": 5,
        "batch_size": 32,
        "learning_rate": 0.05,
        "patience": 0,
        "model": model,
    }
    return TrainParams(**{**base, **overrides})  # type: ignore[arg-type]


def _train(
    params: TrainParams, train: Arrays, val: Arrays, on_epoch: EpochCallback | None = None
) -> TrainResult:
    spec = make_spec(params.model, [0, 1], train[0].mean(0).tolist(), train[0].std(0).tolist(), [4])
    return train_model(lambda: build_model(spec), params, train, val, on_epoch)


def test_learns_a_separable_problem() -> None:
    train, val = _problem()
    result = _train(_params(), train, val)
    assert len(result.history) == 5
    assert result.history[-1].val_accuracy >= 0.9
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert 1 <= result.best_epoch <= 5
    assert result.stopped_early is False
    assert not result.model.training


def test_callback_once_per_epoch() -> None:
    train, val = _problem()
    seen: list[EpochResult] = []
    result = _train(_params(epochs=4), train, val, seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3, 4]
    assert seen == result.history
    for r in seen:
        assert set(r.as_dict()) == {"train_loss", "val_loss", "val_accuracy"}
        assert 0.0 <= r.val_accuracy <= 1.0
        assert r.train_loss > 0


def test_same_seed_gives_identical_history() -> None:
    train, val = _problem()
    one = _train(_params(seed=7), train, val)
    two = _train(_params(seed=7), train, val)
    assert one.history == two.history
    assert one.best_epoch == two.best_epoch
    for key, value in one.model.state_dict().items():
        assert torch.equal(two.model.state_dict()[key], value)


def test_different_seed_gives_different_history() -> None:
    train, val = _problem()
    assert (
        _train(_params(seed=1), train, val).history != _train(_params(seed=2), train, val).history
    )


def test_patience_stops_early_and_keeps_best_weights() -> None:
    train, val = _problem()
    flipped = (val[0], 1 - val[1])  # the better it learns, the worse validation gets
    result = _train(_params(epochs=30, patience=2), train, flipped)
    assert result.stopped_early is True
    assert len(result.history) == result.best_epoch + 2
    assert len(result.history) < 30
    best = result.history[result.best_epoch - 1]
    assert best.val_loss == min(r.val_loss for r in result.history)
    with torch.no_grad():
        logits = result.model(torch.from_numpy(flipped[0]))
        loss = float(F.cross_entropy(logits, torch.from_numpy(flipped[1])))
    assert loss == pytest.approx(best.val_loss, rel=1e-6)


def test_patience_zero_never_stops() -> None:
    train, val = _problem()
    flipped = (val[0], 1 - val[1])
    result = _train(_params(epochs=6, patience=0), train, flipped)
    assert result.stopped_early is False
    assert len(result.history) == 6


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_other_optimizers(optimizer: str) -> None:
    train, val = _problem()
    result = _train(_params(optimizer=optimizer, learning_rate=0.1), train, val)
    assert result.history[-1].val_accuracy >= 0.8


def test_batch_norm_skips_single_row_batch() -> None:
    train, val = _problem(n=44)  # 33 training rows: the last batch of 32 holds one row
    model = MLPParams(hidden_sizes=[8], dropout=0.0, batch_norm=True)
    result = _train(_params(epochs=2, model=model), train, val)
    assert len(result.history) == 2
    assert all(np.isfinite(r.train_loss) for r in result.history)


def test_predict_proba() -> None:
    train, val = _problem()
    result = _train(_params(epochs=2), train, val)
    proba = predict_proba(result.model, val[0])
    assert proba.shape == (len(val[0]), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    small_batches = predict_proba(result.model, val[0], batch_size=7)
    np.testing.assert_allclose(small_batches, proba, rtol=1e-6, atol=1e-7)


def test_predict_proba_empty_keeps_class_axis() -> None:
    train, val = _problem()
    result = _train(_params(epochs=1), train, val)
    assert predict_proba(result.model, val[0][:0]).shape == (0, 2)

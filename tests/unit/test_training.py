"""The training loop on tiny synthetic problems: learns, reports, is reproducible, stops early,
checkpoints and resumes bit-for-bit."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mlops.checkpoint import load_checkpoint
from mlops.errors import UserError
from mlops.models import build_model, make_spec
from mlops.params import CNNParams, ModelParams, TrainParams
from mlops.training import (
    Checkpointing,
    EpochCallback,
    EpochResult,
    TrainResult,
    predict_proba,
    train_model,
)

Arrays = tuple[np.ndarray, np.ndarray]

METRICS = {"train_loss", "lr", "val_loss", "val_accuracy", "val_f1_macro"}
TIMING = {"epoch_seconds", "samples_per_second"}


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


def _params(**overrides: Any) -> TrainParams:
    """A tiny MLP job; no schedule and no clipping unless a test asks for them."""
    base: dict[str, Any] = {
        "epochs": 5,
        "batch_size": 32,
        "learning_rate": 0.05,
        "grad_clip": 0.0,
        "schedule": {"name": "none"},
        "early_stopping": {"patience": 0},
        "device": "cpu",
        "model": {"mlp": {"hidden_sizes": [8], "dropout": 0.0}},
    }
    return TrainParams.model_validate({**base, **overrides})


def _train(
    params: TrainParams,
    train: Arrays,
    val: Arrays,
    on_epoch: EpochCallback | None = None,
    checkpointing: Checkpointing | None = None,
    shape: list[int] | None = None,
) -> TrainResult:
    classes = sorted({int(v) for v in train[1]})
    mean, std = train[0].mean(0).tolist(), train[0].std(0).tolist()
    spec = make_spec(params.model, classes, mean, std, shape or [train[0].shape[1]])
    return train_model(lambda: build_model(spec), params, train, val, on_epoch, checkpointing)


def _metrics(history: list[EpochResult]) -> list[tuple[int, dict[str, float]]]:
    return [(r.epoch, r.metrics) for r in history]


def _assert_same_weights(one: torch.nn.Module, two: torch.nn.Module) -> None:
    state = two.state_dict()
    for key, value in one.state_dict().items():
        assert torch.equal(state[key], value), key


def test_learns_a_separable_problem() -> None:
    train, val = _problem()
    result = _train(_params(), train, val)
    assert len(result.history) == 5
    assert result.history[-1].metrics["val_accuracy"] >= 0.9
    assert result.history[-1].metrics["train_loss"] < result.history[0].metrics["train_loss"]
    assert 1 <= result.best_epoch <= 5
    assert result.stopped_early is False
    assert result.resumed_from == 0
    assert result.device == "cpu"
    assert not result.model.training


def test_callback_once_per_epoch() -> None:
    train, val = _problem()
    seen: list[EpochResult] = []
    result = _train(_params(epochs=4), train, val, seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3, 4]
    assert seen == result.history
    for r in seen:
        assert set(r.metrics) == METRICS
        assert set(r.timing) == TIMING
        assert set(r.as_dict()) == METRICS | TIMING
        assert 0.0 <= r.metrics["val_accuracy"] <= 1.0
        assert 0.0 <= r.metrics["val_f1_macro"] <= 1.0
        assert r.metrics["train_loss"] > 0
        assert r.timing["epoch_seconds"] > 0
        assert r.timing["samples_per_second"] > 0


def test_same_seed_gives_identical_history() -> None:
    train, val = _problem()
    one = _train(_params(seed=7), train, val)
    two = _train(_params(seed=7), train, val)
    assert _metrics(one.history) == _metrics(two.history)
    assert one.best_epoch == two.best_epoch
    _assert_same_weights(one.model, two.model)


def test_different_seed_gives_different_history() -> None:
    train, val = _problem()
    one = _train(_params(seed=1), train, val)
    two = _train(_params(seed=2), train, val)
    assert _metrics(one.history) != _metrics(two.history)


def test_patience_stops_early_and_keeps_best_weights() -> None:
    train, val = _problem()
    flipped = (val[0], 1 - val[1])  # the better it learns, the worse validation gets
    result = _train(_params(epochs=30, early_stopping={"patience": 2}), train, flipped)
    assert result.stopped_early is True
    assert len(result.history) == result.best_epoch + 2
    assert len(result.history) < 30
    best = result.history[result.best_epoch - 1].metrics
    assert best["val_loss"] == min(r.metrics["val_loss"] for r in result.history)
    with torch.no_grad():
        logits = result.model(torch.from_numpy(flipped[0]))
        loss = float(F.cross_entropy(logits, torch.from_numpy(flipped[1])))
    assert loss == pytest.approx(best["val_loss"], rel=1e-6)


def test_early_stopping_on_accuracy_keeps_the_most_accurate_epoch() -> None:
    train, val = _problem()
    flipped = (val[0], 1 - val[1])
    stopping = {"metric": "val_accuracy", "patience": 2}
    result = _train(_params(epochs=30, early_stopping=stopping), train, flipped)
    accuracies = [r.metrics["val_accuracy"] for r in result.history]
    assert result.stopped_early is True
    assert len(result.history) == result.best_epoch + 2
    assert accuracies[result.best_epoch - 1] == max(accuracies)
    assert accuracies.index(max(accuracies)) == result.best_epoch - 1  # the first of equals


def test_patience_zero_never_stops() -> None:
    train, val = _problem()
    flipped = (val[0], 1 - val[1])
    result = _train(_params(epochs=6, early_stopping={"patience": 0}), train, flipped)
    assert result.stopped_early is False
    assert len(result.history) == 6


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_other_optimizers(optimizer: str) -> None:
    train, val = _problem()
    result = _train(_params(optimizer=optimizer, learning_rate=0.1), train, val)
    assert result.history[-1].metrics["val_accuracy"] >= 0.8


def test_batch_norm_skips_single_row_batch() -> None:
    train, val = _problem(n=44)  # 33 training rows: the last batch of 32 holds one row
    model = {"mlp": {"hidden_sizes": [8], "dropout": 0.0, "batch_norm": True}}
    result = _train(_params(epochs=2, model=model), train, val)
    assert len(result.history) == 2
    assert all(np.isfinite(r.metrics["train_loss"]) for r in result.history)


def test_label_smoothing_and_grad_clip_run() -> None:
    train, val = _problem()
    plain = _train(_params(epochs=3), train, val)
    tuned = _train(_params(epochs=3, label_smoothing=0.2, grad_clip=0.1), train, val)
    assert all(np.isfinite(r.metrics["train_loss"]) for r in tuned.history)
    assert tuned.history[-1].metrics["val_accuracy"] >= 0.8
    # both change the updates (and smoothing the reported training loss)
    assert _metrics(tuned.history) != _metrics(plain.history)
    assert tuned.history[0].metrics["train_loss"] > plain.history[0].metrics["train_loss"]


def test_tiny_grad_clip_slows_learning() -> None:
    train, val = _problem()
    free = _train(_params(epochs=2, optimizer="sgd", momentum=0.0), train, val)
    clipped = _train(_params(epochs=2, optimizer="sgd", momentum=0.0, grad_clip=1e-4), train, val)
    drop_free = free.history[0].metrics["train_loss"] - free.history[-1].metrics["train_loss"]
    drop_clipped = (
        clipped.history[0].metrics["train_loss"] - clipped.history[-1].metrics["train_loss"]
    )
    assert abs(drop_clipped) < abs(drop_free) / 10


@pytest.mark.parametrize("schedule", ["none", "cosine", "step", "onecycle", "plateau"])
def test_every_schedule_runs_and_reports_lr_each_epoch(schedule: str) -> None:
    train, val = _problem()
    params = _params(epochs=4, schedule={"name": schedule, "step_size": 2})
    result = _train(params, train, val)
    lrs = [r.metrics["lr"] for r in result.history]
    assert len(lrs) == 4
    assert all(np.isfinite(lr) and lr > 0 for lr in lrs)
    if schedule == "none":
        assert lrs == [0.05] * 4
    if schedule == "cosine":
        assert lrs[0] == pytest.approx(0.05)
        assert lrs == sorted(lrs, reverse=True)
        assert lrs[-1] < lrs[0]
    if schedule == "step":
        assert lrs == pytest.approx([0.05, 0.05, 0.025, 0.025])
    if schedule == "onecycle":
        assert max(lrs) <= 0.05 + 1e-12
        assert len(set(lrs)) == 4  # stepped every batch, so it moves every epoch
    assert result.history[-1].metrics["val_accuracy"] >= 0.7


def test_cnn_training_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 64)).astype(np.float32)
    y = rng.integers(0, 3, size=60).astype(np.int64)
    train, val = (x[:45], y[:45]), (x[45:], y[45:])
    cnn = CNNParams(channels=[4], head_size=8)
    params = _params(epochs=3, batch_size=16, model=ModelParams(family="cnn", cnn=cnn))
    one = _train(params, train, val, shape=[1, 8, 8])
    two = _train(params, train, val, shape=[1, 8, 8])
    assert len(one.history) == 3
    assert _metrics(one.history) == _metrics(two.history)
    _assert_same_weights(one.model, two.model)


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


# --------------------------------------------------------------------- checkpoints


class _Killed(Exception):
    """Stands in for a kill between epochs."""


def _resume_params() -> TrainParams:
    # dropout (global RNG), shuffling (generator), adamw moments, cosine schedule, clipping
    return _params(
        epochs=8,
        optimizer="adamw",
        learning_rate=0.02,
        grad_clip=1.0,
        schedule={"name": "cosine", "min_lr": 0.001},
        model={"mlp": {"hidden_sizes": [8], "dropout": 0.2}},
    )


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    train, val = _problem()
    params = _resume_params()
    whole = _train(params, train, val)
    assert len(whole.history) == 8

    checkpointing = Checkpointing(tmp_path / "train.ckpt", "job-1", every_seconds=0)
    seen_b: list[EpochResult] = []

    def kill_after_epoch_4(result: EpochResult) -> None:
        # on_epoch runs before an epoch's checkpoint: epoch 5's call comes after epoch 4's
        if result.epoch == 5:
            raise _Killed
        seen_b.append(result)

    with pytest.raises(_Killed):
        _train(params, train, val, kill_after_epoch_4, checkpointing)
    assert _metrics(seen_b) == _metrics(whole.history[:4])
    assert checkpointing.path.is_file()
    state = load_checkpoint(checkpointing.path, "job-1", required=True)
    assert state is not None
    assert state["epoch"] == 4

    seen_c: list[EpochResult] = []
    resumed = _train(params, train, val, seen_c.append, checkpointing)
    assert resumed.resumed_from == 4
    assert [r.epoch for r in seen_c] == list(range(1, 9))  # restored epochs are replayed
    assert _metrics(resumed.history) == _metrics(whole.history)
    assert _metrics(seen_c) == _metrics(whole.history)
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        assert [r.metrics[key] for r in resumed.history] == [r.metrics[key] for r in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.stopped_early is whole.stopped_early
    _assert_same_weights(resumed.model, whole.model)
    assert not checkpointing.path.exists()
    assert list(tmp_path.iterdir()) == []


def test_finished_run_leaves_no_checkpoint(tmp_path: Path) -> None:
    train, val = _problem()
    checkpointing = Checkpointing(tmp_path / "train.ckpt", "job-1", every_seconds=0)
    saw_file: list[bool] = []
    result = _train(
        _params(epochs=3), train, val,
        lambda r: saw_file.append(checkpointing.path.is_file()), checkpointing,
    )  # fmt: skip
    assert saw_file == [False, True, True]  # written after epochs 1 and 2, not the last
    assert result.resumed_from == 0
    assert list(tmp_path.iterdir()) == []


def test_require_resume_without_checkpoint_is_user_error(tmp_path: Path) -> None:
    train, val = _problem()
    checkpointing = Checkpointing(tmp_path / "train.ckpt", "job-1", 0, require_resume=True)
    seen: list[EpochResult] = []
    with pytest.raises(UserError) as info:
        _train(_params(epochs=2), train, val, seen.append, checkpointing)
    assert info.value.exit_code == 2
    assert "train.ckpt" in str(info.value)
    assert seen == []


def test_foreign_checkpoint_is_ignored_unless_resume_is_required(tmp_path: Path) -> None:
    train, val = _problem()
    params = _params(epochs=4)
    whole = _train(params, train, val)
    path = tmp_path / "train.ckpt"

    def kill_at_3(result: EpochResult) -> None:
        if result.epoch == 3:
            raise _Killed

    with pytest.raises(_Killed):
        _train(params, train, val, kill_at_3, Checkpointing(path, "job-1", 0))
    assert path.is_file()
    with pytest.raises(UserError, match="another model, params or data"):
        _train(params, train, val, None, Checkpointing(path, "job-2", 0, require_resume=True))
    assert path.is_file()
    fresh = _train(params, train, val, None, Checkpointing(path, "job-2", 0))
    assert fresh.resumed_from == 0
    assert _metrics(fresh.history) == _metrics(whole.history)
    assert not path.exists()


JOB_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
import torch
from pathlib import Path
from mlops.params import TrainParams
from mlops.models import build_model, make_spec
from mlops.training import Checkpointing, train_model

rng = np.random.default_rng(0)
x = rng.normal(size=(240, 64)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int64)
for family in ("mlp", "cnn"):
    params = TrainParams.model_validate({
        "epochs": 3, "grad_clip": 1.0, "schedule": {"name": "onecycle"},
        "model": {"family": family}, "device": "cpu"})
    spec = make_spec(params.model, [0, 1], x.mean(0), x.std(0) + 1e-6, [1, 8, 8])
    ckpt = Checkpointing(Path(sys.argv[1]) / family, "job", every_seconds=0)
    train_model(lambda: build_model(spec), params, (x[:200], y[:200]), (x[200:], y[200:]),
                None, ckpt)
print(torch.are_deterministic_algorithms_enabled(), "torch._dynamo" in sys.modules)
"""


def test_a_training_job_never_imports_torchs_compiler(tmp_path: Path) -> None:
    """Deterministic mode, the optimizer, schedules, clipping and checkpoints, without the
    0.9 s and 68 MB import of torch._dynamo (a fresh process: this one has it loaded)."""

    done = subprocess.run(
        [sys.executable, "-c", JOB_IN_A_FRESH_PROCESS, str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    assert done.stdout.split() == ["True", "False"]

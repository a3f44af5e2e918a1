"""Optimizers, learning-rate schedules (when each steps, state round-trips) and early stopping."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from mlops.checkpoint import load_checkpoint, save_checkpoint
from mlops.optim import EarlyStopping, Schedule, eager_class, make_optimizer
from mlops.params import EarlyStoppingParams, TrainParams

# these unit tests step schedules without training steps in between, on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step:UserWarning")


def _params(schedule: dict[str, Any] | None = None, **train: Any) -> TrainParams:
    base: dict[str, Any] = {"epochs": 10, "learning_rate": 0.1, "schedule": schedule or {}}
    return TrainParams.model_validate({**base, **train})


def _schedule(
    name: str, steps_per_epoch: int = 1, **options: Any
) -> tuple[torch.optim.Optimizer, Schedule, TrainParams]:
    train = {k: options.pop(k) for k in ("epochs", "learning_rate", "optimizer") if k in options}
    params = _params({"name": name, **options}, **train)
    optimizer = make_optimizer(nn.Linear(2, 2), params)
    return optimizer, Schedule(optimizer, params, steps_per_epoch), params


def _epoch_lrs(schedule: Schedule, epochs: int, loss: float = 1.0) -> list[float]:
    """The lr in use during each epoch (read before the epoch's step, as training does)."""
    out = []
    for _ in range(epochs):
        out.append(schedule.lr)
        schedule.after_epoch(loss)
    return out


# --------------------------------------------------------------------- optimizers


def test_make_optimizer_kinds_and_settings() -> None:
    model = nn.Linear(2, 2)
    adamw = make_optimizer(model, _params(optimizer="adamw", weight_decay=0.01))
    assert type(adamw) is eager_class(torch.optim.AdamW)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["weight_decay"] == 0.01
    assert adamw.param_groups[0]["lr"] == 0.1
    assert type(make_optimizer(model, _params(optimizer="adam"))) is eager_class(torch.optim.Adam)
    sgd = make_optimizer(model, _params(optimizer="sgd", momentum=0.5, weight_decay=0.0))
    assert type(sgd) is eager_class(torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.5
    assert sgd.param_groups[0]["weight_decay"] == 0.0
    assert {id(p) for p in sgd.param_groups[0]["params"]} == {id(p) for p in model.parameters()}
    assert all(o.param_groups[0]["fused"] is True for o in (adamw, sgd))  # on CPU


def test_fused_kernels_only_where_torch_has_them() -> None:
    elsewhere = make_optimizer(nn.Linear(2, 2, device="meta"), _params(optimizer="adam"))
    assert not elsewhere.param_groups[0]["fused"]


def test_a_compiled_model_gets_torchs_own_optimizer_class() -> None:
    compiled = make_optimizer(nn.Linear(2, 2), _params(optimizer="adamw", compile=True))
    assert type(compiled) is torch.optim.AdamW


def _steps(
    kind: type[torch.optim.Optimizer], options: dict[str, Any], n: int, state: Any = None
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """`n` clipped, one-cycle-scheduled steps on a small seeded model (dropout, batch norm)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
    )
    optimizer = kind(model.parameters(), **options)
    if state is not None:
        optimizer.load_state_dict(state)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=n + 1)
    data = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(32, 8, generator=data)
        y = torch.randint(0, 3, (32,), generator=data)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        scheduler.step()
    return model, optimizer


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, dict):
            same = isinstance(y, dict) and _same_state(x, y)
        elif isinstance(x, torch.Tensor):
            same = isinstance(y, torch.Tensor) and torch.equal(x, y)
        else:
            same = x == y
        if not same:
            return False
    return True


OPTIMIZERS = {
    "adam": (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.05}),
    "sgd": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.001}),
}


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_eager_optimizer_steps_and_state_equal_torchs_bit_for_bit(name: str, fused: bool) -> None:
    kind, options = OPTIMIZERS[name]
    options = {**options, "fused": fused}  # the platform's jobs use the fused kernels
    stock_model, stock = _steps(kind, options, 25)
    eager_model, eager = _steps(eager_class(kind), options, 25)
    for a, b in zip(
        stock_model.state_dict().values(), eager_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert _same_state(stock.state_dict(), eager.state_dict())
    assert not _same_state(stock.state_dict(), _steps(kind, options, 24)[1].state_dict())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dicts_load_across_torchs_class_and_the_eager_one(name: str) -> None:
    """A checkpoint written by either class resumes in the other (old checkpoints load)."""
    kind, options = OPTIMIZERS[name]
    _, stock = _steps(kind, options, 10)
    _, eager = _steps(eager_class(kind), options, 10)
    from_stock = _steps(eager_class(kind), options, 5, state=stock.state_dict())[1]
    from_eager = _steps(kind, options, 5, state=eager.state_dict())[1]
    assert _same_state(from_stock.state_dict(), from_eager.state_dict())
    assert (
        from_stock.state_dict()["state"][0]["step" if name != "sgd" else "momentum_buffer"]
        is not None
    )


def test_eager_optimizer_keeps_gradients_on_outside_step_and_runs_hooks() -> None:
    model = nn.Linear(2, 1)
    optimizer = eager_class(torch.optim.SGD)(model.parameters(), lr=0.1)
    seen: list[bool] = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(True))
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    assert seen == [True]
    assert torch.is_grad_enabled()
    assert optimizer.param_groups[0]["params"][0].grad is not None
    optimizer.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------- schedules


def test_none_keeps_lr() -> None:
    _, schedule, _ = _schedule("none")
    for _ in range(5):
        schedule.after_batch()
        schedule.after_epoch(1.0)
    assert schedule.lr == 0.1
    assert schedule.state_dict() == {}


def test_cosine_decreases_to_min_over_the_epochs() -> None:
    _, schedule, _ = _schedule("cosine", epochs=10, min_lr=0.01)
    lrs = _epoch_lrs(schedule, 10)
    assert lrs[0] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(lrs))
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(10)]
    assert lrs == pytest.approx(expected)
    assert schedule.lr == pytest.approx(0.01)  # after the last epoch


def test_cosine_ignores_batches() -> None:
    _, schedule, _ = _schedule("cosine", steps_per_epoch=5)
    for _ in range(5):
        schedule.after_batch()
    assert schedule.lr == 0.1


def test_step_halves_every_step_size_epochs() -> None:
    _, schedule, _ = _schedule("step", step_size=3, gamma=0.5)
    lrs = _epoch_lrs(schedule, 8)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])


def test_onecycle_steps_per_batch_not_per_epoch() -> None:
    _, schedule, _ = _schedule("onecycle", steps_per_epoch=5, epochs=4, pct_start=0.25)
    start = schedule.lr
    assert start == pytest.approx(0.1 / 25)  # torch's default div_factor
    schedule.after_epoch(1.0)
    assert schedule.lr == start
    lrs = [start]
    for _ in range(4 * 5 - 1):
        schedule.after_batch()
        lrs.append(schedule.lr)
    assert lrs[1] != start
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(0.1)
    assert peak == 4  # pct_start * 20 steps, counting from 0
    assert all(a < b for a, b in itertools.pairwise(lrs[: peak + 1]))
    assert all(a > b for a, b in itertools.pairwise(lrs[peak:]))
    assert lrs[-1] < start / 100


def test_onecycle_survives_exactly_epochs_times_batches() -> None:
    _, schedule, _ = _schedule("onecycle", steps_per_epoch=3, epochs=2)
    for _ in range(2):
        for _ in range(3):
            schedule.after_batch()
        schedule.after_epoch(1.0)
    assert math.isfinite(schedule.lr)


def test_plateau_reduces_after_patience_epochs_without_improvement() -> None:
    # torch semantics: `patience` flat epochs are tolerated, the next one reduces
    _, schedule, _ = _schedule("plateau", plateau_patience=2, gamma=0.5)
    schedule.after_epoch(1.0)  # the first value is the best so far
    lrs = []
    for _ in range(3):
        schedule.after_epoch(1.0)
        lrs.append(schedule.lr)
    assert lrs == pytest.approx([0.1, 0.1, 0.05])
    for _ in range(3):
        schedule.after_epoch(1.0)
    assert schedule.lr == pytest.approx(0.025)


def test_plateau_keeps_lr_while_val_loss_improves_and_respects_min_lr() -> None:
    _, schedule, _ = _schedule("plateau", plateau_patience=0, gamma=0.1, min_lr=0.005)
    for loss in (1.0, 0.9, 0.8, 0.7):
        schedule.after_epoch(loss)
    assert schedule.lr == 0.1
    for _ in range(5):
        schedule.after_epoch(0.7)
    assert schedule.lr == pytest.approx(0.005)


def test_plateau_ignores_batches() -> None:
    _, schedule, _ = _schedule("plateau", plateau_patience=0, steps_per_epoch=4)
    for _ in range(10):
        schedule.after_batch()
    assert schedule.lr == 0.1


def _drive(schedule: Schedule, epoch: int, batches: int) -> float:
    for _ in range(batches):
        schedule.after_batch()
    schedule.after_epoch(1.0 if epoch % 3 else 2.0)  # a bumpy val loss for plateau
    return schedule.lr


@pytest.mark.parametrize("name", ["none", "cosine", "step", "onecycle", "plateau"])
def test_state_roundtrip_through_a_checkpoint_continues_identically(
    tmp_path: Path, name: str
) -> None:
    options = {"step_size": 2, "plateau_patience": 1, "epochs": 8}
    optimizer, schedule, _ = _schedule(name, steps_per_epoch=3, **options)
    for epoch in range(1, 4):
        _drive(schedule, epoch, 3)
    path = tmp_path / "ckpt"
    save_checkpoint(
        path, {"fingerprint": "f", "optimizer": optimizer.state_dict(),
               "schedule": schedule.state_dict()},
    )  # fmt: skip
    state = load_checkpoint(path, "f", required=True)  # weights_only=True must accept it
    assert state is not None
    lr_at_save = schedule.lr
    expected = [_drive(schedule, epoch, 3) for epoch in range(4, 9)]

    optimizer2, schedule2, _ = _schedule(name, steps_per_epoch=3, **options)
    optimizer2.load_state_dict(state["optimizer"])
    schedule2.load_state_dict(state["schedule"])
    assert schedule2.lr == lr_at_save
    assert [_drive(schedule2, epoch, 3) for epoch in range(4, 9)] == expected
    fresh = _schedule(name, steps_per_epoch=3, **options)[1]
    if name != "none":  # the restored state matters: a fresh schedule goes elsewhere
        assert [_drive(fresh, epoch, 3) for epoch in range(4, 9)] != expected


# --------------------------------------------------------------------- early stopping


def _stopper(**params: Any) -> EarlyStopping:
    return EarlyStopping(EarlyStoppingParams(**params))


def _run(stopper: EarlyStopping, values: list[float]) -> tuple[list[bool], int | None]:
    """New-best flags per epoch, and the epoch at which it said stop (None: never)."""
    news = []
    for epoch, value in enumerate(values, start=1):
        news.append(stopper.update(value, epoch))
        if stopper.should_stop(epoch):
            return news, epoch
    return news, None


def test_val_loss_is_minimised() -> None:
    stopper = _stopper(metric="val_loss", patience=2)
    assert stopper.mode == "min"
    news, stopped = _run(stopper, [1.0, 0.8, 0.9, 0.7, 0.75, 0.71, 0.5])
    assert news == [True, True, False, True, False, False]
    assert stopped == 6
    assert stopper.best == 0.7
    assert stopper.best_epoch == 4


@pytest.mark.parametrize("metric", ["val_accuracy", "val_f1_macro"])
def test_scores_are_maximised(metric: str) -> None:
    stopper = _stopper(metric=metric, patience=2)
    assert stopper.mode == "max"
    news, stopped = _run(stopper, [0.5, 0.7, 0.6, 0.8, 0.8, 0.79])
    assert news == [True, True, False, True, False, False]
    assert stopped == 6
    assert (stopper.best, stopper.best_epoch) == (0.8, 4)


def test_min_delta_is_respected() -> None:
    stopper = _stopper(metric="val_loss", patience=2, min_delta=0.1)
    news, stopped = _run(stopper, [1.0, 0.95, 0.91, 0.85])
    assert news == [True, False, False]
    assert stopped == 3
    assert (stopper.best, stopper.best_epoch) == (1.0, 1)
    stopper = _stopper(metric="val_accuracy", patience=5, min_delta=0.1)
    news, _ = _run(stopper, [0.5, 0.55, 0.61, 0.7, 0.705])
    assert news == [True, False, True, False, False]


def test_patience_zero_never_stops() -> None:
    stopper = _stopper(patience=0)
    news, stopped = _run(stopper, [1.0] + [2.0] * 50)
    assert stopped is None
    assert news[0] is True
    assert not any(news[1:])
    assert stopper.best_epoch == 1


def test_first_epoch_is_always_the_best_so_far() -> None:
    stopper = _stopper(metric="val_loss", patience=1)
    assert stopper.update(math.inf, 1) is True
    assert stopper.best_epoch == 1
    assert stopper.update(5.0, 2) is True


def test_state_roundtrip() -> None:
    one = _stopper(metric="val_accuracy", patience=3, min_delta=0.01)
    _run(one, [0.5, 0.6, 0.55])
    state = one.state_dict()
    assert state == {"best": 0.6, "best_epoch": 2}
    two = _stopper(metric="val_accuracy", patience=3, min_delta=0.01)
    two.load_state_dict(state)
    for epoch, value in enumerate([0.605, 0.61, 0.58, 0.9], start=4):
        assert two.update(value, epoch) == one.update(value, epoch)
        assert two.should_stop(epoch) == one.should_stop(epoch)
    assert two.state_dict() == one.state_dict()

"""Optimizers, learning-rate schedules and early stopping for the training engine."""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mlops.params import EarlyStoppingParams, TrainParams


# Devices whose fused optimizer kernels (one kernel per parameter for the whole update)
# torch ships for Adam, AdamW and SGD. torch's default there is still the per-tensor loop.
FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD with momentum, with the configured weight decay.

    On CPU and CUDA the update runs torch's fused kernels: the same algorithm in one
    kernel per parameter instead of a dozen, 5% (CNN) to 25% (MLP) off a digits
    training step here, deterministic from run to run (float results differ from the
    per-tensor loop in the last bits, as any change of kernel does). Unless the model is
    compiled, the optimizer is torch's own class with its methods unguarded
    (`eager_class`): no import of torch's compiler stack on the first call.
    """
    import torch

    kind: type[torch.optim.Optimizer]
    options: dict[str, Any] = {"lr": params.learning_rate, "weight_decay": params.weight_decay}
    if params.optimizer == "sgd":
        kind, options["momentum"] = torch.optim.SGD, params.momentum
    else:
        kind = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    trained = [p for p in model.parameters() if p.requires_grad]  # not the frozen layers
    devices = {p.device.type for p in trained}
    if devices and devices <= set(FUSED_DEVICES):
        options["fused"] = True
    if not params.compile:
        kind = eager_class(kind)
    return kind(trained, **options)


_EAGER: dict[type, type] = {}


def eager_class(kind: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """A subclass of the optimizer `kind` without the guards that keep torch.compile from
    tracing into it.

    `torch.optim` wraps `step`, `zero_grad`, `add_param_group`, `state_dict` and
    `load_state_dict` in guards that import `torch._dynamo` on their first call (about
    0.9 s and 68 MB per process here, before a single step). In eager mode the guards do
    nothing else but turn gradients off around `step`; this class calls the methods they
    wrap and turns gradients off itself. The parameters after each step and the state
    dicts are the same as `kind`'s (tests/unit/test_optim.py checks both, bit for bit).
    Not for a compiled model: there the guards matter, and `make_optimizer` uses `kind`.
    """

    import torch

    if kind not in _EAGER:
        base = torch.optim.Optimizer
        step = inspect.unwrap(kind.step)

        def eager_step(self: torch.optim.Optimizer, closure: Any = None) -> Any:
            with torch.no_grad():  # the guard's one eager effect (differentiable=False)
                return step(self, closure)

        methods: dict[str, Any] = {
            name: inspect.unwrap(getattr(base, name))
            for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
        }
        methods["step"] = eager_step
        methods["__doc__"] = f"torch.optim.{kind.__name__} without torch.compile's guards."
        _EAGER[kind] = type(kind.__name__, (kind,), {"__module__": __name__, **methods})
    return _EAGER[kind]


class Schedule:
    """A learning-rate schedule that knows when to step: one-cycle after every batch,
    plateau after every epoch on the validation loss, the others after every epoch."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int
    ) -> None:
        from torch.optim import lr_scheduler

        s = params.schedule
        self.name = s.name
        self.optimizer = optimizer
        self.scheduler: Any = None
        if s.name == "cosine":
            self.scheduler = lr_scheduler.CosineAnnealingLR(optimizer, params.epochs, s.min_lr)
        elif s.name == "step":
            self.scheduler = lr_scheduler.StepLR(optimizer, s.step_size, s.gamma)
        elif s.name == "onecycle":
            self.scheduler = lr_scheduler.OneCycleLR(
                optimizer, max_lr=params.learning_rate, epochs=params.epochs,
                steps_per_epoch=max(1, steps_per_epoch), pct_start=s.pct_start,
            )  # fmt: skip
        elif s.name == "plateau":
            self.scheduler = lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=s.gamma, patience=s.plateau_patience, min_lr=s.min_lr
            )

    @property
    def lr(self) -> float:
        """The current learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def after_batch(self) -> None:
        """Step a per-batch schedule."""
        if self.name == "onecycle":
            self.scheduler.step()

    def after_epoch(self, val_loss: float) -> None:
        """Step a per-epoch schedule."""
        if self.name == "plateau":
            self.scheduler.step(val_loss)
        elif self.name in {"cosine", "step"}:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state for checkpoints."""
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint."""
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


class EarlyStopping:
    """Tracks the best value of the monitored metric and when to stop."""

    def __init__(self, params: EarlyStoppingParams) -> None:
        self.metric = params.metric
        self.mode = params.mode
        self.patience = params.patience
        self.min_delta = params.min_delta
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        better = (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
        if better or self.best_epoch == 0:
            self.best, self.best_epoch = value, epoch
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        """True once `patience` epochs have passed without a new best (never if 0)."""
        return bool(self.patience) and epoch - self.best_epoch >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """State for checkpoints."""
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint."""
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])

"""The training loop. Knows nothing of MLflow or Optuna: progress goes to an epoch callback."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from mlops.config import TrainParams


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one finished epoch."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float

    def as_dict(self) -> dict[str, float]:
        """Metric name → value, without the epoch number."""
        return {
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
        }


@dataclass(frozen=True)
class TrainResult:
    """The best model (by validation loss) and the whole history."""

    model: nn.Module
    history: list[EpochResult]
    best_epoch: int
    stopped_early: bool


EpochCallback = Callable[[EpochResult], None]


def seed_everything(seed: int, threads: int) -> None:
    """Make CPU training reproducible: seeds, deterministic kernels, a fixed thread count."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    if threads > 0:
        torch.set_num_threads(threads)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    import torch
    from torch.nn import functional as F

    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(F.cross_entropy(logits, y))
        acc = float((logits.argmax(dim=1) == y).float().mean())
    return loss, acc


def _optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    import torch

    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=params.learning_rate,
            momentum=0.9,
            weight_decay=params.weight_decay,
        )
    cls = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)


def train_model(
    make_model: Callable[[], nn.Module],
    params: TrainParams,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Seed, build the model with `make_model`, train with mini-batches, keep the weights of
    the best validation loss, stop early after `patience` epochs without improvement (0
    disables early stopping)."""
    import torch
    from torch.nn import functional as F

    seed_everything(params.seed, params.threads)
    model = make_model()
    x_train, y_train = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    x_val, y_val = torch.from_numpy(val[0]), torch.from_numpy(val[1])
    generator = torch.Generator().manual_seed(params.seed)
    optimizer = _optimizer(model, params)
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    history: list[EpochResult] = []
    stopped_early = False
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), params.batch_size):
            idx = order[start : start + params.batch_size]
            if len(idx) < 2 and any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()):
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        val_loss, val_acc = _evaluate(model, x_val, y_val)
        result = EpochResult(epoch, total / len(x_train), val_loss, val_acc)
        history.append(result)
        if on_epoch is not None:
            on_epoch(result)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif params.patience and epoch - best_epoch >= params.patience:
            stopped_early = True
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, history, best_epoch, stopped_early)


def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> Any:
    """Class probabilities for a feature matrix, as a numpy array."""
    import numpy as np
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, max(len(x), 1), batch_size):
            logits = model(torch.from_numpy(x[start : start + batch_size]))
            out.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(out)

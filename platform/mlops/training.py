"""The training engine. Knows nothing of MLflow or Optuna: progress goes to an epoch callback.

Mini-batches by direct tensor indexing (no DataLoader over in-memory tensors), optional
LR schedule, gradient clipping, label smoothing, early stopping on a chosen validation
metric (the best epoch's weights are kept), checkpoints that resume bit-for-bit on CPU,
mixed precision on CUDA, `torch.compile`, and DistributedDataParallel under torchrun.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mlops.checkpoint import load_checkpoint, save_checkpoint
from mlops.distributed import DistContext
from mlops.errors import UserError
from mlops.optim import EarlyStopping, Schedule, make_optimizer

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mlops.augment import Augmenter
    from mlops.params import TrainParams


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch: deterministic metrics, and timings that vary run to run."""

    epoch: int
    metrics: dict[str, float]
    timing: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """Metric name → value (timings included), without the epoch number."""
        return {**self.metrics, **self.timing}


@dataclass(frozen=True)
class TrainResult:
    """The best model (by the monitored metric) and the whole history."""

    model: nn.Module
    history: list[EpochResult]
    best_epoch: int
    stopped_early: bool
    resumed_from: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class Checkpointing:
    """Where to checkpoint, for which job, how often, and whether resuming is required."""

    path: Path
    fingerprint: str
    every_seconds: float = 10.0
    require_resume: bool = False


EpochCallback = Callable[[EpochResult], None]
Arrays = tuple[np.ndarray, np.ndarray]
Batch = tuple["torch.Tensor", "torch.Tensor"]


class BatchSource(Protocol):
    """A split read batch by batch rather than held in memory (`mlops.streaming.Stream`)."""

    def __len__(self) -> int: ...

    def steps(self, batch: int, rank: int = 0, world: int = 1) -> int:
        """Batches per epoch on a rank."""
        ...

    def batches(
        self, epoch: int, batch: int, shuffle: bool = True, rank: int = 0, world: int = 1
    ) -> Iterable[Batch]:
        """One epoch's batches (CPU tensors)."""
        ...

    def probe(self) -> np.ndarray:
        """A first row."""
        ...


def seed_everything(seed: int, threads: int) -> None:
    """Make CPU training reproducible: seeds, deterministic kernels, a fixed thread count."""

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # The switch `torch.use_deterministic_algorithms` flips, without the import of
    # torch's compiler stack it does to set inductor's flag as well (0.9 s and 68 MB per
    # process here, see `mlops.optim.eager_class`); `_Job` sets that flag too when the
    # model is compiled.
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    if threads > 0:
        torch.set_num_threads(threads)


def resolve_device(name: str, ctx: DistContext) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; under torchrun each rank takes its local GPU."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return torch.device(name)


VAL_BATCH = 1024  # rows per batch when a streamed validation split is scored
BUCKET_BATCHES = 50  # text: batches per span sorted by length (a wider span pads less, mixes less)
REGRESSION_METRICS = ("val_loss", "val_rmse", "val_mae", "val_r2")
CLASSIFICATION_METRICS = ("val_loss", "val_accuracy", "val_f1_macro")


def check_metric(task: str, metric: str, key: str = "train.early_stopping.metric") -> None:
    """Refuse a metric the task does not produce (one line naming `key`, exit 2)."""

    known = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    if metric not in known:
        raise UserError(
            f"{key} = {metric}: not a {task} metric "
            f"(use one of {', '.join(known)}; the task is data.task, auto: from the target)"
        )


def _target_scale(model: nn.Module) -> float:
    from mlops.nets import Rescale

    return next((float(m.scale) for m in model.modules() if isinstance(m, Rescale)), 1.0)


def _loss_fn(model: nn.Module, task: str, label_smoothing: float) -> Callable[..., torch.Tensor]:
    """Cross-entropy (with label smoothing) on logits, or MSE on the standardised target."""
    from torch.nn import functional as F

    if task != "regression":
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=label_smoothing)
    scale = _target_scale(model)
    return lambda out, y: F.mse_loss(out.squeeze(1) / scale, y / scale)


def _val_metrics(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, task: str
) -> dict[str, float]:
    import torch
    from torch.nn import functional as F

    model.eval()
    with torch.no_grad():
        if task == "regression":
            pred = model(x).float().squeeze(1).double()
            err = pred - y.double()
            total = ((y.double() - y.double().mean()) ** 2).sum()
            scale = _target_scale(model)
            return {
                "val_loss": float((err**2).mean() / scale**2),
                "val_rmse": float((err**2).mean().sqrt()),
                "val_mae": float(err.abs().mean()),
                "val_r2": float(1 - (err**2).sum() / total) if float(total) > 0 else 0.0,
            }
        logits = model(x).float()
        pred = logits.argmax(dim=1)
        counts = torch.bincount(y * n_classes + pred, minlength=n_classes**2)
        return {
            "val_loss": float(F.cross_entropy(logits, y)),
            "val_accuracy": float((pred == y).double().mean()),
            "val_f1_macro": _f1_macro(counts, n_classes),
        }


def _f1_macro(counts: torch.Tensor, n_classes: int) -> float:
    """Macro F1 from the flattened confusion counts (actual x predicted)."""
    matrix = counts.reshape(n_classes, n_classes).double()
    tp = matrix.diag()
    precision = tp / matrix.sum(0).clamp(min=1)
    recall = tp / matrix.sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return float(f1.mean())


def _streamed_val_metrics(
    model: nn.Module, batches: Iterable[Batch], n_classes: int, task: str, device: torch.device
) -> dict[str, float]:
    """`_val_metrics` over a split read in batches: the same metrics from running sums."""
    import torch
    from torch.nn import functional as F

    model.eval()
    n, loss, sums = 0, 0.0, torch.zeros(4, dtype=torch.float64)  # sse, sae, Σy, Σy²
    counts = torch.zeros(n_classes * n_classes, dtype=torch.int64)
    with torch.no_grad():
        for xb, yb in batches:
            out = model(xb.to(device)).float().cpu()
            n += len(yb)
            if task == "regression":
                err, y64 = out.squeeze(1).double() - yb.double(), yb.double()
                sums += torch.stack([(err**2).sum(), err.abs().sum(), y64.sum(), (y64**2).sum()])
            else:
                loss += float(F.cross_entropy(out, yb, reduction="sum"))
                counts += torch.bincount(yb * n_classes + out.argmax(dim=1),
                                         minlength=n_classes**2)  # fmt: skip
    n = max(n, 1)
    if task == "regression":
        sse, sae, y_sum, y_squares = (float(v) for v in sums)
        total = y_squares - y_sum**2 / n
        scale = _target_scale(model)
        return {
            "val_loss": sse / n / scale**2,
            "val_rmse": math.sqrt(sse / n),
            "val_mae": sae / n,
            "val_r2": 1 - sse / total if total > 0 else 0.0,
        }
    correct = float(counts.reshape(n_classes, n_classes).diag().sum())
    return {
        "val_loss": loss / n,
        "val_accuracy": correct / n,
        "val_f1_macro": _f1_macro(counts, n_classes),
    }


def _autocast(device: torch.device, precision: str) -> Any:
    import torch

    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


class _Job:
    """The moving parts of one training job, and how to save and restore them."""

    def __init__(self, raw: nn.Module, params: TrainParams, ctx: DistContext,
                 device: torch.device, train: Arrays | BatchSource, task: str,
                 augment: Augmenter | None = None) -> None:  # fmt: skip
        import torch

        self.raw, self.params, self.ctx, self.device = raw, params, ctx, device
        self.augment = augment
        self.augment_rng = torch.Generator().manual_seed(params.seed + 1)
        self.model: nn.Module = raw
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(raw, device_ids=ids)
        if params.compile:
            torch.use_deterministic_algorithms(True, warn_only=True)  # inductor's flag too
            self.model = torch.compile(self.model)  # type: ignore[assignment]
        self.batch = max(1, params.batch_size // ctx.world_size)
        if isinstance(train, tuple):
            steps = math.ceil(math.ceil(len(train[0]) / ctx.world_size) / self.batch)
        else:
            steps = train.steps(self.batch, ctx.rank, ctx.world_size)
        self.optimizer = make_optimizer(raw, params)
        self.schedule = Schedule(optimizer=self.optimizer, params=params, steps_per_epoch=steps)
        self.stopper = EarlyStopping(params.early_stopping)
        fp16 = device.type == "cuda" and params.precision == "fp16"
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.has_bn = any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in raw.modules()
        )
        self.generator = torch.Generator().manual_seed(params.seed)
        self.best_state = copy.deepcopy(raw.state_dict())
        self.history: list[EpochResult] = []
        self.loss = _loss_fn(raw, task, params.label_smoothing)

    def restore(self, state: dict[str, Any]) -> int:
        """Load a checkpoint; return the last epoch it holds."""
        import torch

        self.raw.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.stopper.load_state_dict(state["stopper"])
        self.best_state = state["best_model"]
        torch.set_rng_state(state["rng_torch"])
        self.generator.set_state(state["rng_generator"])
        if "rng_augment" in state:
            self.augment_rng.set_state(state["rng_augment"])
        self.history = [EpochResult(h["epoch"], h["metrics"]) for h in state["history"]]
        return int(state["epoch"])

    def snapshot(self, epoch: int, job: str) -> dict[str, Any]:
        """Everything a resumed job needs to continue bit-for-bit."""
        import torch

        return {
            "fingerprint": job,
            "epoch": epoch,
            "model": self.raw.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "stopper": self.stopper.state_dict(),
            "best_model": self.best_state,
            "rng_torch": torch.get_rng_state(),
            "rng_generator": self.generator.get_state(),
            "rng_augment": self.augment_rng.get_state(),
            "history": [{"epoch": h.epoch, "metrics": h.metrics} for h in self.history],
        }

    def indexed(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[Batch]:
        """This rank's shard of in-memory rows in a fresh random order, batch by batch
        (text: bucketed by length, `_bucketed`)."""
        import torch

        order = torch.randperm(len(x), generator=self.generator)[
            self.ctx.rank :: self.ctx.world_size
        ]
        order = order.to(self.device)
        start = text_start(self.raw)
        if start is not None and self.params.loader.bucket_by_length:
            yield from self._bucketed(x, y, order, start)
            return
        for first in range(0, len(order), self.batch):
            idx = order[first : first + self.batch]
            yield x[idx], y[idx]

    def _bucketed(
        self, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, start: int
    ) -> Iterator[Batch]:
        """Rows with text: the shuffled order cut into spans of `BUCKET_BATCHES` batches,
        each span sorted by token count and cut into batches, the batches in a random
        order, each batch cut to its longest row (the model ignores the pads after it)."""
        import torch

        lengths = (x[:, start:] != 0).sum(dim=1)
        batches: list[torch.Tensor] = []
        span = self.batch * BUCKET_BATCHES
        for first in range(0, len(order), span):
            part = order[first : first + span]
            part = part[torch.argsort(lengths[part], stable=True)]
            batches += list(part.split(self.batch))
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            idx = batches[i]
            width = start + max(int(lengths[idx].max()), 1)
            yield x[idx, :width], y[idx]

    def train_epoch(self, batches: Iterable[Batch]) -> tuple[float, int]:
        """One pass over this rank's batches; the mean training loss over all ranks."""
        import torch

        p = self.params
        self.model.train()
        total = 0.0
        seen = 0
        scaled = self.scaler.is_enabled()
        for rows, labels in batches:
            if self.has_bn and len(labels) < 2:
                continue
            xb = rows.to(self.device, non_blocking=True)
            yb = labels.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            inputs = xb if self.augment is None else self.augment(xb, self.augment_rng)
            with _autocast(self.device, p.precision):
                loss = self.loss(self.model(inputs), yb)
            if scaled:  # fp16 on CUDA
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if p.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.raw.parameters(), p.grad_clip)
            if scaled:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.schedule.after_batch()
            total += loss.item() * len(yb)
            seen += len(yb)
        if self.ctx.distributed:
            import torch.distributed as dist

            summed = torch.tensor([total, float(seen)], device=self.device, dtype=torch.float64)
            dist.all_reduce(summed)
            total, seen = float(summed[0]), int(summed[1])
        return total / max(seen, 1), seen


def text_start(model: nn.Module) -> int | None:
    """Where a text model's rows hold their token ids (None: a model without text)."""
    try:
        front = model[0]  # type: ignore[index]
    except (TypeError, IndexError):
        return None
    start = getattr(front, "text_start", None)
    return start if isinstance(start, int) and hasattr(front, "tokens") else None


def trim_text(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A text model's rows cut after the longest row's last token (its output does not
    change); other rows as they are."""
    start = text_start(model)
    if start is None or x.shape[1] <= start:
        return x
    longest = int((x[:, start:] != 0).sum(dim=1).max()) if len(x) else 0
    return x[:, : start + max(longest, 1)]


def train_model(
    make_model: Callable[[], nn.Module],
    params: TrainParams,
    train: Arrays | BatchSource,
    val: Arrays | BatchSource,
    on_epoch: EpochCallback | None = None,
    checkpointing: Checkpointing | None = None,
    ctx: DistContext | None = None,
    task: str = "classification",
    augment: Augmenter | None = None,
) -> TrainResult:
    """Seed, build the model with `make_model`, and train it (see the module docstring);
    `augment` transforms each training batch (never the validation rows). A split is
    arrays held in memory, or a `BatchSource` streamed batch by batch.

    A matching checkpoint resumes the job where it stopped; restored epochs are replayed
    to `on_epoch` so a new tracking run still gets the whole curve.
    """
    import torch

    ctx = ctx or DistContext()
    seed_everything(params.seed, params.threads)
    device = resolve_device(params.device, ctx)
    raw = make_model().to(device)
    if isinstance(train, tuple):
        x_train, y_train = (torch.from_numpy(a).to(device) for a in train)
        first = x_train[:1]
    else:
        first = torch.from_numpy(train.probe()).to(device)
    if isinstance(val, tuple):
        x_val, y_val = (torch.from_numpy(a).to(device) for a in val)
        x_val = trim_text(raw, x_val)
    raw.eval()
    with torch.no_grad():
        n_classes = int(raw(first).shape[1])
    job = _Job(raw, params, ctx, device, train, task, augment)
    resumed_from = _resume(job, checkpointing, on_epoch)
    stopped_early = False
    last_saved = time.monotonic()
    for epoch in range(resumed_from + 1, params.epochs + 1):
        began = time.perf_counter()
        if isinstance(train, tuple):
            batches: Iterable[Batch] = job.indexed(x_train, y_train)
        else:
            batches = train.batches(epoch, job.batch, True, ctx.rank, ctx.world_size)
        train_loss, seen = job.train_epoch(batches)
        metrics = {"train_loss": train_loss, "lr": job.schedule.lr}
        if isinstance(val, tuple):
            metrics |= _val_metrics(raw, x_val, y_val, n_classes, task)
        else:
            rows = val.batches(0, VAL_BATCH, shuffle=False)
            metrics |= _streamed_val_metrics(raw, rows, n_classes, task, device)
        job.schedule.after_epoch(metrics["val_loss"])
        seconds = time.perf_counter() - began
        result = EpochResult(
            epoch, metrics, {"epoch_seconds": seconds, "samples_per_second": seen / seconds}
        )
        job.history.append(result)
        if on_epoch is not None:
            on_epoch(result)
        if job.stopper.update(metrics[job.stopper.metric], epoch):
            job.best_state = copy.deepcopy(raw.state_dict())
        if job.stopper.should_stop(epoch):
            stopped_early = True
            break
        last_saved = _checkpoint(job, checkpointing, epoch, last_saved)
    raw.load_state_dict(job.best_state)
    raw.eval()
    if checkpointing is not None and ctx.is_main:
        checkpointing.path.unlink(missing_ok=True)
    return TrainResult(
        raw.cpu(), job.history, job.stopper.best_epoch, stopped_early, resumed_from, str(device)
    )


def _checkpoint(
    job: _Job, checkpointing: Checkpointing | None, epoch: int, last_saved: float
) -> float:
    """Save a checkpoint after `epoch` when one is due (main process, not the last
    epoch, `every_seconds` since the last save); when the last one was saved."""
    if (
        checkpointing is None
        or not job.ctx.is_main
        or epoch >= job.params.epochs
        or time.monotonic() - last_saved < checkpointing.every_seconds
    ):
        return last_saved
    save_checkpoint(checkpointing.path, job.snapshot(epoch, checkpointing.fingerprint))
    return time.monotonic()


def _resume(job: _Job, checkpointing: Checkpointing | None, on_epoch: EpochCallback | None) -> int:
    """Restore a matching checkpoint into `job` and replay its epochs to `on_epoch`; the
    last epoch it had (0 without one)."""
    state = None
    if checkpointing is not None:
        cp = checkpointing
        state = load_checkpoint(cp.path, cp.fingerprint, cp.require_resume)
    resumed_from = job.restore(state) if state is not None else 0
    for past in job.history if on_epoch is not None else []:
        on_epoch(past)  # type: ignore[misc]
    return resumed_from


def predict_values(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> Any:
    """Regression predictions in the target's units, as a 1-D numpy array."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, max(len(x), 1), batch_size):
            rows = trim_text(model, torch.from_numpy(x[start : start + batch_size]))
            out.append(model(rows).float().numpy())
    return np.concatenate(out)[:, 0]


def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> Any:
    """Class probabilities for a feature matrix, as a numpy array."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, max(len(x), 1), batch_size):
            logits = model(trim_text(model, torch.from_numpy(x[start : start + batch_size])))
            out.append(torch.softmax(logits.float(), dim=1).numpy())
    return np.concatenate(out)

"""Train one model inside an MLflow run: the one way the train stage, a tuning trial and a
scheduled sweep's challenger do it.

`train_logged` is `training.train_model` with every epoch's metrics sent to the run in
batches (`tracking.MetricsBuffer`), flushed when training ends or fails, so a pruned
trial keeps its curve (a stop signal is not held up by a store that cannot be reached).
`log_weights` saves the weights and the spec beside them and logs both under the run's
`weights/`, which `mlops registry register --run` reads, tagged with the weights' sha256.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlops import tracking
from mlops.distributed import DistContext
from mlops.models import SPEC_FILE, WEIGHTS_FILE, ModelSpec, save_model
from mlops.params import TrainParams
from mlops.training import Checkpointing, EpochCallback, EpochResult, TrainResult, train_model

if TYPE_CHECKING:
    from torch import nn

    from mlops.augment import Augmenter

Arrays = tuple[np.ndarray, np.ndarray]


def train_logged(
    run_id: str | None,
    make_model: Callable[[], nn.Module],
    params: TrainParams,
    data: tuple[Arrays, Arrays],
    task: str,
    on_epoch: EpochCallback | None = None,
    checkpointing: Checkpointing | None = None,
    ctx: DistContext | None = None,
    augment: Augmenter | None = None,
) -> TrainResult:
    """Train on `data` (train, validation), logging each epoch to run `run_id` (None:
    log nothing, as on a DDP rank other than 0) before `on_epoch` sees it; `augment`
    transforms each training batch of images."""
    buffer = tracking.MetricsBuffer(run_id) if run_id else None

    def each(result: EpochResult) -> None:
        if buffer is not None:
            buffer.add(result.as_dict(), result.epoch)
        if on_epoch is not None:
            on_epoch(result)

    train, val = data
    try:
        result = train_model(
            make_model, params, train, val, each, checkpointing, ctx, task, augment
        )
    except Exception:  # e.g. a pruned trial: its curve is logged; a stop signal is not waited on
        if buffer is not None:
            buffer.flush()
        raise
    if buffer is not None:
        buffer.flush()
    return result


def log_weights(model: nn.Module, spec: ModelSpec, directory: str | Path) -> str:
    """Save `model` and `spec` in `directory`, log them under the active run's
    `weights/`, tag the run with the weights' sha256 and return it."""
    sha = save_model(model, spec, directory)
    tracking.log_artifacts(
        Path(directory, WEIGHTS_FILE), Path(directory, SPEC_FILE), artifact_path="weights"
    )
    tracking.set_tags({tracking.TAG_MODEL_SHA: sha})
    return sha

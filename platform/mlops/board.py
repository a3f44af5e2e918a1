"""TensorBoard event files of a run (`train.tensorboard: true`), and gathering every run's
files for `mlops tensorboard`. Imports torch's SummaryWriter lazily: nothing here runs
unless asked for.

The train stage writes scalars per epoch, the hyperparameters with the best metrics, a
grid of training images (image data) and the model graph; `evaluate` writes the test
images the model got wrong. Each run's files are logged under its `tensorboard/`
artifacts, so they live in the artifact store with the run, in team mode too.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops import tracking

if TYPE_CHECKING:
    from torch import nn

ARTIFACT_PATH = "tensorboard"
MAX_IMAGES = 64


def grid(pixels: np.ndarray, columns: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 images (n, c, h, w) tiled in one (c, H, W) picture, `columns` per row."""
    n, c, h, w = pixels.shape
    rows = max(1, math.ceil(n / columns))
    cols = min(columns, max(n, 1))
    out = np.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=np.uint8)
    for i, image in enumerate(pixels):
        y, x = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        out[:, y : y + h, x : x + w] = image
    return out


class Board:
    """One run's event files, written to a temporary folder and logged under the run's
    `tensorboard/` artifacts by `close`."""

    def __init__(self, name: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(tempfile.mkdtemp(prefix="mlops-tensorboard-"))
        self.writer = SummaryWriter(log_dir=str(self.folder / name))

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Metrics of one epoch (`loss/train`, `loss/val`, … grouped by their kind)."""
        for key, value in values.items():
            self.writer.add_scalar(_tag(key), value, step)

    def images(self, tag: str, pixels: np.ndarray, caption: str = "") -> None:
        """Up to `MAX_IMAGES` uint8 images (n, c, h, w) as one grid."""
        if len(pixels):
            self.writer.add_image(tag, grid(pixels[:MAX_IMAGES]), dataformats="CHW")
        if caption:
            self.writer.add_text(tag, caption)

    def graph(self, model: nn.Module, example: np.ndarray) -> str | None:
        """The model's graph (traced on `example`); why not, if it cannot be traced."""
        import torch

        try:
            self.writer.add_graph(model, torch.from_numpy(example[:2]))
        except Exception as exc:  # a module torch.jit cannot trace: the run goes on
            return f"no model graph ({type(exc).__name__})"
        return None

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's hyperparameters beside its best metrics (TensorBoard's HParams)."""
        flat = {k: v if isinstance(v, int | float | str | bool) else str(v)
                for k, v in params.items()}  # fmt: skip
        self.writer.add_hparams(flat, {f"hparam/{k}": v for k, v in metrics.items()},
                                run_name=".")  # fmt: skip

    def close(self) -> None:
        """Flush the files and log them under the active run's `tensorboard/`."""
        self.writer.close()
        try:
            files = [p for p in self.folder.rglob("*") if p.is_file()]
            for path in files:
                where = path.parent.relative_to(self.folder).as_posix()
                tracking.log_artifacts(path, artifact_path=f"{ARTIFACT_PATH}/{where}")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def image_pixels(rows: np.ndarray, shape: list[int]) -> np.ndarray:
    """Image rows in [0, 1] (as the model reads them) back to uint8 (n, c, h, w)."""
    return np.clip(np.rint(rows.reshape(len(rows), *shape) * 255.0), 0, 255).astype(np.uint8)


def record_training(
    board: Board,
    params: dict[str, Any],
    best: dict[str, float],
    model: nn.Module,
    sample: np.ndarray,
    image_shape: list[int] | None,
) -> list[str]:
    """What a finished training adds: hyperparameters with the best metrics, the model
    graph and, for images, a grid of training images; notes on what could not be added."""
    board.hparams(params, best)
    if image_shape is not None:
        board.images("train/examples", image_pixels(sample[:MAX_IMAGES], image_shape))
    note = board.graph(model, sample)
    return [note] if note else []


def _tag(key: str) -> str:
    for prefix in ("train_", "val_"):
        if key.startswith(prefix):
            return f"{key.removeprefix(prefix)}/{prefix[:-1]}"
    return key


def folder_name(stage: str, run_id: str) -> str:
    """`<stage>-<run id>`, of safe characters only: a run's tags are written by whoever
    can write to the tracking store, and the folder is made (and replaced) under `dest`."""
    safe = re.sub(r"[^A-Za-z0-9_]+", "-", stage).strip("-")[:40] or "run"
    return f"{safe}-{re.sub(r'[^0-9a-f]', '', run_id)[:8]}"


def gather(experiment: str, dest: Path) -> list[str]:
    """Download every run of `experiment` that has `tensorboard/` artifacts into
    `dest/<stage>-<run id>/` (a finished run's once: its files no longer change); the
    folders."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = tracking.retried(lambda: client.get_experiment_by_name(experiment))
    if found is None:
        return []
    runs = tracking.retried(lambda: client.search_runs([found.experiment_id], max_results=5000))
    folders = []
    for run in runs:
        listed = tracking.retried(partial(client.list_artifacts, run.info.run_id, ARTIFACT_PATH))
        if not listed:
            continue
        name = folder_name(run.data.tags.get(tracking.TAG_STAGE, ""), run.info.run_id)
        target = dest / name
        finished = run.info.status in ("FINISHED", "FAILED", "KILLED")
        if target.is_dir() and not finished:  # a live run may still add files
            shutil.rmtree(target)
        if not target.is_dir():
            staging = dest / f".{name}.partial"  # a download cut short is never a run's files
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path=ARTIFACT_PATH, dst_path=str(staging)
            )
            (staging / ARTIFACT_PATH).rename(target)
            shutil.rmtree(staging, ignore_errors=True)
        folders.append(name)
    return folders

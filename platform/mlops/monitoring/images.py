"""Drift of image inputs: each image reduced to features that can drift, then compared
feature by feature like numeric columns (PSI and KS, `mlops.monitoring.drift`).

The features of an image, as the version decodes it (its own `ImageFormat`):
- `intensity.<channel>`: the mean of each channel (brightness and colour cast);
- `contrast`: the standard deviation of its gray levels;
- `embedding.pc<k>`: the model's penultimate-layer embedding (the input of its head),
  projected on the first `COMPONENTS` principal components of the training split's
  embeddings (centred on their mean): what the network sees, in the directions along
  which training images vary most;
- `width` and `height` of the file before decoding, when the files are at hand (a file
  of images, and the training split; the serving sink keeps decoded pixels only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.errors import UserError
from mlops.images import ImageError, ImageFormat
from mlops.images.format import image_bytes, to_rows

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

COMPONENTS = 5
CHANNELS = {1: ("gray",), 3: ("red", "green", "blue")}
GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Decoded:
    """Images as the version reads them, and their sizes before decoding (if known)."""

    rows: np.ndarray
    sizes: np.ndarray | None  # (n, 2): width, height


def decode_column(values: Sequence[Any], fmt: ImageFormat, where: str) -> Decoded:
    """A column of image files (bytes, or base64 text) decoded; a `UserError` naming the
    first row that is not an image."""
    pixels, sizes = [], []
    for i, value in enumerate(values):
        try:
            data = image_bytes(value)
            sizes.append(fmt.open(data).size)
            pixels.append(fmt.decode(data))
        except ImageError as exc:
            raise UserError(f"{where}: row {i}: column {fmt.column}: {exc}") from None
    return Decoded(to_rows(np.stack(pixels)), np.asarray(sizes, dtype=np.float64))


def current_images(frame: pd.DataFrame, fmt: ImageFormat, where: str) -> Decoded:
    """The current images: a file's image column, or the sink's decoded rows."""
    if fmt.column in frame.columns:
        return decode_column(list(frame[fmt.column]), fmt, where)
    names = [f"{fmt.column}.{i}" for i in range(fmt.values)]
    missing = [n for n in names[:1] if n not in frame.columns]
    if missing:
        raise UserError(
            f"{where}: no column {fmt.column!r} of image files (nor the decoded pixels the "
            "serving sink records)"
        )
    return Decoded(frame[names].to_numpy(dtype=np.float32), None)


def embeddings(model: nn.Module, rows: np.ndarray, batch: int = 512) -> np.ndarray:
    """The input of the model's head (its last Linear) for each row."""
    import torch

    from mlops.nets import layer_groups

    head_param = layer_groups(model)["head"][0]
    head = model.get_submodule(head_param.rsplit(".", 1)[0])
    found: list[np.ndarray] = []
    hook = head.register_forward_hook(
        lambda _m, inputs, _out: found.append(inputs[0].detach().float().numpy())
    )
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(rows), batch):
                model(torch.from_numpy(rows[start : start + batch]))
    finally:
        hook.remove()
    return np.concatenate(found).reshape(len(rows), -1)


def features(
    model: nn.Module, fmt: ImageFormat, ref: Decoded, cur: Decoded
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The drift features of both sets (see the module docstring): names, reference
    matrix, current matrix."""
    names = [f"intensity.{c}" for c in CHANNELS[fmt.channels]] + ["contrast"]
    x_ref, x_cur = [_photometric(ref.rows, fmt)], [_photometric(cur.rows, fmt)]
    e_ref, e_cur = embeddings(model, ref.rows), embeddings(model, cur.rows)
    centre = e_ref.mean(axis=0)
    _, _, axes = np.linalg.svd(e_ref - centre, full_matrices=False)
    k = min(COMPONENTS, axes.shape[0])
    names += [f"embedding.pc{i + 1}" for i in range(k)]
    x_ref.append((e_ref - centre) @ axes[:k].T)
    x_cur.append((e_cur - centre) @ axes[:k].T)
    if ref.sizes is not None and cur.sizes is not None:
        names += ["width", "height"]
        x_ref.append(ref.sizes)
        x_cur.append(cur.sizes)
    return names, np.hstack(x_ref).astype(np.float64), np.hstack(x_cur).astype(np.float64)


def _photometric(rows: np.ndarray, fmt: ImageFormat) -> np.ndarray:
    """Per image: each channel's mean, and the spread of its gray levels."""
    images = rows.reshape(len(rows), fmt.channels, -1)
    means = images.mean(axis=2)
    gray = images[:, 0] if fmt.channels == 1 else np.einsum("c,ncp->np", GRAY, images)
    return np.hstack([means, gray.std(axis=1, keepdims=True)])

"""Train-time augmentation: seeded per image, each operation does what it says, never for
numeric data, and a killed augmented job resumes to the uninterrupted result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlops.augment import Augmenter, augmenter
from mlops.errors import UserError
from mlops.images import ImageFormat
from mlops.models import build_model, make_spec
from mlops.params import AugmentParams, TrainParams
from mlops.training import Checkpointing, EpochCallback, TrainResult, train_model
from tests.shapes import CLASSES, png_bytes
from tests.unit.resume import straight_and_resumed

FMT = ImageFormat("image", (16, 16), 3)
SHAPE = (3, 16, 16)


def _batch(n: int = 6) -> torch.Tensor:
    files = [png_bytes(CLASSES[i % 3], seed=i, size=16) for i in range(n)]
    return torch.from_numpy(FMT.rows(files))


def _run(params: AugmentParams, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return Augmenter(params, SHAPE)(x, torch.Generator().manual_seed(seed))


def test_the_same_seed_gives_the_same_batch_and_another_differs() -> None:
    params = AugmentParams(flip=True, crop_scale=[0.5, 1.0], brightness=0.3, contrast=0.3,
                           saturation=0.3)  # fmt: skip
    x = _batch()
    one, two = _run(params, x, 1), _run(params, x, 1)
    assert torch.equal(one, two)
    assert not torch.equal(one, _run(params, x, 2))
    assert one.shape == x.shape and float(one.min()) >= 0.0 and float(one.max()) <= 1.0


def test_flip_mirrors_some_images_and_keeps_the_rest() -> None:
    x = _batch(32)
    out = _run(AugmentParams(flip=True), x).reshape(32, *SHAPE)
    images = x.reshape(32, *SHAPE)
    flipped = [bool(torch.equal(o, i.flip(-1))) for o, i in zip(out, images, strict=True)]
    kept = [bool(torch.equal(o, i)) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 4 <= sum(f and not k for f, k in zip(flipped, kept, strict=True)) <= 28


def test_a_full_crop_is_the_image_and_a_small_one_zooms_in() -> None:
    x = _batch()
    whole = _run(AugmentParams(crop_scale=[1.0, 1.0]), x)
    # the whole area fits only as the whole image: resampled at its own pixel centres
    assert float((whole - x).abs().max()) < 1e-5
    zoomed = _run(AugmentParams(crop_scale=[0.1, 0.1]), x)
    assert float((zoomed - x).abs().mean()) > float((whole - x).abs().mean())


def _luma(rows: torch.Tensor) -> torch.Tensor:
    images = rows.reshape(len(rows), *SHAPE)
    return 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]


def test_brightness_scales_every_channel_alike() -> None:
    x = _batch()
    brighter = _run(AugmentParams(brightness=1.0), x)
    assert not torch.equal(brighter, x)
    inside = (brighter > 0) & (brighter < 1)  # not clamped: out = x * one factor per image
    ratio = torch.where(inside & (x > 0.05), brighter / x.clamp(min=1e-6), torch.nan)
    per_image = ratio.reshape(len(x), -1)
    spread = per_image.nan_to_num(nan=0).amax(1) - torch.nan_to_num(per_image, nan=9).amin(1)
    assert float(spread.max()) < 1e-4


def test_saturation_changes_colour_but_keeps_gray_levels() -> None:
    x = _batch()
    out = _run(AugmentParams(saturation=1.0), x, seed=3)
    assert not torch.equal(out, x)
    assert float((_luma(out) - _luma(x)).abs().mean()) < 0.01  # clamping aside, luma stays


def test_numeric_data_are_refused_and_no_augment_is_none() -> None:
    with pytest.raises(UserError, match=r"train\.augment: augments images only"):
        augmenter(AugmentParams(flip=True), [64], image=False)
    assert augmenter(None, [3, 16, 16], image=True) is None
    assert augmenter(AugmentParams(), [3, 16, 16], image=True) is None
    assert augmenter(AugmentParams(flip=True), [3, 16, 16], image=True) is not None


def test_a_killed_augmented_job_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    n = 60
    x = FMT.rows([png_bytes(CLASSES[i % 3], seed=i, size=20) for i in range(n)])
    y = np.array([i % 3 for i in range(n)], dtype=np.int64)
    params = TrainParams.model_validate({
        "epochs": 4, "batch_size": 16, "device": "cpu", "schedule": {"name": "none"},
        "early_stopping": {"patience": 0},
        "augment": {"flip": True, "crop_scale": [0.6, 1.0], "brightness": 0.2},
        "model": {"family": "cnn", "cnn": {"channels": [4], "head_size": 8}},
    })  # fmt: skip
    spec = make_spec(params.model, [0, 1, 2], [0.5] * 3, [0.25] * 3, list(SHAPE), image=FMT)
    aug = augmenter(params.augment, list(SHAPE), image=True)

    def run(on_epoch: EpochCallback | None, cp: Checkpointing | None) -> TrainResult:
        train, val = (x, y), (x[:12], y[:12])
        return train_model(lambda: build_model(spec), params, train, val, on_epoch, cp,
                           augment=aug)  # fmt: skip

    whole, resumed = straight_and_resumed(run, tmp_path)
    assert [h.metrics for h in resumed.history] == [h.metrics for h in whole.history]

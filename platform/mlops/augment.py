"""Train-time image augmentation on whole batches, drawn per image from a seeded
generator: a horizontal flip, a random resized crop (an affine resampling of each image:
a box of a random share of the area and an aspect ratio in [3/4, 4/3] that fits, stretched
back to the image's size, bilinear) and colour jitter (brightness, contrast, saturation). The same
operations as torchvision's `RandomHorizontalFlip`, `RandomResizedCrop` and `ColorJitter`,
batched. Imports torch at module level: import it lazily."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mlops.errors import UserError
from mlops.params import AugmentParams

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class Augmenter:
    """Augments batches of image rows (values in [0, 1], shape `(n, c*h*w)`)."""

    params: AugmentParams
    shape: tuple[int, int, int]

    def __call__(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """An augmented copy of the batch `x` (rows, as the model reads them)."""
        p = self.params
        images = x.reshape(len(x), *self.shape)
        if p.flip:
            flipped = _draw(rng, len(x)) < 0.5
            images = torch.where(flipped.view(-1, 1, 1, 1).to(x.device), images.flip(-1), images)
        if p.crop_scale is not None:
            images = _resized_crop(images, p.crop_scale, rng)
        if p.brightness or p.contrast or p.saturation:
            images = _jitter(images, p, rng)
        return images.reshape(len(x), -1)


def augmenter(
    params: AugmentParams | None, input_shape: list[int], image: bool
) -> Augmenter | None:
    """The augmenter `train.augment` asks for (None: none), refused for data that are not
    images."""
    if params is None or params == AugmentParams():
        return None
    if not image or len(input_shape) != 3:
        raise UserError("train.augment: augments images only; this data set is not an image source")
    channels, height, width = input_shape
    return Augmenter(params, (channels, height, width))


def _draw(rng: torch.Generator, n: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(n, generator=rng) * (high - low) + low


def _resized_crop(images: torch.Tensor, scale: list[float], rng: torch.Generator) -> torch.Tensor:
    """Each image's random box (area share in `scale`, aspect ratio in [3/4, 4/3], inside
    the image) resampled to the full size."""
    n = len(images)
    area = _draw(rng, n, *scale)
    # the aspect ratios in [3/4, 4/3] whose box of this area fits inside the image
    low = torch.log(area).clamp(min=math.log(3 / 4))
    high = (-torch.log(area)).clamp(max=math.log(4 / 3))
    ratio = torch.exp(low + _draw(rng, n) * (high - low))
    width = torch.sqrt(area * ratio).clamp(max=1.0)  # shares of the image's width and height
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    shift_x = (_draw(rng, n) * 2 - 1) * (1 - width)
    shift_y = (_draw(rng, n) * 2 - 1) * (1 - height)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width, shift_x
    theta[:, 1, 1], theta[:, 1, 2] = height, shift_y
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter(images: torch.Tensor, p: AugmentParams, rng: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation factors drawn per image from [1 - j, 1 + j]."""
    n = len(images)

    def factor(j: float) -> torch.Tensor:
        return _draw(rng, n, 1 - j, 1 + j).view(-1, 1, 1, 1).to(images.device, images.dtype)

    if p.brightness:
        images = (images * factor(p.brightness)).clamp(0, 1)
    if p.contrast:
        mean = _gray(images).mean(dim=(1, 2, 3), keepdim=True)
        images = ((images - mean) * factor(p.contrast) + mean).clamp(0, 1)
    if p.saturation and images.shape[1] == 3:
        gray = _gray(images)
        images = ((images - gray) * factor(p.saturation) + gray).clamp(0, 1)
    return images


def _gray(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] != 3:
        return images
    weights = torch.tensor(GRAY, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)

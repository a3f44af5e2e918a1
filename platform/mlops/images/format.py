"""`ImageFormat`: one image's bytes → a fixed-size uint8 array → float rows in [0, 1].

The one decoder every path uses (training, evaluation, serving, export parity, pyfunc):
Pillow opens the bytes, refuses anything but PNG, JPEG and WebP, fully loads the pixels
(a truncated file fails here, never half-read), converts to grayscale or RGB and resizes
with a bilinear filter to the format's size.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

FILE_COLUMN = "_file"  # the image's path relative to the source, kept to name it
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
FORMATS = ("PNG", "JPEG", "MPO", "WEBP")  # MPO: a JPEG holding several pictures (the first)
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")  # 8 bits per channel
MAX_BYTES = 32 * 1024 * 1024  # one encoded image
MAX_PIXELS = 40_000_000  # one decoded image (Pillow's own bomb limit is ~89M)


class ImageError(ValueError):
    """An image that cannot be read: the message says why, in a few words."""


@dataclass(frozen=True)
class ImageFormat:
    """How a version reads images: the column holding them, the size (height, width)
    every image is resized to and the channels (1: grayscale, 3: RGB)."""

    column: str
    size: tuple[int, int]
    channels: int

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ImageFormat:
        """The format recorded in a schema or a model spec."""
        height, width = value["size"]
        return cls(str(value["column"]), (int(height), int(width)), int(value["channels"]))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as `from_dict` reads it."""
        return asdict(self) | {"size": list(self.size)}

    @property
    def shape(self) -> list[int]:
        """The model's input shape: channels, height, width."""
        return [self.channels, *self.size]

    @property
    def values(self) -> int:
        """Values per decoded image."""
        return self.channels * self.size[0] * self.size[1]

    def open(self, data: bytes) -> Image.Image:
        """The image in `data`, fully loaded (not yet converted or resized)."""
        if len(data) > MAX_BYTES:
            raise ImageError(f"{len(data)} bytes: over the limit of {MAX_BYTES}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                if image.format not in FORMATS:
                    raise ImageError(f"{image.format or 'unknown'} image: not PNG, JPEG or WebP")
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"{width}x{height}: over {MAX_PIXELS} pixels (a decompression bomb?)"
                    )
                image.load()
        except ImageError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageError(f"over {MAX_PIXELS} pixels (a decompression bomb?)") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(_why(exc)) from None
        return image

    def decode(self, data: bytes) -> np.ndarray:
        """The image as uint8 (channels, height, width), converted and resized."""
        image = self.open(data)
        if image.mode not in MODES:
            raise ImageError(f"mode {image.mode}: not 8 bits per channel")
        image = image.convert("L" if self.channels == 1 else "RGB")
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        return array[None] if self.channels == 1 else array.transpose(2, 0, 1)

    def pixels(
        self, images: Sequence[bytes] | Iterable[bytes], names: Sequence[str] | None = None
    ) -> np.ndarray:
        """Decoded images as uint8 (n, channels, height, width); an `ImageError` names the
        first that does not decode (by `names`, else `row N`)."""
        decoded = []
        for i, data in enumerate(images):
            try:
                decoded.append(self.decode(bytes(data)))
            except ImageError as exc:
                raise ImageError(f"{names[i] if names else f'row {i}'}: {exc}") from None
        if not decoded:
            return np.zeros((0, *self.shape), dtype=np.uint8)
        return np.stack(decoded)

    def rows(
        self, images: Sequence[bytes] | Iterable[bytes], names: Sequence[str] | None = None
    ) -> np.ndarray:
        """What the model reads: float32 rows of channels x height x width in [0, 1]."""
        return to_rows(self.pixels(images, names))


def image_bytes(value: Any) -> bytes:
    """An image as a request or a DataFrame cell may hold it: bytes, or base64 text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value  # a data: URL
        try:
            return base64.b64decode("".join(text.split()), validate=True)  # wrapped lines too
        except (binascii.Error, ValueError):
            raise ImageError("not base64 text (send the file's bytes, base64-encoded)") from None
    raise ImageError(f"{type(value).__name__}: expected an image's bytes or base64 text")


def encode_png(rows: np.ndarray, shape: Sequence[int]) -> list[bytes]:
    """Rows in [0, 1] (as `to_rows` makes them) as PNG files that decode back to them at
    this shape: the input example of an image version."""
    pixels = np.clip(np.rint(rows.reshape(len(rows), *shape) * 255.0), 0, 255).astype(np.uint8)
    found = []
    for image in pixels:
        picture = Image.fromarray(image[0] if shape[0] == 1 else image.transpose(1, 2, 0))
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        found.append(buffer.getvalue())
    return found


def to_rows(pixels: np.ndarray) -> np.ndarray:
    """uint8 images (n, c, h, w) as float32 rows in [0, 1]."""
    rows = pixels.reshape(len(pixels), -1).astype(np.float32)
    rows *= np.float32(1.0 / 255.0)
    return rows


def channel_stats(rows: np.ndarray, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of image rows (a constant channel gets std 1)."""
    by_channel = rows.reshape(len(rows), channels, -1).astype(np.float64)
    mean = by_channel.mean(axis=(0, 2))
    std = by_channel.std(axis=(0, 2))
    std[std < 1e-6] = 1.0
    return mean.tolist(), std.tolist()


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if text.startswith("cannot identify image file"):
        return "not an image Pillow can read"
    return text

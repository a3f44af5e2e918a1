"""Real image files made here: circles, squares and triangles drawn with Pillow at random
colours, sizes and positions on noisy backgrounds, saved as PNG, JPEG and WebP in the
ImageFolder layout (`<folder>/<class>/<n>.<ext>`). Nothing is downloaded."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
FORMATS = (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"))


def draw(kind: str, rng: random.Random, size: int = 48) -> Image.Image:
    """One RGB picture of a shape of `kind`."""
    background = tuple(rng.randrange(0, 90) for _ in range(3))
    image = Image.new("RGB", (size, size), background)  # type: ignore[arg-type]
    pen = ImageDraw.Draw(image)
    for _ in range(6):  # noise: small dots in the background colour's range
        x, y = rng.randrange(size), rng.randrange(size)
        pen.point((x, y), fill=tuple(rng.randrange(0, 120) for _ in range(3)))
    colour = tuple(rng.randrange(130, 256) for _ in range(3))
    side = rng.randrange(size // 3, size * 3 // 4)
    x0, y0 = rng.randrange(0, size - side), rng.randrange(0, size - side)
    box = (x0, y0, x0 + side, y0 + side)
    if kind == "circle":
        pen.ellipse(box, fill=colour)  # type: ignore[arg-type]
    elif kind == "square":
        pen.rectangle(box, fill=colour)  # type: ignore[arg-type]
    else:
        pen.polygon([(x0 + side / 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=colour)  # type: ignore[arg-type]
    return image


def make_folder(folder: Path, per_class: int, seed: int = 0, size: int = 48) -> list[Path]:
    """`per_class` images of each shape under `folder/<shape>/`, in rotating formats."""
    rng = random.Random(seed)
    written = []
    for kind in CLASSES:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext, fmt = FORMATS[i % len(FORMATS)]
            path = folder / kind / f"{i:04d}.{ext}"
            image = draw(kind, rng, size)
            image.save(path, fmt, **({"quality": 92} if fmt != "PNG" else {}))
            written.append(path)
    return written


def png_bytes(kind: str, seed: int = 1, size: int = 48) -> bytes:
    """One picture of `kind` as PNG bytes (for requests)."""
    buffer = io.BytesIO()
    draw(kind, random.Random(seed), size).save(buffer, "PNG")
    return buffer.getvalue()

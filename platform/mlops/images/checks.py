"""What `validate` measures on images: each one decodes in full, in a mode it can be read
in, and is not smaller than the limit; the first bad files are named."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mlops.images.format import MODES, ImageError, ImageFormat


@dataclass(frozen=True)
class Survey:
    """Problems found, by kind, each a list of (file, why)."""

    unreadable: list[tuple[str, str]] = field(default_factory=list)
    mode: list[tuple[str, str]] = field(default_factory=list)
    tiny: list[tuple[str, str]] = field(default_factory=list)
    smallest: tuple[int, int] = (0, 0)


def survey(
    images: Sequence[bytes], files: Sequence[str], fmt: ImageFormat, min_size: int
) -> Survey:
    """Open every image: unreadable or truncated files, modes that are not 8 bits per
    channel, and images with a side under `min_size` pixels."""
    found = Survey()
    smallest: tuple[int, int] | None = None
    for data, name in zip(images, files, strict=True):
        try:
            image = fmt.open(bytes(data))
        except ImageError as exc:
            found.unreadable.append((name, str(exc)))
            continue
        width, height = image.size
        if smallest is None or width * height < smallest[0] * smallest[1]:
            smallest = (width, height)
        if image.mode not in MODES:
            found.mode.append((name, f"mode {image.mode}"))
        elif min(width, height) < min_size:
            found.tiny.append((name, f"{width}x{height}"))
    return Survey(found.unreadable, found.mode, found.tiny, smallest or (0, 0))


def named(problems: list[tuple[str, str]], limit: int = 3) -> str:
    """The first files and why, e.g. `cat/7.png (image file is truncated)`."""
    shown = "; ".join(f"{name} ({why})" for name, why in problems[:limit])
    more = len(problems) - limit
    return shown + (f"; and {more} more" if more > 0 else "")

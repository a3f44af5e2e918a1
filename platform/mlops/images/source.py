"""Image sources: a folder with one subfolder per class (the ImageFolder layout), or a
CSV/Parquet table whose image column holds file paths relative to the table.

Each file is read once, here; its encoded bytes go into the raw data set, and every later
stage reads them from there. A path may not lead outside the source's folder or the
workspace (a `../` in a table or a symlink to a system file is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.errors import DataError, UserError
from mlops.images.format import EXTENSIONS, FILE_COLUMN, MAX_BYTES

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Found:
    """What a source held: the frame (image bytes, file, target) and what was skipped."""

    frame: pd.DataFrame
    skipped: int


def is_image_folder(path: Path) -> bool:
    """Whether a data source names a folder (an image folder source)."""
    return path.is_dir()


def read_folder(folder: Path, column: str, workspace: Path) -> Found:
    """Every image of `folder/<class>/…` (any depth below the class folder), in sorted
    order; files that are not PNG, JPEG or WebP by name are skipped and counted."""
    import pandas as pd

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not _hidden(p))
    if not classes:
        raise DataError(f"{folder}: no class subfolders (expected {folder}/<class>/<image>)")
    files, labels, skipped = [], [], 0
    for label in classes:
        for path in sorted((folder / label).rglob("*")):
            if path.is_dir() or _hidden(path):
                continue
            if path.suffix.lower() not in EXTENSIONS:
                skipped += 1
                continue
            files.append(path)
            labels.append(label)
    if not files:
        raise DataError(f"{folder}: no .png, .jpg, .jpeg or .webp files under its class folders")
    relative = [_name(p.relative_to(folder)) for p in files]
    data = [_read(path, folder, workspace) for path in files]
    frame = pd.DataFrame({column: data, FILE_COLUMN: relative, "target": labels})
    return Found(frame, skipped)


def read_table(frame: pd.DataFrame, table: Path, column: str, workspace: Path) -> Found:
    """The images a table names in `column` (paths relative to the table's folder), as
    bytes in that column; the table's other columns but `target` are dropped."""
    import pandas as pd

    if column not in frame.columns:
        raise UserError(f"data.image_column = {column!r}: no such column in {table.name}")
    base = table.parent
    paths = frame[column]
    data, relative = [], []
    for i, value in enumerate(paths):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{table.name}: row {i + 2}: {column} is not a file path")
        path = base / value
        data.append(_read(path, base, workspace))
        relative.append(Path(value).as_posix())
    return Found(
        pd.DataFrame({column: data, FILE_COLUMN: relative, "target": frame["target"].to_numpy()}),
        0,
    )


def _name(relative: Path) -> str:
    """A file's path as the data set records it; a name that is not UTF-8 (which Parquet
    cannot store) is refused, naming it as the shell would show it."""
    name = relative.as_posix()
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise DataError(f"{shown}: the file name is not UTF-8; rename it") from None
    return name


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _read(path: Path, base: Path, workspace: Path) -> bytes:
    """A file's bytes, refused when it leads outside `base` and the workspace, is not a
    regular file, or is larger than one image may be."""
    resolved = path.resolve()
    inside = (base.resolve(), workspace.resolve())
    if not any(resolved.is_relative_to(root) for root in inside):
        raise DataError(f"{path}: leads outside the data source ({resolved})")
    if not resolved.is_file():
        raise DataError(f"{path}: not a file")
    size = resolved.stat().st_size
    if size > MAX_BYTES:
        raise DataError(f"{path}: {size} bytes, over the limit of {MAX_BYTES} for one image")
    try:
        return resolved.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None

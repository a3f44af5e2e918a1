"""The two sides of a drift check, read and checked before any compute.

Reference: the training split a version was trained on, found through its lineage (the
DVC md5 of `data/split/train.parquet` recorded at registration as `mlops.data.train.md5`):
from the DVC cache by that md5 when the cache holds it, else from the workspace when its
file has that md5. Current: a CSV/Parquet file, or the serving sink's rows. Every refusal
is one line naming the file (exit 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops import workspace
from mlops.data import read_parquet
from mlops.errors import UserError, first_line
from mlops.lineage import dvc_md5

if TYPE_CHECKING:
    import pandas as pd

    from registry.db.store import Version

TRAIN_SPLIT = workspace.SPLITS["train"]
TRAIN_MD5_TAG = "mlops.data.train.md5"
TARGET = "target"
PREDICTION = "prediction"
UNVERIFIED = "workspace (unverified)"


@dataclass(frozen=True)
class Reference:
    """The training rows of a version and where they came from."""

    frame: pd.DataFrame
    path: Path
    md5: str
    origin: str  # "dvc cache", "workspace", or UNVERIFIED

    def describe(self) -> dict[str, str]:
        """Where the rows came from, for reports."""
        return {"path": str(self.path), "md5": self.md5, "origin": self.origin}

    @property
    def features(self) -> list[str]:
        """Every column but the target: the features, in training order."""
        return [str(c) for c in self.frame.columns if c != TARGET]


def cache_dirs(root: Path) -> list[Path]:
    """The DVC cache folders of the project: `cache.dir` of `.dvc/config(.local)`, then
    the default `.dvc/cache`."""
    found = []
    for name in ("config.local", "config"):
        config = root / ".dvc" / name
        if not config.is_file():
            continue
        section = ""
        for raw in config.read_text(errors="replace").splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line.strip("[]").strip().strip("'\"")
            elif section == "cache" and (m := re.fullmatch(r"dir\s*=\s*(.+)", line)):
                found.append((root / ".dvc" / m.group(1).strip()).resolve())
    return [*found, root / ".dvc" / "cache"]


def cached_file(root: Path, md5: str) -> Path | None:
    """The DVC cache's copy of the file with this md5 (DVC 3 layout, then DVC 2's)."""
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        return None
    for cache in cache_dirs(root):
        for path in (cache / "files" / "md5" / md5[:2] / md5[2:], cache / md5[:2] / md5[2:]):
            if path.is_file():
                return path
    return None


def load_reference(root: Path, version: Version) -> Reference:
    """The training split `version` saw (see the module docstring); `UserError` when
    neither the cache nor the workspace holds it."""

    what = f"model {version.model} version {version.version}"
    workspace = root / TRAIN_SPLIT
    recorded = str(version.info.get(TRAIN_MD5_TAG, ""))
    if not recorded:
        if not workspace.is_file():
            raise UserError(f"{what}: no training split recorded, and no {TRAIN_SPLIT} here")
        return Reference(read_parquet(workspace), workspace, dvc_md5(workspace), UNVERIFIED)
    cached = cached_file(root, recorded)
    if cached is not None and dvc_md5(cached) == recorded:
        return Reference(read_parquet(cached), cached, recorded, "dvc cache")
    actual = dvc_md5(workspace) if workspace.is_file() else None
    if actual == recorded:
        return Reference(read_parquet(workspace), workspace, recorded, "workspace")
    commit = str(version.info.get("mlops.git_commit", ""))[:10] or "its commit"
    found = f"is md5 {actual[:8]}" if actual else "is missing"
    raise UserError(
        f"{what} was trained on {TRAIN_SPLIT} md5 {recorded[:8]}; the workspace's {found} and "
        f"the DVC cache lacks it: `git checkout {commit} -- dvc.lock && dvc checkout "
        f"{TRAIN_SPLIT}` (or `dvc pull`), then retry"
    )


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a frame (`UserError` if missing, unreadable or empty)."""
    import pandas as pd

    if not path.is_file():
        raise UserError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".parquet", ".pq"}:
        raise UserError(f"{path}: expected a .csv or .parquet file")
    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise UserError(f"{path}: cannot read: {first_line(exc)}") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _names(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def feature_matrix(frame: pd.DataFrame, features: list[str], where: str, min_rows: int) -> Any:
    """The feature columns as float32 rows, after checking they are all there, numeric,
    complete, and at least `min_rows` rows (`UserError` naming `where` otherwise)."""
    import pandas as pd

    if len(frame) == 0:
        raise UserError(f"{where}: no rows")
    present = [f for f in features if f in frame.columns]
    if not present:
        raise UserError(
            f"{where}: none of the model's {len(features)} feature columns "
            f"({_names(features, 3)}); it has {_names(list(frame.columns), 5) or 'no columns'}"
        )
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise UserError(f"{where}: missing feature columns {_names(missing)}")
    if len(frame) < min_rows:
        raise UserError(
            f"{where}: {len(frame)} rows; a drift check needs at least {min_rows} "
            "(monitor.drift.min_rows)"
        )
    for name in features:
        column = frame[name]
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise UserError(f"{where}: column {name} is not numeric")
        if int(column.isna().sum()):
            raise UserError(f"{where}: column {name} has {int(column.isna().sum())} missing values")
    return frame[features].to_numpy(dtype=np.float32, copy=True)


def class_indices(values: pd.Series, classes: list[Any], where: str) -> np.ndarray:
    """Class labels (as a column holds them) → indices into `classes`."""

    index = {str(c): i for i, c in enumerate(classes)}
    try:
        return np.array([index[_label(v)] for v in values], dtype=np.int64)
    except KeyError as exc:
        raise UserError(f"{where}: label {exc.args[0]!r} is not a class of the model") from None


def _label(value: Any) -> str:
    # A CSV read back gives 3.0 for a label written as 3.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

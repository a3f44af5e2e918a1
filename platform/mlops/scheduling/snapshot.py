"""Production's labelled rows as training data: `data/feedback/MODEL.parquet`, the rows
the serving sink recorded (sampled requests) that later got a label at `/feedback`, in
the training split's columns and types, written atomically and versioned with
`dvc add` (each snapshot is a DVC version of that file; its md5 goes into the lineage of
the model trained on it: `mlops registry lineage`)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlops import live, workspace
from mlops.data import Schema, read_parquet, write_parquet
from mlops.errors import MlopsError, UserError
from mlops.lineage import dvc_md5
from mlops.settings import Settings

FEEDBACK_DIR = Path("data/feedback")


@dataclass(frozen=True)
class Snapshot:
    """A labelled snapshot: where it is (relative to the project), its DVC md5, rows."""

    path: str
    md5: str
    rows: int


def take_snapshot(settings: Settings, model: str) -> Snapshot:
    """Write and `dvc add` the snapshot of `model`'s labelled rows (one line if there
    are none, or if the data is not a numeric table)."""
    import pandas as pd

    sink = live.default_sink(settings, model)
    try:
        rows = live.labelled_rows(sink, model)
    except (OSError, sqlite3.Error) as exc:
        raise UserError(f"{sink}: {exc}; no labelled rows to retrain on") from None
    schema = Schema.load(settings.root / workspace.SPLIT_SCHEMA)
    if schema.image or schema.columns:
        raise UserError(
            f"{model}: retraining on live labels needs a numeric table (this data has "
            f"{'images' if schema.image else 'categorical or text columns'})"
        )
    if not len(rows):
        raise UserError(
            f"{sink}: none of {model}'s recorded rows has a label yet (serve with --feedback "
            "and --log-inputs above 0, and send labels to /feedback)"
        )
    if rows.names != schema.features:
        raise UserError(
            f"{sink}: {model}'s recorded features ({len(rows.names)}) are not the training "
            f"split's ({len(schema.features)}): the data changed since it was served"
        )
    train = read_parquet(settings.root / workspace.SPLITS["train"])
    frame = pd.DataFrame(rows.features, columns=rows.names)
    frame[schema.target] = rows.labels
    frame = frame.astype(train.dtypes[list(frame.columns)].to_dict())
    relative = FEEDBACK_DIR / f"{model}.parquet"
    write_parquet(frame, settings.root / relative)
    _dvc_add(settings.root, relative)
    return Snapshot(str(relative), dvc_md5(settings.root / relative), len(frame))


def _dvc_add(root: Path, relative: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DVC_ROOT"}
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "add", "--quiet", str(relative)],
        cwd=root, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise MlopsError(f"`dvc add {relative}` failed (exit {done.returncode}): {last}")

"""Reading live labels back from a serving sink (SQLite, written by `mlops serve
--feedback`: `mlops.serving.sink` and `mlops.serving.feedback`): a version's labelled
answers, the sliding window `/metrics` shows, and the rows two versions answered alike
(a primary and its shadow), which the registry compares. Read-only; below the registry,
which never imports the serving layer.

Table `answers`: rid, role (`primary`: the answer given; `shadow`: a challenger's score
of the same row), ts, model, version, prediction. Table `labels`: rid, ts, label. Table
`versions`: each version's task and classes.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.settings import Settings

TABLES = {"answers", "labels", "versions"}
ALL = (
    "SELECT a.ts, a.prediction, l.label FROM labels l JOIN answers a USING (rid) "
    "WHERE a.model = ? AND a.version = ?"
)
# The newest labels first, by their index (labels before answers: CROSS JOIN keeps that
# order), so the window costs the same however many labels the sink holds.
WINDOW = (
    "SELECT a.ts, a.prediction, l.label FROM labels l INDEXED BY labels_ts "
    "CROSS JOIN answers a ON a.rid = l.rid "
    "WHERE a.model = ? AND a.version = ? ORDER BY l.ts DESC LIMIT {limit}"
)


def default_sink(settings: Settings, model: str) -> Path:
    """Where `mlops serve` records `model`'s answers (its default `--sink`)."""
    return settings.home / "serving" / f"{model}.db"


def scores(task: str, predicted: list[Any], labels: list[Any]) -> dict[str, float]:
    """Accuracy (classification), or RMSE and MAE (regression), of predictions against
    labels (at least one pair)."""
    pairs = list(zip(predicted, labels, strict=True))
    if task == "regression":
        errors = [float(p) - float(y) for p, y in pairs]
        return {
            "rmse": math.sqrt(sum(e * e for e in errors) / len(errors)),
            "mae": sum(abs(e) for e in errors) / len(errors),
        }
    return {"accuracy": sum(p == y for p, y in pairs) / len(pairs)}


def _read(path: Path) -> sqlite3.Connection:
    """The sink, read-only; a `sqlite3.Error` naming it when it holds no live answers."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sink file")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        conn.close()
        raise
    if not found >= TABLES:
        conn.close()
        raise sqlite3.OperationalError(
            "it holds no answers for live labels (written by a server without --feedback?)"
        )
    return conn


@dataclass(frozen=True)
class Labelled:
    """A version's labelled answers, oldest answer first: when each was answered, what
    it predicted and its label (both as the version's classes, or numbers)."""

    task: str
    classes: list[Any]
    ts: list[float]
    predicted: list[Any]
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.labels)


def labelled(path: Path, model: str, version: int, last: int | None = None) -> Labelled:
    """The labelled answers of `model` `version` in the sink at `path` (the `last` ones
    labelled, when given); empty when there are none."""
    with closing(_read(path)) as conn:
        meaning = conn.execute(
            "SELECT task, classes FROM versions WHERE model = ? AND version = ?", (model, version)
        ).fetchone()
        rows = conn.execute(
            WINDOW.format(limit=int(last)) if last is not None else ALL, (model, version)
        ).fetchall()
    rows.sort(key=lambda r: r[0])
    task, classes = (meaning[0], json.loads(meaning[1])) if meaning else ("classification", [])
    return Labelled(
        task, classes, [r[0] for r in rows], [json.loads(r[1]) for r in rows],
        [json.loads(r[2]) for r in rows],
    )  # fmt: skip


def live(path: Path, model: str, version: int, window: int) -> tuple[str, int, float]:
    """Over the last `window` labelled answers of a version: its task, how many, and
    the accuracy (classification) or RMSE (regression)."""
    found = labelled(path, model, version, window)
    if not len(found):
        return found.task, 0, math.nan
    key = "rmse" if found.task == "regression" else "accuracy"
    return found.task, len(found), scores(found.task, found.predicted, found.labels)[key]


def answered(path: Path, model: str, version: int) -> int:
    """How many answers of `model` `version` the sink recorded (labelled or not)."""
    with closing(_read(path)) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM answers WHERE model = ? AND version = ?", (model, version)
        ).fetchone()
    return int(row[0])


@dataclass(frozen=True)
class Paired:
    """The rows two versions of a model both answered (one as the answer given, the
    other as its shadow): their predictions and, where one came, the label."""

    a: list[Any]
    b: list[Any]
    labels: list[Any]  # None where no label came

    def __len__(self) -> int:
        return len(self.a)


def paired(path: Path, model: str, a: int, b: int) -> Paired:
    """The rows versions `a` and `b` of `model` both answered, oldest first."""
    with closing(_read(path)) as conn:
        rows = conn.execute(
            "SELECT x.prediction, y.prediction, l.label FROM answers x "
            "JOIN answers y ON y.rid = x.rid AND y.role != x.role "
            "LEFT JOIN labels l ON l.rid = x.rid "
            "WHERE x.model = ? AND x.version = ? AND y.model = ? AND y.version = ? "
            "ORDER BY x.ts",
            (model, a, model, b),
        ).fetchall()
    return Paired(
        [json.loads(r[0]) for r in rows], [json.loads(r[1]) for r in rows],
        [None if r[2] is None else json.loads(r[2]) for r in rows],
    )  # fmt: skip


@dataclass(frozen=True)
class Rows:
    """The labelled rows a sink holds with their features (the sampled requests whose
    rows later got a label), oldest first: training data from production."""

    names: list[str]
    features: list[list[float]]
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.labels)


def labelled_rows(path: Path, model: str) -> Rows:
    """`model`'s recorded input rows that have a label, with it (whichever version
    answered them: a label is the truth of the row, not of a version)."""
    with closing(_read(path)) as conn:
        names = conn.execute("SELECT names FROM features WHERE model = ?", (model,)).fetchone()
        rows = conn.execute(
            "SELECT p.features, l.label FROM predictions p JOIN labels l ON l.rid = p.rid "
            "WHERE p.model = ? ORDER BY p.id",
            (model,),
        ).fetchall()
    return Rows(
        json.loads(names[0]) if names else [],
        [json.loads(r[0]) for r in rows],
        [json.loads(r[1]) for r in rows],
    )

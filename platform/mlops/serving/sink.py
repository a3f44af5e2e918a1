"""A record of what the server saw and answered, for monitoring (drift) and live labels.

One SQLite file (WAL), written by one background thread so requests never wait on disk:
a request is sampled with probability `fraction` and all its rows are queued; with
`answers` (`mlops serve --feedback`) every row's answer is queued too, so a label sent to
`/feedback` later can join it. When the queue is full, rows are dropped and counted rather
than slowing requests down.

Table `predictions` (sampled): id, ts (unix seconds), model, version, features (JSON
list), prediction (JSON), probabilities (JSON list or null), rid (the row's id in the
response). Table `features`: the feature names of each model. `read_sink` returns one
column per feature. Tables `answers`, `labels` and `versions`: see `mlops.serving.feedback`.
"""

from __future__ import annotations

import json
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    features TEXT NOT NULL,
    prediction TEXT NOT NULL,
    probabilities TEXT
);
CREATE INDEX IF NOT EXISTS predictions_model_ts ON predictions (model, ts);
CREATE TABLE IF NOT EXISTS features (model TEXT PRIMARY KEY, names TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    rid TEXT NOT NULL,
    role TEXT NOT NULL,
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    prediction TEXT NOT NULL,
    PRIMARY KEY (rid, role)
);
CREATE INDEX IF NOT EXISTS answers_version ON answers (model, version);
CREATE TABLE IF NOT EXISTS labels (
    rid TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    label TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_ts ON labels (ts);
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    task TEXT NOT NULL,
    classes TEXT NOT NULL,
    PRIMARY KEY (model, version)
);
"""
INSERT = (
    "INSERT INTO predictions (ts, model, version, features, prediction, probabilities, rid) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
ANSWER = (
    "INSERT OR IGNORE INTO answers (rid, role, ts, model, version, prediction) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
PRIMARY, SHADOW = "primary", "shadow"  # the answer given; a challenger's score of the row


@dataclass(frozen=True)
class Sampled:
    """A sampled request's rows, what it answered, and the rows' ids."""

    ts: float
    model: str
    version: int
    x: Any
    predictions: Any
    probabilities: Any = None
    ids: list[str] | None = None


@dataclass(frozen=True)
class Answered:
    """Every row's answer and id (with `answers`): what a label joins. `role`: the
    answer given (`primary`) or a shadow challenger's score of the same rows."""

    ts: float
    model: str
    version: int
    ids: list[str]
    predictions: Any
    role: str = PRIMARY


Item = Sampled | Answered | threading.Event | None


def connect(path: Path) -> sqlite3.Connection:
    """The sink's database, created with its tables (WAL: readers never block the writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    if "rid" not in columns:  # a sink written before rows had ids
        conn.execute("ALTER TABLE predictions ADD COLUMN rid TEXT")
    return conn


class Sink:
    """Queues sampled batches; a daemon thread writes them in transactions."""

    def __init__(
        self,
        path: Path,
        fraction: float,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        capacity: int = 10_000,
        answers: bool = False,
    ) -> None:
        self.path = path
        self.fraction = fraction
        self.answers = answers
        self._queue: queue.Queue[Item] = queue.Queue(capacity)
        self._written = on_written or (lambda n: None)
        self._dropped = on_dropped or (lambda n: None)
        self._random = random.random
        self._conn = connect(path)
        self._thread = threading.Thread(target=self._write_loop, name="mlops-sink", daemon=True)
        self._thread.start()

    def describe(self, model: str, features: tuple[str, ...]) -> None:
        """Record the feature names of a model (read back by `read_sink`); its own
        connection, as the writer thread's transactions are its own."""
        conn = connect(self.path)
        try:
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO features (model, names) VALUES (?, ?)",
                    (model, json.dumps(list(features))),
                )
        finally:
            conn.close()

    def describe_version(self, model: str, version: int, task: str, classes: list[Any]) -> None:
        """Record what a version's answers mean (its task and classes), which `/feedback`
        checks labels against."""
        conn = connect(self.path)
        try:
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO versions (model, version, task, classes) "
                    "VALUES (?, ?, ?, ?)",
                    (model, version, task, json.dumps(classes)),
                )
        finally:
            conn.close()

    def offer(
        self,
        model: str,
        version: int,
        x: np.ndarray,
        body: dict[str, Any],
        ids: list[str] | None = None,
    ) -> None:
        """Queue this request's answers (with `answers`) and, with probability `fraction`,
        its rows (never blocks)."""
        now = time.time()
        if self.answers and ids is not None:
            self._put(Answered(now, model, version, ids, body["predictions"]), len(ids))
        if self.fraction <= 0.0 or (self.fraction < 1.0 and self._random() >= self.fraction):
            return
        item = Sampled(now, model, version, x, body["predictions"], body.get("probabilities"), ids)
        self._put(item, len(x))

    def shadowed(self, model: str, version: int, ids: list[str], predictions: Any) -> None:
        """Queue a shadow challenger's scores of rows the primary answered (never blocks)."""
        self._put(Answered(time.time(), model, version, ids, predictions, SHADOW), len(ids))

    def _put(self, item: Item, rows: int) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped(rows)

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is written (False: not in time)."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread and close the file."""
        self._queue.put(None)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._conn.close()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            items = [item]
            while item is not None and len(items) < 256:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                items.append(item)
            self._write(items)
            for barrier in items:
                if isinstance(barrier, threading.Event):
                    barrier.set()
            if items[-1] is None:
                return

    def _write(self, items: list[Item]) -> None:
        sampled = [row for i in items if isinstance(i, Sampled) for row in _rows(i)]
        answered = [row for i in items if isinstance(i, Answered) for row in _answers(i)]
        if not sampled and not answered:
            return
        try:
            with self._conn:
                self._conn.executemany(INSERT, sampled)
                self._conn.executemany(ANSWER, answered)
            self._written(len(sampled))
        except sqlite3.Error:
            self._dropped(len(sampled) + len(answered))


def _listed(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _rows(b: Sampled) -> list[tuple[Any, ...]]:
    preds = _listed(b.predictions)
    probs = _listed(b.probabilities) if b.probabilities is not None else [None] * len(preds)
    rids = b.ids if b.ids is not None else [None] * len(preds)
    return [
        (b.ts, b.model, b.version, json.dumps(row), json.dumps(pred),
         None if prob is None else json.dumps(prob), rid)
        for row, pred, prob, rid in zip(b.x.tolist(), preds, probs, rids, strict=True)
    ]  # fmt: skip


def _answers(a: Answered) -> list[tuple[Any, ...]]:
    return [
        (rid, a.role, a.ts, a.model, a.version, json.dumps(pred))
        for rid, pred in zip(a.ids, _listed(a.predictions), strict=True)
    ]


def read_sink(path: str | Path, model: str | None = None) -> pd.DataFrame:
    """The sink's rows, oldest first: `ts` (UTC), `model`, `version`, `prediction`, then one
    column per feature (named as the model's training schema names them)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sink file")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        where, args = ("WHERE model = ?", (model,)) if model is not None else ("", ())
        rows = conn.execute(
            f"SELECT ts, model, version, prediction, features FROM predictions {where} ORDER BY id",
            args,
        ).fetchall()
        names = {m: json.loads(n) for m, n in conn.execute("SELECT model, names FROM features")}
    finally:
        conn.close()
    meta = pd.DataFrame(
        [(ts, m, v, json.loads(p)) for ts, m, v, p, _ in rows],
        columns=["ts", "model", "version", "prediction"],
    )
    meta["ts"] = pd.to_datetime(meta["ts"], unit="s", utc=True)
    values = [json.loads(f) for *_, f in rows]
    width = len(values[0]) if values else 0
    columns = names.get(model) if model is not None else None
    if columns is None and len({len(n) for n in names.values()}) == 1:
        columns = next(iter(names.values()))
    if columns is None or len(columns) != width:
        columns = [f"f{i}" for i in range(width)]
    features = pd.DataFrame(values, columns=columns, dtype="float64")
    return pd.concat([meta, features], axis=1)

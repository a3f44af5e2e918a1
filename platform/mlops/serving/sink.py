"""A sampled record of what the server saw and answered, for monitoring (drift).

One SQLite file (WAL), written by one background thread so requests never wait on disk:
a request is sampled with probability `fraction` and all its rows are queued; when the
queue is full, rows are dropped and counted rather than slowing requests down.

Table `predictions`: id, ts (unix seconds), model, version, features (JSON list),
prediction (JSON), probabilities (JSON list or null). Table `features`: the feature names
of each model. `read_sink` returns one column per feature.
"""

from __future__ import annotations

import json
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
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
"""
INSERT = (
    "INSERT INTO predictions (ts, model, version, features, prediction, probabilities) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# (ts, model, version, features, predictions, probabilities or None)
Batch = tuple[float, str, int, Any, Any, Any]


def connect(path: Path) -> sqlite3.Connection:
    """The sink's database, created with its tables (WAL: readers never block the writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
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
    ) -> None:
        self.path = path
        self.fraction = fraction
        self._queue: queue.Queue[Batch | None] = queue.Queue(capacity)
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

    def offer(self, model: str, version: int, x: np.ndarray, body: dict[str, Any]) -> None:
        """Queue this request's rows with probability `fraction` (never blocks)."""
        if self.fraction <= 0.0 or (self.fraction < 1.0 and self._random() >= self.fraction):
            return
        item = (time.time(), model, version, x, body["predictions"], body.get("probabilities"))
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped(len(x))

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
            rows = [row for batch in items if batch is not None for row in _rows(batch)]
            if rows:
                try:
                    with self._conn:
                        self._conn.executemany(INSERT, rows)
                    self._written(len(rows))
                except sqlite3.Error:
                    self._dropped(len(rows))
            if items[-1] is None:
                return


def _rows(batch: Batch) -> list[tuple[Any, ...]]:
    ts, model, version, x, predictions, probabilities = batch
    preds = predictions.tolist() if hasattr(predictions, "tolist") else list(predictions)
    probs = probabilities.tolist() if probabilities is not None else [None] * len(preds)
    return [
        (ts, model, version, json.dumps(row), json.dumps(pred),
         None if prob is None else json.dumps(prob))
        for row, pred, prob in zip(x.tolist(), preds, probs, strict=True)
    ]  # fmt: skip


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

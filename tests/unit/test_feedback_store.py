"""Live labels in the sink (mlops.serving.feedback) and their summary
(mlops.monitoring.performance): answers recorded through the sink's writer thread,
labels checked against the version that answered, the sliding window, the Wilson
interval, a sink written before rows had ids."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mlops.live import WINDOW, labelled, live
from mlops.monitoring.performance import summarise, wilson
from mlops.serving.feedback import Entry, Ids, parse_feedback, store
from mlops.serving.schema import BadRequest
from mlops.serving.sink import Sink, read_sink


def _sink(path: Path, task: str = "classification") -> Sink:
    sink = Sink(path, 0.0, answers=True)
    sink.describe_version("m", 1, task, [0, 1, 2] if task != "regression" else [])
    return sink


def _answer(sink: Sink, ids: Ids, predictions: list[object]) -> list[str]:
    rid = ids.take(len(predictions))
    sink.offer("m", 1, np.zeros((len(predictions), 2), np.float32),
               {"predictions": np.array(predictions)}, rid)  # fmt: skip
    assert sink.sync()
    return rid


def test_ids_are_unique_and_differ_between_processes() -> None:
    a, b = Ids(), Ids()
    taken = a.take(1000) + b.take(1000)
    assert len(set(taken)) == 2000 and a.prefix != b.prefix


def test_the_window_holds_the_most_recent_labels(tmp_path: Path) -> None:
    sink, ids = _sink(tmp_path / "s.db"), Ids()
    rid = _answer(sink, ids, [0, 1, 2, 0, 1, 2])
    store(sink.path, [Entry(i, r, 0) for i, r in enumerate(rid[:3])])  # right, wrong, wrong
    store(sink.path, [Entry(i, r, [1, 2, 0][i]) for i, r in enumerate(rid[3:])])  # wrong x3
    assert live(sink.path, "m", 1, 100) == ("classification", 6, pytest.approx(1 / 6))
    assert live(sink.path, "m", 1, 3) == ("classification", 3, pytest.approx(0.0))
    sink.close()


def test_a_refused_request_writes_nothing_and_the_last_label_wins(tmp_path: Path) -> None:
    sink, ids = _sink(tmp_path / "s.db"), Ids()
    rid = _answer(sink, ids, [2, 2])
    with pytest.raises(BadRequest, match=r"^labels\[1\]\.label: 7 is not a class of m version 1"):
        store(sink.path, [Entry(0, rid[0], 2), Entry(1, rid[1], 7)])
    assert len(labelled(sink.path, "m", 1)) == 0
    assert store(sink.path, [Entry(0, rid[0], 1)]).replaced == 0
    assert store(sink.path, [Entry(0, rid[0], 2.0)]).replaced == 1  # a whole float is the class
    assert labelled(sink.path, "m", 1).labels == [2]
    sink.close()


def test_regression_labels_are_finite_numbers(tmp_path: Path) -> None:
    sink, ids = _sink(tmp_path / "s.db", "regression"), Ids()
    rid = _answer(sink, ids, [1.5, 3.0])
    with pytest.raises(BadRequest, match="predicts a number"):
        store(sink.path, [Entry(0, rid[0], "high")])
    for huge in (math.inf, 1e200):  # 1e200 would overflow the squared error
        with pytest.raises(BadRequest, match="not a finite float32 number"):
            store(sink.path, [Entry(0, rid[0], huge)])
    store(sink.path, [Entry(0, rid[0], 2.5), Entry(1, rid[1], 3.0)])
    task, n, rmse = live(sink.path, "m", 1, 10)
    assert (task, n) == ("regression", 2) and rmse == pytest.approx(math.sqrt(0.5))
    metrics, confusion, trend = summarise(labelled(sink.path, "m", 1), 2)
    assert metrics["mae"] == pytest.approx(0.5) and confusion == [] and len(trend) == 2
    sink.close()


def test_wilson_interval_matches_the_textbook() -> None:
    low, high = wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    assert wilson(0, 0)[0] != wilson(0, 0)[0]  # nan without rows
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(0, 10)[0] == pytest.approx(0.0)


def test_a_sink_written_before_rows_had_ids_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE predictions (id INTEGER PRIMARY KEY, ts REAL NOT NULL, model TEXT NOT NULL,"
        " version INTEGER NOT NULL, features TEXT NOT NULL, prediction TEXT NOT NULL,"
        " probabilities TEXT);"
        "INSERT INTO predictions (ts, model, version, features, prediction) "
        "VALUES (1.0, 'm', 1, '[0.5, 1.5]', '2');"
    )
    conn.commit()
    conn.close()
    sink = Sink(path, 1.0)
    sink.offer("m", 1, np.ones((1, 2), np.float32), {"predictions": np.array([1])}, ["p-1"])
    sink.close()
    frame = read_sink(path, "m")
    assert frame["prediction"].tolist() == [2, 1] and len(frame) == 2


def test_an_id_labelled_twice_in_one_request_is_refused() -> None:
    body = b'{"labels": [{"id": "a-1", "label": 1}, {"id": "a-1", "label": 2}]}'
    with pytest.raises(BadRequest, match=r"^labels\[1\]\.id: 'a-1' is labelled twice"):
        parse_feedback(body, 64)


def test_the_live_window_does_not_sort_every_label(tmp_path: Path) -> None:
    """The window reads the newest labels by their index, so a /feedback costs the same
    with a million labels in the sink as with a thousand."""
    sink = _sink(tmp_path / "s.db")
    conn = sqlite3.connect(sink.path)
    query = "EXPLAIN QUERY PLAN " + WINDOW.format(limit=1000)
    plan = " ".join(str(row[-1]) for row in conn.execute(query, ("m", 1)))
    conn.close()
    sink.close()
    assert "TEMP B-TREE" not in plan and "labels_ts" in plan, plan

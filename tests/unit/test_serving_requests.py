"""The pure parts of `mlops serve`: request validation, the sink, the metrics and the swap
watcher, without a server, a store or torch."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mlops.serving.metrics import NAMES, ServingMetrics
from mlops.serving.schema import BadRequest, InputSpec, check_content_type, parse_request
from mlops.serving.sink import Sink, read_sink
from mlops.serving.swap import State, Watcher

SPEC = InputSpec(("a", "b", "c", "d"), (2, 2), max_batch=3)


def parse(doc: Any) -> np.ndarray:
    return parse_request(doc if isinstance(doc, bytes) else json.dumps(doc).encode(), SPEC)


@pytest.mark.parametrize(
    "doc",
    [
        {"inputs": [[1, 2, 3, 4.5]]},
        {"inputs": [[[1, 2], [3, 4.5]]]},
        {"records": [{"d": 4.5, "c": 3, "b": 2, "a": 1}]},
    ],
)
def test_accepted_forms_give_one_float32_matrix(doc: Any) -> None:
    x = parse(doc)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert x.tolist() == [[1.0, 2.0, 3.0, 4.5]]


@pytest.mark.parametrize(
    ("doc", "status", "needle"),
    [
        (b'{"inputs": [[1,', 400, "invalid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        ({}, 400, "inputs"),
        ({"input": []}, 400, "unknown key 'input'"),
        ({"inputs": [[1, 2, 3, 4]], "records": []}, 400, "both"),
        ({"inputs": {"a": 1}}, 422, "must be a list"),
        ({"inputs": []}, 422, "empty batch"),
        ({"inputs": [[1, 2, 3, 4]] * 4}, 413, "limit of 3"),
        ({"inputs": [[1, 2, 3]]}, 422, "expected 4 values or shape [2, 2]"),
        ({"inputs": [[1, 2, 3, 4], [1]]}, 422, "different lengths"),
        ({"inputs": [[1, 2, "3", 4]]}, 422, '"3" is not a number'),
        ({"inputs": [[1, 2, None, 4]]}, 422, "null is not a number"),
        ({"inputs": [[1, 2, True, 4]]}, 422, "true is not a number"),
        ({"inputs": [[1, 2, 1e39, 4]]}, 422, "float32"),
        ({"inputs": [[1, 2, 10**40, 4]]}, 422, "float32"),
        ({"inputs": [1, 2, 3]}, 422, "list of rows"),
        ({"inputs": [[[[1, 2], [3, 4]]]]}, 422, "nested too deep"),
        ({"records": [[1, 2, 3, 4]]}, 422, "records[0] must be an object"),
        ({"records": [{"a": 1, "b": 2, "c": 3}]}, 422, "missing feature 'd'"),
        ({"records": [{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}]}, 422, "unknown feature 'e'"),
        (b"[" * 2000 + b"]" * 2000, 400, "invalid JSON"),
    ],
)
def test_malformed_bodies_are_refused_in_one_line(doc: Any, status: int, needle: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(doc)
    assert caught.value.status == status
    assert needle in caught.value.message and "\n" not in caught.value.message


def test_oversized_body_and_content_types() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(b" " * (SPEC.max_body_bytes + 1), SPEC)
    assert caught.value.status == 413
    check_content_type("application/json; charset=utf-8")
    for bad in (None, "text/plain", "application/x-www-form-urlencoded"):
        with pytest.raises(BadRequest) as caught:
            check_content_type(bad)
        assert caught.value.status == 415


def _served(version: int) -> Any:
    spec = SimpleNamespace(classes=[0, 1, 2], task="classification")
    features = ("a", "b")
    return SimpleNamespace(
        name="m", version=version, sha256=f"{version:064d}", spec=spec, classification=True,
        input=SimpleNamespace(features=features),
        built=SimpleNamespace(predictor=SimpleNamespace(backend="onnx")),
    )  # fmt: skip


def test_sink_writes_sampled_rows_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    written: list[int] = []
    sink = Sink(path, 1.0, on_written=written.append)
    sink.describe("m", ("a", "b"))
    x = np.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    body = {"predictions": np.asarray([2, 0]), "probabilities": np.full((2, 3), 1 / 3)}
    sink.offer("m", 7, x, body)
    sink.close()
    frame = read_sink(path, "m")
    assert list(frame.columns) == ["ts", "model", "version", "prediction", "a", "b"]
    assert frame[["a", "b"]].to_numpy().tolist() == x.tolist()
    assert frame["prediction"].tolist() == [2, 0] and set(frame["version"]) == {7}
    assert str(frame["ts"].dt.tz) == "UTC" and sum(written) == 2


def test_sink_off_and_full(tmp_path: Path) -> None:
    quiet = Sink(tmp_path / "off.db", 0.0)
    quiet.offer("m", 1, np.zeros((1, 2), np.float32), {"predictions": [0]})
    quiet.close()
    assert read_sink(tmp_path / "off.db").empty
    dropped: list[int] = []
    full = Sink(tmp_path / "full.db", 1.0, on_dropped=dropped.append, capacity=1)
    full._queue.put(None)  # the writer stops: nothing drains the queue
    full._thread.join()
    full.offer("m", 1, np.zeros((1, 2), np.float32), {"predictions": [0]})  # fills it
    full.offer("m", 1, np.zeros((3, 2), np.float32), {"predictions": [0, 0, 0]})
    assert dropped == [3]


def test_metrics_expose_the_names_the_dashboard_reads() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics = ServingMetrics("m")
    metrics.serving(_served(1), "production")
    metrics.answered("/predict", 200, 0.001)
    metrics.answered("/predict", 422, 0.0005)
    metrics.predicted(_served(1), 4, np.asarray([2, 2, 0, 1]))
    metrics.serving(_served(2), "production")
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    samples = {s.name for f in families.values() for s in f.samples}
    for name in NAMES:
        assert name in samples or f"{name}_bucket" in samples, name
    counts = {s.labels["class"]: s.value for s in families["mlops_predictions"].samples}
    assert counts == {"0": 1.0, "1": 1.0, "2": 2.0}
    (info,) = families["mlops_model_info"].samples  # v1's series went with the swap
    assert info.labels["version"] == "2"
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)


def test_watcher_swaps_once_and_keeps_serving_when_a_load_fails() -> None:
    state = State(_served(1), "m@production", "production", ServingMetrics("m"))
    holder = {"version": 1}
    calls: list[int] = []

    def load(version: int) -> Any:
        calls.append(version)
        if version == 3:
            raise ValueError("sha256 differs\nsecond line")
        return _served(version)

    watcher = Watcher(state, lambda: holder["version"], load, poll_s=1.0)
    assert watcher.check() is False and calls == []
    holder["version"] = 2
    assert watcher.check() is True and state.current.version == 2
    assert [(s["from"], s["to"]) for s in state.swaps] == [(1, 2)]
    holder["version"] = 3
    assert watcher.check() is False and watcher.check() is False
    assert calls == [2, 3] and state.current.version == 2  # not retried until it moves
    assert state.poll_error == "v3 not loaded: sha256 differs"

    from mlops.errors import StoreError

    holder["version"] = 4

    def flaky(version: int) -> Any:  # the store is down at the first attempt only
        calls.append(version)
        if calls.count(version) == 1:
            raise StoreError("tracking store: unreachable for 60 s")
        return _served(version)

    flaky_watcher = Watcher(state, lambda: holder["version"], flaky, poll_s=1.0)
    assert flaky_watcher.check() is False and state.current.version == 2
    assert flaky_watcher.check() is True and state.current.version == 4  # retried
    assert calls[-2:] == [4, 4]

    def down() -> int:
        raise ConnectionError("store unreachable")

    outage = Watcher(state, down, load, poll_s=1.0)
    before = time.time()
    assert outage.check() is False and state.poll_error == "store unreachable"
    assert state.last_poll is not None and state.last_poll <= before

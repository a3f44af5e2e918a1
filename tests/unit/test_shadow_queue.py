"""The shadow challenger's queue (mlops.serving.challenger.Shadow): a request is never
held up by the shadow; what it cannot keep up with is dropped and counted; what it
scores is scored in windows (one model call for the requests of a window), each row's
score recorded under the id the primary gave it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops.serving.challenger import Shadow, parse_canary
from mlops.serving.metrics import ServingMetrics


@dataclass
class _Stalled:
    """A challenger version whose model call waits until released (a slow shadow)."""

    version: int = 2
    name: str = "m"
    classification: bool = False  # ServingMetrics.predicted: no classes to count
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[int] = field(default_factory=list)

    def predict(self, x: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        self.release.wait(10)
        self.calls.append(len(x))
        return {"predictions": x[:, 0].astype(int)}, x[:, 0].astype(int)


@dataclass
class _State:
    current: _Stalled


@dataclass
class _Sink:
    answers: bool = True
    scored: list[tuple[list[str], list[int]]] = field(default_factory=list)

    def shadowed(self, model: str, version: int, ids: list[str], predictions: Any) -> None:
        self.scored.append((ids, list(predictions)))


def _value(metrics: ServingMetrics, name: str) -> float:
    return float(metrics.registry.get_sample_value(name) or 0.0)


def test_a_slow_shadow_drops_and_counts_and_never_holds_a_request_up() -> None:
    challenger, metrics, sink = _Stalled(), ServingMetrics("m"), _Sink()
    shadow = Shadow(_State(challenger), metrics, sink, capacity=2)  # type: ignore[arg-type]
    primary = _State(_Stalled(version=1)).current
    begin = time.perf_counter()
    for i in range(20):
        shadow.offer(primary, np.full((3, 1), i, np.float32), [f"r{i}-{k}" for k in range(3)])  # type: ignore[arg-type]
    # the stalled shadow holds its call for 10 s: an offer that waited would show it
    assert time.perf_counter() - begin < 5.0
    assert _value(metrics, "mlops_shadow_dropped_total") >= 3 * 16
    challenger.release.set()
    shadow.close()
    scored = _value(metrics, "mlops_shadow_scored_total")
    assert scored + _value(metrics, "mlops_shadow_dropped_total") == 60
    ids = [i for part, _ in sink.scored for i in part]
    predictions = [p for _, part in sink.scored for p in part]
    assert len(ids) == scored and all(int(i[1:].split("-")[0]) == p for i, p in
                                      zip(ids, predictions, strict=True))  # fmt: skip


def test_requests_of_a_window_are_scored_in_one_call() -> None:
    challenger, metrics = _Stalled(), ServingMetrics("m")
    challenger.release.set()
    shadow = Shadow(_State(challenger), metrics, _Sink())  # type: ignore[arg-type]
    primary = _Stalled(version=1)
    for i in range(10):
        shadow.offer(primary, np.full((1, 1), i, np.float32), [f"r{i}"])  # type: ignore[arg-type]
    shadow.close()
    assert sum(challenger.calls) == 10 and len(challenger.calls) < 10, challenger.calls


def test_a_shadow_of_the_same_version_is_not_asked() -> None:
    challenger, metrics = _Stalled(version=1), ServingMetrics("m")
    challenger.release.set()
    shadow = Shadow(_State(challenger), metrics, _Sink())  # type: ignore[arg-type]
    shadow.offer(challenger, np.ones((2, 1), np.float32), ["a", "b"])  # type: ignore[arg-type]
    shadow.close()
    assert challenger.calls == [] and _value(metrics, "mlops_shadow_scored_total") == 0


def test_canary_shares_are_read_as_percentages() -> None:
    assert parse_canary("digits@staging:10%") == ("digits@staging", 0.1)
    assert parse_canary(" digits@3:2.5% ") == ("digits@3", 0.025)

"""A challenger beside the served version, on live traffic.

`--shadow digits@staging`: every answered request is scored by the challenger too, off
the response path. The rows go to a bounded queue that one thread drains; when it is
full the request's rows are dropped and counted (`mlops_shadow_dropped_total`), never
waited for. The challenger's scores are recorded in the sink beside the answers (role
`shadow`, the same row ids), so labels sent to `/feedback` score both versions and the
registry can compare them pair by pair (`mlops registry compare --live`).

`--canary digits@staging:10%`: each request is answered by the challenger with that
probability instead; its answers carry its version, in the body, the sink and the
metrics.

Either way the challenger follows its stage with the same hot swap as the primary (its
own `State` and watcher). A challenger that holds the primary's version is not asked.
"""

from __future__ import annotations

import logging
import queue
import random
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from mlops.serving.metrics import ServingMetrics
    from mlops.serving.model import Served
    from mlops.serving.sink import Sink
    from mlops.serving.swap import State

log = logging.getLogger("mlops.serve")
SHADOW_QUEUE = 256  # requests waiting for the shadow; beyond it they are dropped
_CANARY = re.compile(r"^(?P<target>.+):(?P<share>[0-9]+(\.[0-9]+)?)%$")


def parse_canary(text: str) -> tuple[str, float]:
    """`digits@staging:10%` as (`digits@staging`, 0.10); one line when it is not that."""
    found = _CANARY.match(text.strip())
    share = float(found["share"]) if found else -1.0
    if found is None or not 0.0 < share < 100.0:
        raise UserError(
            f"--canary {text!r}: expected MODEL@STAGE:PERCENT% with 0 < PERCENT < 100 "
            "(e.g. digits@staging:10%)"
        )
    return found["target"], share / 100.0


@dataclass
class Canary:
    """Answers a `share` of requests from the challenger's current version."""

    state: State
    share: float
    draw: Any = field(default_factory=lambda: random.Random().random)

    def pick(self, primary: Served) -> Served:
        """The version that answers this request."""
        if self.draw() < self.share:
            return self.state.current
        return primary


class Shadow:
    """Scores answered requests with the challenger, in a thread of its own."""

    def __init__(
        self,
        state: State,
        metrics: ServingMetrics,
        sink: Sink | None,
        capacity: int = SHADOW_QUEUE,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.sink = sink
        self._queue: queue.Queue[tuple[int, np.ndarray, list[str]] | None] = queue.Queue(capacity)
        self._thread = threading.Thread(target=self._loop, name="mlops-shadow", daemon=True)
        self._thread.start()

    def offer(self, primary: Served, x: np.ndarray, ids: list[str]) -> None:
        """Queue a request the primary answered (never blocks; full: dropped, counted)."""
        try:
            self._queue.put_nowait((primary.version, x, ids))
        except queue.Full:
            self.metrics.shadow_dropped.inc(len(x))

    def close(self, timeout: float = 10.0) -> None:
        """Score what is queued, then stop."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            primary, x, ids = item
            served = self.state.current
            if served.version == primary:
                continue  # the challenger's stage holds the primary's version: nothing to compare
            try:
                body, index = served.predict(x)
            except Exception:  # the shadow never takes the server down
                log.exception("shadow v%s failed on a request", served.version)
                self.metrics.shadow_dropped.inc(len(x))
                continue
            self.metrics.predicted(served, len(x), index)
            self.metrics.shadow_scored.inc(len(x))
            if self.sink is not None and self.sink.answers:
                self.sink.shadowed(served.name, served.version, ids, body["predictions"])

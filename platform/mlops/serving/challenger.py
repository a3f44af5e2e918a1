"""A challenger beside the served version, on live traffic.

`--shadow digits@staging`: every answered request is scored by the challenger too, off
the response path. The rows go to a bounded queue that one thread drains, scoring what
arrived within 20 ms as one model call; when the queue is full the request's rows are
dropped and counted (`mlops_shadow_dropped_total`), never waited for. The challenger's
scores are recorded in the sink beside the answers (role `shadow`, the same row ids), so
labels sent to `/feedback` score both versions and the
registry can compare them pair by pair (`mlops registry compare --live`).

`--canary digits@staging:10%`: each request is answered by the challenger with that
probability instead; its answers carry its version, in the body, the sink and the
metrics.

Either way the challenger follows its stage with the same hot swap as the primary (its
own `State` and watcher). A challenger that holds the primary's version is not asked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mlops.errors import UserError

if TYPE_CHECKING:
    from mlops.serving.metrics import ServingMetrics
    from mlops.serving.model import Served
    from mlops.serving.sink import Sink


class State(Protocol):
    """What a challenger reads of its own `mlops.serving.swap.State` (which it cannot
    import: that state holds the challenger)."""

    current: Served
    role: str
    target: str
    swaps: list[dict[str, Any]]
    poll_error: str | None


log = logging.getLogger("mlops.serve")
SHADOW_QUEUE = 256  # requests waiting for the shadow; beyond it they are dropped
# The shadow scores what arrived within this window as one model call (at most
# SHADOW_ROWS rows): far less CPU than a call per request, taken from the primary's cores.
SHADOW_WINDOW_S = 0.02
SHADOW_ROWS = 256
SWITCH_S = 0.0005
_CANARY = re.compile(r"^(?P<target>.+):(?P<share>[0-9]+(\.[0-9]+)?)%$")


def _lowest_priority() -> None:
    """Give this thread the lowest CPU priority (Linux: a thread's own nice value), so
    the shadow takes only the CPU the primary leaves; nothing happens where that cannot
    be set."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


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
        # A thread that wants the GIL waits for the holder to let go at most this long: the
        # default 5 ms would let the shadow's Python hold up the primary's answer.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_S))
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

    def settle(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until what was queued before now is scored and
        handed to the sink; False if it was not done in time."""
        q, deadline = self._queue, time.monotonic() + timeout
        with q.all_tasks_done:
            while q.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                q.all_tasks_done.wait(left)
        return True

    def _loop(self) -> None:
        _lowest_priority()
        while (batch := self._gather()) is not None:
            served = self.state.current
            # The challenger's stage may hold the primary's version: nothing to compare.
            other = [(x, ids) for version, x, ids in batch if version != served.version]
            try:
                if other:
                    self._score(served, other)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _gather(self) -> list[tuple[int, np.ndarray, list[str]]] | None:
        """The requests queued within SHADOW_WINDOW_S of the first (None: stop)."""
        first = self._queue.get()
        if first is None:
            self._queue.task_done()
            return None
        batch, rows = [first], len(first[1])
        deadline = time.monotonic() + SHADOW_WINDOW_S
        while rows < SHADOW_ROWS and (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                self._queue.task_done()
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
            rows += len(item[1])
        return batch

    def _score(self, served: Served, batch: list[tuple[np.ndarray, list[str]]]) -> None:
        xs = [x for x, _ in batch]
        ids = [i for _, part in batch for i in part]
        rows = len(ids)
        try:
            body, index = served.predict(xs[0] if len(xs) == 1 else np.concatenate(xs))
        except Exception:  # the shadow never takes the server down
            log.exception("shadow v%s failed on %d rows", served.version, rows)
            self.metrics.shadow_dropped.inc(rows)
            return
        self.metrics.predicted(served, rows, index)
        self.metrics.shadow_scored.inc(rows)
        if self.sink is not None and self.sink.answers:
            self.sink.shadowed(served.name, served.version, ids, body["predictions"])

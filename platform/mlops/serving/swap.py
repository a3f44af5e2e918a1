"""Hot swap: the served version is one reference, replaced atomically.

A request reads `State.current` once when it starts, so requests in flight finish on the
version they started with. When the stage's holder moves (a promotion or a rollback),
the `Watcher` thread loads the new version (download, sha256 check, backend build,
warm-up) while the old one keeps serving, then swaps the reference. A version that
fails to load (integrity, conversion) is not retried until the holder moves again; one
that could not be fetched because the store was unreachable is retried at the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.errors import StoreError
from mlops.live import live

if TYPE_CHECKING:
    from mlops.serving.challenger import Canary, Shadow
    from mlops.serving.challenger import State as Challenger
    from mlops.serving.metrics import ServingMetrics
    from mlops.serving.model import Served
    from mlops.serving.sink import Sink

log = logging.getLogger("mlops.serve")


@dataclass
class State:
    """What the app serves: the current version (swapped whole) and its surroundings."""

    current: Served
    target: str
    stage: str | None
    metrics: ServingMetrics
    sink: Sink | None = None
    poll_s: float = 0.0
    live_window: int = 1000  # labelled answers /metrics' live accuracy is computed over
    role: str = "primary"  # or the challenger's: shadow, canary
    batch_max: int = 0  # rows a coalesced model call may hold (0: no batching)
    batch_wait_ms: float = 2.0  # the most a request waits for company
    shadow: Shadow | None = None  # the primary's shadow challenger (--shadow)
    canary: Canary | None = None  # the primary's canary challenger (--canary)
    swaps: list[dict[str, Any]] = field(default_factory=list)
    last_poll: float | None = None
    poll_error: str | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def challenger(self) -> Challenger | None:
        """The state of the `--shadow` or `--canary` version beside this one, or None."""
        if self.shadow is not None:
            return self.shadow.state
        return self.canary.state if self.canary is not None else None

    def refresh_live(self, served: Served) -> None:
        """Set a version's live window on /metrics from the labels already in the sink
        (at start-up and at a swap, not only at the next label)."""
        if self.sink is None or not self.sink.answers:
            return
        task, n, value = live(self.sink.path, served.name, served.version, self.live_window)
        if n:
            self.metrics.live(served.name, served.version, task, n, value)

    def swap(self, new: Served) -> None:
        """Serve `new` from the next request on (one reference assignment)."""
        old = self.current
        self.metrics.serving(new, self.stage, self.role)
        if self.sink is not None:
            self.sink.describe(new.name, new.input.sink_names)
            self.sink.describe_version(new.name, new.version, new.spec.task, new.spec.classes)
            self.refresh_live(new)
        self.current = new
        self.swaps.append({"from": old.version, "to": new.version, "at": time.time(),
                           "sha256": new.sha256})  # fmt: skip
        self.metrics.swaps.inc()
        log.info(
            "swapped %s v%s → v%s (%s, sha256 %s verified)", new.name, old.version,
            new.version, self.stage, new.sha256[:12],
        )  # fmt: skip


class Watcher(threading.Thread):
    """Polls the stage's holder every `poll_s` seconds and swaps in a new holder."""

    def __init__(
        self,
        state: State,
        holder: Callable[[], int | None],
        load: Callable[[int], Served],
        poll_s: float,
    ) -> None:
        super().__init__(name="mlops-swap", daemon=True)
        self.state = state
        self._holder = holder
        self._load = load
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._failed: int | None = None
        self._failure: str | None = None

    def run(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.check()

    def stop(self) -> None:
        """Stop polling (a load in progress finishes first)."""
        self._stop.set()

    def check(self) -> bool:
        """One poll: swap if the holder moved to a loadable version; True if swapped."""
        state = self.state
        try:
            wanted = self._holder()
        except Exception as exc:  # a store outage: keep serving, say so in /metadata
            state.poll_error = _line(exc)
            return False
        state.last_poll = time.time()
        if wanted is None:
            empty = f"no version holds {state.stage}; still serving the last one"
            if state.poll_error != empty:
                log.warning("%s (%s v%s)", empty, state.role, state.current.version)
            state.poll_error = empty
            return False
        if wanted in (state.current.version, self._failed):
            state.poll_error = self._failure if wanted == self._failed else None
            return False
        log.info("%s: %s now held by v%s; loading it", state.current.name, state.stage, wanted)
        try:
            new = self._load(wanted)
        except Exception as exc:  # DataError (sha256), StoreError, conversion failures
            failure = f"v{wanted} not loaded: {_line(exc)}"
            if not isinstance(exc, StoreError):  # a store outage is retried at the next poll
                self._failed, self._failure = wanted, failure
            state.metrics.swap_failures.inc()
            state.poll_error = failure
            log.error("%s v%s not loaded, still serving v%s: %s", state.current.name, wanted,
                      state.current.version, _line(exc))  # fmt: skip
            return False
        if self._stop.is_set():
            return False
        state.swap(new)
        return True


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

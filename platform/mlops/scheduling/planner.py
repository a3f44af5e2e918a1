"""What a due schedule should do now: pure logic, no I/O, no clock of its own.

A schedule records its next fire time. When that time has passed, every fire time
up to now is coalesced into at most one run: on time if the latest one passed less
than `LATE_S` ago, a catch-up (the scheduler was down or busy) if it is still within
the schedule's grace window, otherwise missed (recorded, not run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LATE_S = 60.0  # a firing this late is a catch-up, not a scheduled run
MAX_COUNTED = 10_000  # missed fire times counted one by one, at most


@dataclass(frozen=True)
class Firing:
    """One decision: run (or record as missed) the fire time `fire_time`."""

    fire_time: float
    kind: str  # scheduled | catch-up | missed
    coalesced: int  # earlier fire times folded into this one
    next_fire_at: float | None


def due(
    next_fire_at: float | None,
    now: float,
    next_after: Callable[[float], float | None],
    grace: float,
) -> Firing | None:
    """The firing for a schedule whose next fire time is `next_fire_at`, or None when
    it is not due yet (or never fires)."""
    if next_fire_at is None or next_fire_at > now:
        return None
    latest, seen = next_fire_at, 1
    following = next_after(latest)
    while following is not None and following <= now:
        if seen >= MAX_COUNTED:
            # Far behind: jump to the last fire time before now without counting.
            following = _last_before(now, latest, next_after)
            latest, following = following, next_after(following)
            break
        latest, following, seen = following, next_after(following), seen + 1
    late = now - latest
    if late > grace:
        kind = "missed"
    elif late > LATE_S:
        kind = "catch-up"
    else:
        kind = "scheduled"
    return Firing(latest, kind, seen - 1, following)


def _last_before(now: float, start: float, next_after: Callable[[float], float | None]) -> float:
    """The last fire time at or before `now`, searched backwards by doubling steps."""
    step = 60.0
    while True:
        probe = max(start, now - step)
        found = next_after(probe - 1)
        if found is not None and found <= now:
            last = found
            while (nxt := next_after(last)) is not None and nxt <= now:
                last = nxt
            return last
        if probe == start:
            return start
        step *= 2

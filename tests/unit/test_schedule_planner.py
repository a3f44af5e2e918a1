"""The due-schedule decision: on time, catch-up, missed, coalescing, long downtime."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from mlops.scheduling.cron import Timetable
from mlops.scheduling.planner import LATE_S, MAX_COUNTED, Firing, due

HOUR = 3600.0
DAY = 86400.0
T0 = 300.0 * 5_666_667  # 2023-11-14 22:15:00 UTC, a multiple of 300 s (and of 60 s)


def ts(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def every(period: float) -> Callable[[float], float | None]:
    """Fire at every multiple of `period` epoch seconds: the first one strictly after."""

    def next_after(when: float) -> float | None:
        return (math.floor(when / period) + 1) * period

    return next_after


class Counting:
    """Wraps a next_after and counts the calls (bounded work, not wall-clock time)."""

    def __init__(self, inner: Callable[[float], float | None]) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, when: float) -> float | None:
        self.calls += 1
        return self.inner(when)


def test_constants() -> None:
    assert LATE_S == 60.0
    assert MAX_COUNTED == 10_000


def test_every_helper_is_strictly_after() -> None:
    step = every(300)
    assert step(T0) == T0 + 300
    assert step(T0 - 0.5) == T0
    assert step(T0 + 299.5) == T0 + 300


# --- not due -------------------------------------------------------------------------


def test_no_next_fire_time_is_never_due() -> None:
    assert due(None, T0, every(300), grace=HOUR) is None
    assert due(None, T0 + 365 * DAY, every(300), grace=HOUR) is None


@pytest.mark.parametrize("before", [1.0, 0.001, 299.0])
def test_not_due_before_the_fire_time(before: float) -> None:
    assert due(T0, T0 - before, every(300), grace=HOUR) is None


def test_not_due_before_the_fire_time_real_timetable() -> None:
    table = Timetable.of("0 2 * * *", "Europe/Paris")
    fire = table.next_after(ts(2024, 1, 14, 12))
    assert fire == ts(2024, 1, 15, 1)
    assert due(fire, fire - 1, table.next_after, grace=HOUR) is None


# --- on time -------------------------------------------------------------------------


@pytest.mark.parametrize("late", [0.0, 0.5, 30.0, LATE_S])
def test_scheduled_at_or_just_after(late: float) -> None:
    got = due(T0, T0 + late, every(300), grace=HOUR)
    assert got == Firing(T0, "scheduled", 0, T0 + 300)


def test_scheduled_real_timetable() -> None:
    table = Timetable.of("0 2 * * *", "Europe/Paris")
    fire = ts(2024, 1, 15, 1)  # 02:00 CET
    got = due(fire, fire + 5, table.next_after, grace=HOUR)
    assert got == Firing(fire, "scheduled", 0, ts(2024, 1, 16, 1))


# --- catch-up / missed ---------------------------------------------------------------


@pytest.mark.parametrize("late", [LATE_S + 1, 120.0, 200.0])
def test_catch_up_from_61_s_up_to_grace(late: float) -> None:
    got = due(T0, T0 + late, every(300), grace=200.0)
    assert got == Firing(T0, "catch-up", 0, T0 + 300)


@pytest.mark.parametrize("late", [200.5, 250.0, 299.0])
def test_missed_beyond_grace(late: float) -> None:
    got = due(T0, T0 + late, every(300), grace=200.0)
    assert got == Firing(T0, "missed", 0, T0 + 300)


def test_catch_up_and_missed_real_timetable() -> None:
    table = Timetable.of("0 2 * * *", "Europe/Paris")
    fire = ts(2024, 1, 15, 1)
    now = fire + 10 * 60
    assert due(fire, now, table.next_after, grace=HOUR) == Firing(
        fire, "catch-up", 0, ts(2024, 1, 16, 1)
    )
    assert due(fire, now, table.next_after, grace=300.0) == Firing(
        fire, "missed", 0, ts(2024, 1, 16, 1)
    )


def test_lateness_is_measured_from_the_latest_fire_time_not_the_first() -> None:
    # Down from T0 to T0 + 930: the latest fire time (T0 + 900) is only 30 s late.
    got = due(T0, T0 + 930, every(300), grace=100.0)
    assert got == Firing(T0 + 900, "scheduled", 3, T0 + 1200)


# --- coalescing ----------------------------------------------------------------------


def test_coalesced_after_downtime_real_timetable() -> None:
    table = Timetable.of("*/5 * * * *", "UTC")
    first = ts(2024, 1, 1, 10, 0)
    now = ts(2024, 1, 1, 10, 26)  # down 26 minutes: 10:00 ... 10:25 all passed
    got = due(first, now, table.next_after, grace=HOUR)
    assert got == Firing(ts(2024, 1, 1, 10, 25), "scheduled", 5, ts(2024, 1, 1, 10, 30))


def test_coalesced_catch_up_real_timetable() -> None:
    table = Timetable.of("*/5 * * * *", "UTC")
    first = ts(2024, 1, 1, 10, 0)
    now = ts(2024, 1, 1, 10, 28)
    got = due(first, now, table.next_after, grace=HOUR)
    assert got == Firing(ts(2024, 1, 1, 10, 25), "catch-up", 5, ts(2024, 1, 1, 10, 30))


def test_fire_time_exactly_now_is_included() -> None:
    got = due(T0, T0 + 600, every(300), grace=HOUR)
    assert got == Firing(T0 + 600, "scheduled", 2, T0 + 900)


def test_coalesced_then_missed_when_latest_is_beyond_grace() -> None:
    # A daily schedule, down for 3 days and 5 hours, with one hour of grace.
    table = Timetable.of("@daily", "UTC")
    first = ts(2024, 1, 1)
    got = due(first, ts(2024, 1, 4, 5), table.next_after, grace=HOUR)
    assert got == Firing(ts(2024, 1, 4), "missed", 3, ts(2024, 1, 5))


# --- very long downtime --------------------------------------------------------------


def test_thirty_days_per_minute_is_capped() -> None:
    per_minute = Counting(every(60))
    now = T0 + 30 * DAY + 30
    got = due(T0, now, per_minute, grace=HOUR)
    assert got is not None
    assert got.fire_time == T0 + 30 * DAY  # the last minute at or before now
    assert got.kind == "scheduled"
    assert got.next_fire_at == T0 + 30 * DAY + 60
    assert MAX_COUNTED - 1 <= got.coalesced <= 30 * 24 * 60
    # Bounded work: no walk over all 43,200 minutes.
    assert per_minute.calls <= MAX_COUNTED + 200


def test_sixty_days_every_5_minutes_unaligned_now() -> None:
    # 17,280 fire times > MAX_COUNTED; `now` falls between two of them.
    every_5 = Counting(every(300))
    now = T0 + 60 * DAY + 123
    got = due(T0, now, every_5, grace=HOUR)
    assert got is not None
    assert got.fire_time == T0 + 60 * DAY
    assert got.kind == "catch-up"
    assert got.next_fire_at == T0 + 60 * DAY + 300
    assert MAX_COUNTED - 1 <= got.coalesced <= 60 * 24 * 12
    assert every_5.calls <= MAX_COUNTED + 200


def test_long_downtime_with_sparse_schedule_finds_last_fire_time() -> None:
    # Hourly for two years: the backward search has to double its step many times.
    hourly = every(HOUR)
    start = math.ceil(T0 / HOUR) * HOUR
    now = start + 730 * DAY + 1800
    got = due(start, now, hourly, grace=HOUR)
    assert got is not None
    assert got.fire_time == start + 730 * DAY
    assert got.kind == "catch-up"
    assert got.next_fire_at == start + 730 * DAY + HOUR


def test_just_under_the_cap_counts_exactly() -> None:
    got = due(T0, T0 + (MAX_COUNTED - 1) * 60.0, every(60), grace=HOUR)
    assert got == Firing(
        T0 + (MAX_COUNTED - 1) * 60.0, "scheduled", MAX_COUNTED - 1, T0 + MAX_COUNTED * 60.0
    )


# --- schedules that stop firing ------------------------------------------------------


def test_never_fires_again() -> None:
    def never(_when: float) -> float | None:
        return None

    assert due(T0, T0 + 10, never, grace=HOUR) == Firing(T0, "scheduled", 0, None)
    assert due(T0, T0 + 2 * HOUR, never, grace=HOUR) == Firing(T0, "missed", 0, None)
    assert due(None, T0, never, grace=HOUR) is None


def test_schedule_that_ends_during_downtime() -> None:
    # Fires T0, +300, ..., +1200 and then never.
    def until_end(when: float) -> float | None:
        nxt = every(300)(when)
        return nxt if nxt is not None and nxt <= T0 + 1200 else None

    got = due(T0, T0 + DAY, until_end, grace=HOUR)
    assert got == Firing(T0 + 1200, "missed", 4, None)


def test_february_30_never_has_a_next_fire_time() -> None:
    table = Timetable.of("0 0 30 2 *", "UTC")
    nxt = table.next_after(ts(2024, 1, 1))
    assert nxt is None
    assert due(nxt, ts(2030, 1, 1), table.next_after, grace=HOUR) is None

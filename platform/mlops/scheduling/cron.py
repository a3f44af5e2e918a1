"""Standard cron expressions, checked and turned into fire times.

Five fields (minute hour day-of-month month day-of-week) with `*`, lists, ranges,
steps and names (`jan`, `mon-fri`); day-of-week 0 and 7 are both Sunday; macros
`@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually`. As in
Vixie cron, when both day fields are restricted a day matching either one fires.

APScheduler 3 computes the fire times (time zones, DST), but its own `from_crontab`
reads day-of-week 0 as Monday, so fields are expanded here and handed over as
explicit values: minutes and days as numbers, weekdays by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from tzlocal import get_localzone_name

from mlops.errors import UserError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# name, low, high, names (index + low = value)
_FIELDS: list[tuple[str, int, int, list[str]]] = [
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day-of-month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
]


@dataclass(frozen=True)
class Cron:
    """A checked expression: the values each field allows (day-of-week 0 = Sunday)."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    days_restricted: bool
    weekdays_restricted: bool


def _value(text: str, field: str, low: int, high: int, names: list[str]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + low
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{field}: {text!r} is not a number" + (" or a name" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{field}: {value} is outside {low}-{high}")
    return value


def _expand(text: str, field: str, low: int, high: int, names: list[str]) -> set[int]:
    found: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f"{field}: empty item in {text!r}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise ValueError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = (_value(a, field, low, high, names), _value(b, field, low, high, names))
            if first > last:
                raise ValueError(f"{field}: range {base!r} runs backwards")
        else:
            first = _value(base, field, low, high, names)
            last = high if slash else first
        found.update(range(first, last + 1, step))
    return found


def parse(expression: str) -> Cron:
    """Check `expression`; a `UserError` names the bad field."""
    text = " ".join(expression.split())
    fields = MACROS.get(text.lower(), text).split(" ")
    if text.startswith("@") and text.lower() not in MACROS:
        known = ", ".join(MACROS)
        raise UserError(f"cron {expression!r}: unknown macro (known: {known})")
    if len(fields) != 5:
        raise UserError(
            f"cron {expression!r}: expected 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    try:
        values = [_expand(f, *spec) for f, spec in zip(fields, _FIELDS, strict=True)]
    except ValueError as exc:
        raise UserError(f"cron {expression!r}: {exc}") from None
    weekdays = {d % 7 for d in values[4]}  # 7 is Sunday too
    return Cron(
        text,
        tuple(sorted(values[0])),
        tuple(sorted(values[1])),
        tuple(sorted(values[2])),
        tuple(sorted(values[3])),
        tuple(sorted(weekdays)),
        days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"),
    )


def check_timezone(name: str) -> str:
    """An IANA time zone name, checked."""

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(
            f"timezone {name!r}: unknown (use an IANA name like Europe/Paris)"
        ) from None
    return name


def local_timezone() -> str:
    """This machine's IANA time zone name (UTC if it cannot be told)."""
    try:
        return get_localzone_name() or "UTC"
    except Exception:  # an odd /etc/localtime is not worth failing over
        return "UTC"


def _numbers(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def trigger(cron: Cron, timezone: str) -> Any:
    """The APScheduler trigger that fires when `cron` does, in `timezone`."""

    tz = ZoneInfo(timezone)
    common: dict[str, Any] = {"minute": _numbers(cron.minutes), "hour": _numbers(cron.hours)}
    common |= {"month": _numbers(cron.months), "timezone": tz}
    # A field starting with `*` (`*/2` too) is "unrestricted" for the OR rule below, but
    # its values still apply.
    days = "*" if len(cron.days) == 31 else _numbers(cron.days)
    weekdays = "*" if len(cron.weekdays) == 7 else ",".join(_DAYS[d] for d in cron.weekdays)
    if cron.days_restricted and cron.weekdays_restricted:
        return OrTrigger(
            [
                CronTrigger(day=days, day_of_week="*", **common),
                CronTrigger(day="*", day_of_week=weekdays, **common),
            ]
        )
    return CronTrigger(day=days, day_of_week=weekdays, **common)


def _repeated(local: datetime) -> bool:
    """True when this wall-clock time also happened an hour earlier (clocks went back)."""
    first = local.replace(fold=0)
    return first.utcoffset() != local.utcoffset()


@dataclass(frozen=True)
class Timetable:
    """When a schedule fires: the expression in a time zone."""

    cron: Cron
    timezone: str

    @classmethod
    def of(cls, expression: str, timezone: str) -> Timetable:
        """Check both; one-line `UserError` otherwise."""
        return cls(parse(expression), check_timezone(timezone))

    @cached_property
    def _trigger(self) -> Any:
        return trigger(self.cron, self.timezone)

    def next_after(self, when: float) -> float | None:
        """The first fire time strictly after `when` (epoch seconds), None if never.

        When clocks go back, a job at a fixed hour runs in the first of the two repeated
        hours only (as in Vixie cron); a job on every hour runs in both.
        """

        tz = ZoneInfo(self.timezone)
        at = float(int(when)) + 1.0  # fire times are whole minutes; `fold` kept by fromtimestamp
        while True:
            found = self._trigger.get_next_fire_time(None, datetime.fromtimestamp(at, tz))
            if found is None:
                return None
            ts = float(found.timestamp())
            if ts <= when:  # never go backwards, whatever the library does around DST
                at = max(at, when) + 60.0
                continue
            if found.fold == 1 and len(self.cron.hours) < 24 and _repeated(found):
                at = ts + 1.0
                continue
            return ts

    def upcoming(self, after: float, count: int = 5) -> list[float]:
        """The next `count` fire times after `after`."""
        times: list[float] = []
        at: float | None = after
        while at is not None and len(times) < count:
            at = self.next_after(at)
            if at is not None:
                times.append(at)
        return times

    def format(self, when: float) -> str:
        """A fire time as people read it, in the schedule's time zone."""
        return format_time(when, self.timezone)


def format_time(when: float, timezone: str) -> str:
    """A time as people read it, in `timezone` (e.g. `2026-11-30 02:00 CET (Mon)`)."""

    return datetime.fromtimestamp(when, ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z (%a)")

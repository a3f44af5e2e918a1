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
from datetime import datetime, timedelta
from typing import Any

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
    if not text.isdigit():
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
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
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
            last = high if step_text else first
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
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
        from tzlocal import get_localzone_name

        return get_localzone_name() or "UTC"
    except Exception:  # an odd /etc/localtime is not worth failing over
        return "UTC"


def _numbers(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def trigger(cron: Cron, timezone: str) -> Any:
    """The APScheduler trigger that fires when `cron` does, in `timezone`."""
    from zoneinfo import ZoneInfo

    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    tz = ZoneInfo(timezone)
    common: dict[str, Any] = {"minute": _numbers(cron.minutes), "hour": _numbers(cron.hours)}
    common |= {"month": _numbers(cron.months), "timezone": tz}
    days = _numbers(cron.days) if cron.days_restricted else "*"
    weekdays = ",".join(_DAYS[d] for d in cron.weekdays) if cron.weekdays_restricted else "*"
    if cron.days_restricted and cron.weekdays_restricted:
        return OrTrigger(
            [
                CronTrigger(day=days, day_of_week="*", **common),
                CronTrigger(day="*", day_of_week=weekdays, **common),
            ]
        )
    return CronTrigger(day=days, day_of_week=weekdays, **common)


@dataclass(frozen=True)
class Timetable:
    """When a schedule fires: the expression in a time zone."""

    cron: Cron
    timezone: str

    @classmethod
    def of(cls, expression: str, timezone: str) -> Timetable:
        """Check both; one-line `UserError` otherwise."""
        return cls(parse(expression), check_timezone(timezone))

    def next_after(self, when: float) -> float | None:
        """The first fire time strictly after `when` (epoch seconds), None if never."""
        from zoneinfo import ZoneInfo

        tz = ZoneInfo(self.timezone)
        start = datetime.fromtimestamp(when, tz) + timedelta(seconds=1)
        start = start.replace(microsecond=0)
        found = trigger(self.cron, self.timezone).get_next_fire_time(None, start)
        return None if found is None else float(found.timestamp())

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
        from zoneinfo import ZoneInfo

        return datetime.fromtimestamp(when, ZoneInfo(self.timezone)).strftime(
            "%Y-%m-%d %H:%M %Z (%a)"
        )

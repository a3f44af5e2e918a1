"""Cron expressions: parsing, fire times (UTC and a DST zone) and one-line errors."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from mlops.errors import UserError
from mlops.scheduling.cron import Timetable, check_timezone, parse

PARIS = "Europe/Paris"


def ts(*parts: int) -> float:
    """Epoch seconds of a UTC wall-clock time."""
    return datetime(*parts, tzinfo=UTC).timestamp()


def utc(when: float) -> datetime:
    return datetime.fromtimestamp(when, UTC)


def fires(expression: str, after: float, count: int, tz: str = "UTC") -> list[datetime]:
    return [utc(t) for t in Timetable.of(expression, tz).upcoming(after, count)]


# 2024-01-01 is a Monday.
MONDAY = ts(2024, 1, 1)


# --- day of week -------------------------------------------------------------------


@pytest.mark.parametrize("expression", ["0 2 * * 0", "0 2 * * 7", "0 2 * * sun", "0 2 * * SUN"])
def test_sunday_is_0_7_and_sun(expression: str) -> None:
    got = fires(expression, MONDAY, 2)
    assert got == [datetime(2024, 1, 7, 2, tzinfo=UTC), datetime(2024, 1, 14, 2, tzinfo=UTC)]
    assert all(d.weekday() == 6 for d in got)  # Python: Monday 0 ... Sunday 6
    assert parse(expression).weekdays == (0,)


def test_1_is_monday() -> None:
    # After Tuesday 2024-01-02 the next Monday is 2024-01-08.
    got = fires("0 2 * * 1", ts(2024, 1, 2), 1)
    assert got == [datetime(2024, 1, 8, 2, tzinfo=UTC)]
    assert got[0].weekday() == 0


def test_day_of_week_range_ending_in_7_includes_sunday() -> None:
    assert parse("* * * * 5-7").weekdays == (0, 5, 6)
    got = fires("0 0 * * 5-7", MONDAY, 3)
    assert [d.strftime("%a %d") for d in got] == ["Fri 05", "Sat 06", "Sun 07"]


@pytest.mark.parametrize("days", ["mon-fri", "MON-Fri", "1-5", "Mon,Tue,wed,THU,fri"])
def test_weekdays_skip_the_weekend(days: str) -> None:
    # From Friday 2024-01-05 10:00: the next three are Mon, Tue, Wed.
    got = fires(f"0 9 * * {days}", ts(2024, 1, 5, 10), 3)
    assert got == [datetime(2024, 1, d, 9, tzinfo=UTC) for d in (8, 9, 10)]
    assert parse(f"0 9 * * {days}").weekdays == (1, 2, 3, 4, 5)


# --- months, ranges, steps, lists ----------------------------------------------------


@pytest.mark.parametrize("month", ["jan", "JAN", "Jan", "1"])
def test_month_name(month: str) -> None:
    assert parse(f"0 0 1 {month} *").months == (1,)
    assert fires(f"0 0 1 {month} *", ts(2024, 2, 1), 2) == [
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    ]


def test_month_list_of_names() -> None:
    assert parse("0 0 1 JAN,jul *").months == (1, 7)
    assert fires("0 0 1 JAN,jul *", ts(2024, 2, 1), 2) == [
        datetime(2024, 7, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    ]


def test_range_with_step() -> None:
    assert parse("0-30/10 * * * *").minutes == (0, 10, 20, 30)
    got = fires("0-30/10 * * * *", MONDAY, 5)
    assert [(d.hour, d.minute) for d in got] == [(0, 10), (0, 20), (0, 30), (1, 0), (1, 10)]


def test_star_step() -> None:
    assert parse("*/15 * * * *").minutes == (0, 15, 30, 45)
    got = fires("*/15 * * * *", ts(2024, 1, 1, 23, 20), 4)
    assert got == [
        datetime(2024, 1, 1, 23, 30, tzinfo=UTC),
        datetime(2024, 1, 1, 23, 45, tzinfo=UTC),
        datetime(2024, 1, 2, 0, 0, tzinfo=UTC),
        datetime(2024, 1, 2, 0, 15, tzinfo=UTC),
    ]


def test_single_value_with_step_runs_to_the_end_of_the_field() -> None:
    assert parse("50/4 * * * *").minutes == (50, 54, 58)
    assert parse("* 20/2 * * *").hours == (20, 22)


def test_list() -> None:
    assert parse("5,20,45 * * * *").minutes == (5, 20, 45)
    assert parse("0 1,3-5,22 * * *").hours == (1, 3, 4, 5, 22)
    got = fires("5,20,45 * * * *", MONDAY, 4)
    assert [(d.hour, d.minute) for d in got] == [(0, 5), (0, 20), (0, 45), (1, 5)]


def test_star_fields_are_unrestricted() -> None:
    cron = parse("* * * * *")
    assert cron.minutes == tuple(range(60))
    assert cron.hours == tuple(range(24))
    assert cron.days == tuple(range(1, 32))
    assert cron.months == tuple(range(1, 13))
    assert cron.weekdays == tuple(range(7))
    assert not cron.days_restricted
    assert not cron.weekdays_restricted


def test_extra_whitespace_is_ignored() -> None:
    assert parse("  0   2 *  * 0 ").expression == "0 2 * * 0"


# --- macros --------------------------------------------------------------------------

AFTER_MACRO = ts(2024, 1, 1, 0, 30)  # Monday 00:30 UTC


@pytest.mark.parametrize(
    ("macro", "expansion", "first"),
    [
        ("@hourly", "0 * * * *", datetime(2024, 1, 1, 1, tzinfo=UTC)),
        ("@daily", "0 0 * * *", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@midnight", "0 0 * * *", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@weekly", "0 0 * * 0", datetime(2024, 1, 7, tzinfo=UTC)),
        ("@monthly", "0 0 1 * *", datetime(2024, 2, 1, tzinfo=UTC)),
        ("@yearly", "0 0 1 1 *", datetime(2025, 1, 1, tzinfo=UTC)),
        ("@annually", "0 0 1 1 *", datetime(2025, 1, 1, tzinfo=UTC)),
        ("@DAILY", "0 0 * * *", datetime(2024, 1, 2, tzinfo=UTC)),
    ],
)
def test_macro_equals_its_expansion(macro: str, expansion: str, first: datetime) -> None:
    from_macro = fires(macro, AFTER_MACRO, 4)
    assert from_macro == fires(expansion, AFTER_MACRO, 4)
    assert from_macro[0] == first
    assert len(set(from_macro)) == 4
    a, b = parse(macro), parse(expansion)
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays) == (
        b.minutes,
        b.hours,
        b.days,
        b.months,
        b.weekdays,
    )


# --- day-of-month OR day-of-week (Vixie cron) -----------------------------------------


def test_day_of_month_or_day_of_week() -> None:
    cron = parse("0 0 13 * 5")
    assert cron.days_restricted
    assert cron.weekdays_restricted
    got = fires("0 0 13 * 5", MONDAY, 9)
    # Fridays of Jan/Feb 2024 plus Sat 13 Jan and Tue 13 Feb.
    assert [d.date().isoformat() for d in got] == [
        "2024-01-05",
        "2024-01-12",
        "2024-01-13",
        "2024-01-19",
        "2024-01-26",
        "2024-02-02",
        "2024-02-09",
        "2024-02-13",
        "2024-02-16",
    ]
    assert [d.strftime("%a") for d in got].count("Fri") == 7


def test_only_day_of_month_restricted_is_not_ored() -> None:
    got = fires("0 0 13 * *", MONDAY, 2)
    assert got == [datetime(2024, 1, 13, tzinfo=UTC), datetime(2024, 2, 13, tzinfo=UTC)]


def test_only_day_of_week_restricted_is_not_ored() -> None:
    got = fires("0 0 * * 5", MONDAY, 2)
    assert got == [datetime(2024, 1, 5, tzinfo=UTC), datetime(2024, 1, 12, tzinfo=UTC)]


# --- time zones ----------------------------------------------------------------------


def test_timezone_winter_and_summer() -> None:
    table = Timetable.of("0 2 * * *", PARIS)
    winter = table.next_after(ts(2024, 1, 15))
    summer = table.next_after(ts(2024, 7, 14, 12))
    assert winter == ts(2024, 1, 15, 1)  # CET = UTC+1
    assert summer == ts(2024, 7, 15, 0)  # CEST = UTC+2
    assert table.format(winter) == "2024-01-15 02:00 CET (Mon)"
    assert table.format(summer) == "2024-07-15 02:00 CEST (Mon)"


def test_timezone_switches_offset_across_spring_forward() -> None:
    # Clocks go forward on 2024-03-31 in Paris: 01:00 UTC before, 00:00 UTC after.
    got = Timetable.of("0 4 * * *", PARIS).upcoming(ts(2024, 3, 30, 12), 2)
    assert got == [ts(2024, 3, 31, 2), ts(2024, 4, 1, 2)]


def test_nonexistent_local_time_is_not_skipped_for_the_day() -> None:
    # 02:00 does not exist in Paris on 2024-03-31; the day still gets one run.
    table = Timetable.of("0 2 * * *", PARIS)
    got = table.upcoming(ts(2024, 3, 30, 12), 2)
    paris = ZoneInfo(PARIS)
    dates = [datetime.fromtimestamp(t, paris).date().isoformat() for t in got]
    assert dates == ["2024-03-31", "2024-04-01"]
    assert got[1] == ts(2024, 4, 1, 0)


def test_timezone_format_in_utc() -> None:
    assert (
        Timetable.of("0 2 * * *", "UTC").format(ts(2024, 1, 7, 2)) == "2024-01-07 02:00 UTC (Sun)"
    )


def test_check_timezone_returns_the_name() -> None:
    assert check_timezone(PARIS) == PARIS
    assert check_timezone("UTC") == "UTC"


# --- next_after / upcoming -----------------------------------------------------------


def test_next_after_is_strictly_after() -> None:
    table = Timetable.of("*/15 * * * *", "UTC")
    fire = ts(2024, 1, 1, 10, 15)
    assert table.next_after(fire) == fire + 900
    assert table.next_after(fire - 0.5) == fire
    assert table.next_after(fire - 1) == fire
    assert table.next_after(fire + 0.5) == fire + 900
    assert table.next_after(fire - 900) == fire


def test_next_after_returns_float() -> None:
    got = Timetable.of("@hourly", "UTC").next_after(MONDAY)
    assert isinstance(got, float)
    assert got == MONDAY + 3600


def test_upcoming_counts() -> None:
    table = Timetable.of("@hourly", "UTC")
    assert table.upcoming(MONDAY, 3) == [MONDAY + 3600, MONDAY + 7200, MONDAY + 10800]
    assert table.upcoming(MONDAY, 0) == []
    assert len(table.upcoming(MONDAY)) == 5


def test_february_30_never_fires() -> None:
    table = Timetable.of("0 0 30 2 *", "UTC")
    assert table.next_after(MONDAY) is None
    assert table.upcoming(MONDAY, 3) == []


def test_february_29_fires_in_leap_years_only() -> None:
    got = fires("0 0 29 2 *", ts(2024, 3, 1), 2)
    assert got == [datetime(2028, 2, 29, tzinfo=UTC), datetime(2032, 2, 29, tzinfo=UTC)]


# --- errors --------------------------------------------------------------------------


def test_user_error_exit_code() -> None:
    assert UserError.exit_code == 2
    assert UserError("x").exit_code == 2


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("", "5 fields"),
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * 0 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("*/0 * * * *", "minute"),
        ("* */x * * *", "hour"),
        ("5-1 * * * *", "minute"),
        ("* * * * fri-mon", "day-of-week"),
        ("* * * foo *", "month"),
        ("* * * * funday", "day-of-week"),
        ("1,,2 * * * *", "minute"),
        ("* 1, * * *", "hour"),
        ("-1 * * * *", "minute"),
        ("*-5 * * * *", "minute"),
        ("1.5 * * * *", "minute"),
        ("@reboot", "@reboot"),
        ("@every 5m", "@every 5m"),
    ],
)
def test_bad_expression(expression: str, names: str) -> None:
    with pytest.raises(UserError) as caught:
        parse(expression)
    message = str(caught.value)
    assert "\n" not in message
    assert names in message
    assert caught.value.exit_code == 2
    # Timetable.of checks the expression too.
    with pytest.raises(UserError):
        Timetable.of(expression, "UTC")


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("60 * * * *", "60"),
        ("* * * * 8", "8"),
        ("5-1 * * * *", "5-1"),
        ("* * * foo *", "foo"),
        ("1,,2 * * * *", "1,,2"),
        ("*/0 * * * *", "0"),
    ],
)
def test_bad_expression_names_the_value(expression: str, value: str) -> None:
    with pytest.raises(UserError) as caught:
        parse(expression)
    message = str(caught.value)
    assert message.startswith(f"cron {expression!r}: ")
    assert value in message.removeprefix(f"cron {expression!r}: ")


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "Europe/Pariss"])
def test_unknown_timezone(name: str) -> None:
    with pytest.raises(UserError) as caught:
        Timetable.of("0 2 * * *", name)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"timezone {name!r}")
    assert caught.value.exit_code == 2
    with pytest.raises(UserError):
        check_timezone(name)


# --- regressions: day steps, DST fall-back, steps and digits -----------------------


def test_step_over_star_in_day_of_month() -> None:
    assert parse("0 0 */2 * *").days == tuple(range(1, 32, 2))  # this part passes
    got = fires("0 0 */2 * *", MONDAY, 3)
    assert got == [datetime(2024, 1, d, tzinfo=UTC) for d in (3, 5, 7)]


def test_step_over_star_in_day_of_week() -> None:
    assert parse("0 0 * * */2").weekdays == (0, 2, 4, 6)  # this part passes
    got = fires("0 0 * * */2", MONDAY, 4)
    assert [d.strftime("%a %d") for d in got] == ["Tue 02", "Thu 04", "Sat 06", "Sun 07"]


def test_next_after_strictly_after_in_repeated_hour_hourly() -> None:
    # Paris falls back on 2024-10-27: 02:00-03:00 local happens twice. 01:00 UTC is
    # 02:00 CET (second pass); the next hourly fire is 03:00 CET = 02:00 UTC.
    when = ts(2024, 10, 27, 1)
    got = Timetable.of("0 * * * *", PARIS).next_after(when)
    assert got is not None
    assert got > when


def test_next_after_strictly_after_in_repeated_hour_quarterly() -> None:
    when = ts(2024, 10, 27, 1, 10)  # 02:10 CET, second pass of 02:xx
    assert Timetable.of("*/15 * * * *", PARIS).next_after(when) == ts(2024, 10, 27, 1, 15)


def test_upcoming_increases_across_fall_back() -> None:
    got = Timetable.of("0 * * * *", PARIS).upcoming(ts(2024, 10, 26, 23, 30), 4)
    assert got == sorted(set(got))
    assert len(got) == 4


def test_empty_step_is_rejected() -> None:
    with pytest.raises(UserError, match="minute"):
        parse("5/ * * * *")


def test_unicode_digit_names_the_field() -> None:
    with pytest.raises(UserError, match="minute"):
        parse("\u00b2 * * * *")  # '²'.isdigit() is True but int('²') fails


def test_fixed_hour_runs_once_when_clocks_go_back_hourly_runs_twice() -> None:
    # Paris, 2024-10-27: 02:30 local happens at 00:30 UTC (CEST) and 01:30 UTC (CET).
    fixed = Timetable.of("30 2 * * *", PARIS).upcoming(ts(2024, 10, 26, 23), 2)
    assert fixed == [ts(2024, 10, 27, 0, 30), ts(2024, 10, 28, 1, 30)]
    hourly = Timetable.of("30 * * * *", PARIS).upcoming(ts(2024, 10, 26, 23, 45), 3)
    assert hourly == [ts(2024, 10, 27, 0, 30), ts(2024, 10, 27, 1, 30), ts(2024, 10, 27, 2, 30)]

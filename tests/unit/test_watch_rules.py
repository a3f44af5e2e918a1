"""Monitor schedules, pure: `--every` as cron, when live performance triggers, cooldown."""

from __future__ import annotations

import math

import pytest

from mlops.errors import UserError
from mlops.params import MonitorParams
from mlops.scheduling.service import every_cron
from mlops.scheduling.store import Run
from mlops.scheduling.watch import Signals, cooling, live_check


@pytest.mark.parametrize(
    ("every", "cron"),
    [("5m", "*/5 * * * *"), ("15min", "*/15 * * * *"), ("60m", "0 * * * *"),
     ("1h", "0 * * * *"), ("6h", "0 */6 * * *"), ("24h", "0 0 * * *"), ("1d", "0 0 * * *"),
     (" 2H ", "0 */2 * * *")],
)  # fmt: skip
def test_every_is_the_cron_that_keeps_the_interval(every: str, cron: str) -> None:
    assert every_cron(every) == cron


@pytest.mark.parametrize("every", ["7m", "0m", "5h", "2d", "1w", "h", "", "90m", "-1h"])
def test_an_interval_cron_cannot_keep_is_one_line(every: str) -> None:
    with pytest.raises(UserError, match="--every"):
        every_cron(every)


def test_live_accuracy_triggers_only_with_enough_labels_below_the_bound() -> None:
    monitor = MonitorParams(min_live_accuracy=0.9, min_labelled=50)
    assert "crossed" in live_check(monitor, "classification", 50, 0.85)
    assert "crossed" not in live_check(monitor, "classification", 49, 0.1)
    assert "crossed" not in live_check(monitor, "classification", 500, 0.9)
    off = live_check(MonitorParams(), "classification", 500, 0.1)
    assert "crossed" not in off and "min_live_accuracy" in off["skipped"]
    assert live_check(monitor, "classification", 0, math.nan)["value"] is None


def test_live_rmse_triggers_above_its_bound() -> None:
    monitor = MonitorParams(max_live_rmse=2.0, min_labelled=10)
    assert "above 2" in live_check(monitor, "regression", 10, 2.5)["crossed"]
    assert "crossed" not in live_check(monitor, "regression", 10, 1.5)


def test_signals_cross_on_drift_or_live() -> None:
    assert Signals("m", 1, {"drift": False}, {}).crossed == []
    both = Signals("m", 1, {"drift": True, "reasons": ["3 features"]}, {"crossed": "live x"})
    assert both.crossed == ["drift: 3 features", "live x"]
    assert Signals("m", 1, {"skipped": "no sink"}, {"skipped": "off"}).crossed == []


def _run(i: int, ended: float | None, version: str = "") -> Run:
    return Run(i, "w", "manual", "succeeded", None, 0.0, ended, registered_version=version)


def test_cooldown_counts_from_the_last_challenger() -> None:
    runs = [_run(1, 100.0, "2"), _run(2, 500.0), _run(3, 900.0, "3"), _run(4, None)]
    assert cooling(runs, now=1000.0, cooldown=200.0) == runs[2]
    assert cooling(runs, now=1200.0, cooldown=200.0) is None
    assert cooling(runs[:2], now=150.0, cooldown=100.0) == runs[0]
    assert cooling(runs, now=1000.0, cooldown=0.0) is None

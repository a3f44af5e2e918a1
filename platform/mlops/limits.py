"""Bounds of the numbers people give sweep and schedule commands (one line past them,
never an overflow deep inside), and the check that refuses NaN and infinities, which a
range check lets through. Imports only typer."""

from __future__ import annotations

import math

import typer

MAX_TRIALS = 100_000  # as tune.n_trials
MAX_WORKERS = 64
MAX_THREADS = 1024  # as train.threads
MAX_SECONDS = 366 * 24 * 3600.0  # a timeout, a missed run's grace: a year


def finite(value: float | None) -> float | None:
    """A Typer callback: refuse a value that is not a finite number."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value}: expected a finite number")
    return value

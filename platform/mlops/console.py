"""Output for people (Rich tables, progress, one-line errors on stderr) and for scripts
(--json).

Nothing is cut to fit a width: on a terminal a long cell folds onto the next line; when
stdout is a file or a pipe (a log, `| grep`, CI) a table is as wide as its data and text
is never wrapped. Progress is a spinner on a terminal and plain lines on stderr in logs.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
for _console in (out, err):
    if not _console.is_terminal:
        _console.soft_wrap = True  # a log line is never broken to fit 80 columns


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table to stdout: every value whole (folded on a terminal, never cut)."""
    t = Table(title=title, title_justify="left")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    if out.is_terminal:
        out.print(t)
        return
    natural = Measurement.get(out, out.options.update_width(1_000_000), t).maximum
    width = out.width
    out.width = max(width, natural)
    try:
        out.print(t)
    finally:
        out.width = width


def _finite(value: Any) -> Any:
    """`value` with every non-finite float as null: JSON has no Infinity or NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    """Print JSON for scripts (plain stdout, no Rich markup; strict JSON: no Infinity)."""
    text = json.dumps(_finite(value), indent=2, sort_keys=True, default=str, allow_nan=False)
    sys.stdout.write(text + "\n")


def error(message: str) -> None:
    """One line on stderr."""
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)


def warning(message: str) -> None:
    """One line on stderr that needs attention but stops nothing."""
    err.print(f"[bold yellow]warning:[/] {message}", markup=True, soft_wrap=True)


@contextmanager
def status(message: str) -> Iterator[Callable[[str], None]]:
    """Show that work is going on: a spinner on a terminal, else one plain line per step on
    stderr (with the seconds since the start). Yields `update(text)` for the next step."""
    if err.is_terminal:
        with err.status(message) as spinner:
            yield spinner.update
        return
    start = time.monotonic()

    def update(text: str) -> None:
        err.print(f"{text} ({time.monotonic() - start:.1f} s)", markup=False, soft_wrap=True)

    err.print(message, markup=False, soft_wrap=True)
    yield update

"""Output for people (Rich tables, one-line errors on stderr) and for scripts (--json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table to stdout."""
    t = Table(title=title, title_justify="left")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    out.print(t)


def emit_json(value: Any) -> None:
    """Print JSON for scripts (plain stdout, no Rich markup)."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def error(message: str) -> None:
    """One line on stderr."""
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)

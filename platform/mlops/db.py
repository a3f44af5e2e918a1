"""The platform database: engines and transactions for SQLite (embedded) and PostgreSQL.

One place builds engines and runs transactions, so every store of the platform gets
the same behaviour: SQLite in WAL mode with a busy timeout and `BEGIN IMMEDIATE`
transactions (concurrent writers queue instead of failing with "database is locked"),
PostgreSQL with pre-ping, and every `SQLAlchemyError` turned into a one-line
`StoreError` with the password redacted. Importing this module imports no SQLAlchemy.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.errors import StoreError, full_disk, no_space
from mlops.settings import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

BUSY_TIMEOUT_S = 60.0
FULL_BELOW_BYTES = 1024 * 1024  # SQLite's I/O errors on a disk with less free are a full disk


class Conflict(StoreError):
    """A unique or primary-key violation: the row is already there (a taken lock)."""


def driver_url(url: str) -> str:
    """The SQLAlchemy URL with the driver we ship (psycopg 3) for PostgreSQL."""
    # psycopg 3 is the driver we ship; plain postgresql:// would look for psycopg2.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


@cache
def engine(url: str) -> Engine:
    """The engine for `url`, one per process (SQLite folders are created on first use)."""
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        eng = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

        @event.listens_for(eng, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(eng, "begin")
        def _on_begin(conn: Any) -> None:
            # Take the write lock up front: a deferred transaction that reads then
            # writes fails at once with SQLITE_BUSY instead of waiting its turn.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return eng
    return create_engine(driver_url(url), pool_pre_ping=True)


def describe(url: str) -> str:
    """The URL for messages, password hidden."""
    return redact(url)


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///` URL (None for another database, or in memory)."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    return Path(path) if path and path != ":memory:" else None


def _out_of_space(url: str, exc: BaseException) -> str | None:
    """The full-disk line (the URL names the file) when `exc` says so, or when SQLite
    reports an I/O error (as it does for its shared-memory file on a full disk) and the
    file's disk has no space."""
    line = full_disk(exc)
    if line is not None:
        return no_space(OSError(errno.ENOSPC, "No space left on device"))
    path = sqlite_path(url)
    if line is None and path is not None and "disk i/o error" in str(exc).lower():
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            return None
        if free < FULL_BELOW_BYTES:
            line = no_space(OSError(errno.ENOSPC, "No space left on device"))
    return line


def error_line(url: str, exc: BaseException) -> str:
    """One line for a failed database call: the driver's first line, password hidden,
    or the full-disk line."""
    text = _out_of_space(url, exc)
    if text is None:
        text = str(getattr(exc, "orig", None) or exc).strip()
        text = text.splitlines()[0] if text else type(exc).__name__
    return f"database {describe(url)}: {text}"


@contextmanager
def session(url: str) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error; SQLAlchemy errors become
    `StoreError` naming the store."""
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError
    from sqlalchemy.orm import Session

    try:
        with Session(engine(url), expire_on_commit=False) as s, s.begin():
            yield s
    except SQLAlchemyError as exc:
        kind = Conflict if isinstance(exc, IntegrityError) else StoreError
        raise kind(error_line(url, exc)) from None

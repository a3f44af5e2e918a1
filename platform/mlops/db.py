"""The platform database: engines and transactions for SQLite (embedded) and PostgreSQL.

One place builds engines and runs transactions, so every store of the platform gets
the same behaviour: SQLite in WAL mode with a busy timeout and `BEGIN IMMEDIATE`
transactions (concurrent writers queue instead of failing with "database is locked"),
PostgreSQL with pre-ping, and every `SQLAlchemyError` turned into a one-line
`StoreError` with the password redacted. A store class decorated with `retrying` rides
out a short outage of PostgreSQL: a transaction that fails to reach the database is run
again. Importing this module imports no SQLAlchemy.
"""

from __future__ import annotations

import errno
import functools
import inspect
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from mlops import retry
from mlops.errors import StoreError, full_disk, no_space
from mlops.settings import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

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
    full = no_space(OSError(errno.ENOSPC, "No space left on device"))
    if full_disk(exc) is not None:
        return full
    path = sqlite_path(url)
    if path is None or "disk i/o error" not in str(exc).lower():
        return None
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    return full if free < FULL_BELOW_BYTES else None


def failure(url: str, exc: BaseException) -> StoreError:
    """The `StoreError` for a failed database call: `retry.Unreachable` (which `retry.call`
    retries) when the database could not be reached."""
    if retry.transient(exc):
        return retry.Unreachable(error_line(url, exc), retry.detail(exc, url))
    return StoreError(error_line(url, exc))


def error_line(url: str, exc: BaseException) -> str:
    """One line for a failed database call: the driver's first line, password hidden,
    or the full-disk line."""
    return f"database {describe(url)}: {_out_of_space(url, exc) or retry.detail(exc, url)}"


@contextmanager
def session(url: str) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error; SQLAlchemy errors become
    `StoreError` naming the store."""

    try:
        with Session(engine(url), expire_on_commit=False) as s, s.begin():
            yield s
    except SQLAlchemyError as exc:
        if isinstance(exc, IntegrityError):
            raise Conflict(error_line(url, exc)) from None
        raise failure(url, exc) from None  # rolled back: `retrying` may run it again


STORE = "platform database"
C = TypeVar("C", bound=type)


def _retried(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return retry.call(lambda: method(self, *args, **kwargs), STORE, self.url)

    return call


def retrying(cls: C) -> C:
    """Class decorator for a store on the platform database (an instance with `url`):
    each method, one transaction, is run again as a whole when the database cannot be
    reached, within `MLOPS_STORE_RETRY_S` (one warning line per outage, one error line
    when the time is spent; `mlops.retry`). Context managers (generators) are left as they
    are: the methods they call are retried."""
    for name, member in list(vars(cls).items()):
        if name.startswith("__") or not inspect.isfunction(member):
            continue
        if inspect.isgeneratorfunction(inspect.unwrap(member)):
            continue
        setattr(cls, name, _retried(member))
    return cls

"""Store calls that ride out a short database outage.

A call to MLflow's or Optuna's store, or a transaction on the platform database (the
registry's and the schedules' tables: `mlops.db.retrying`), that fails because the
database went away (a PostgreSQL restart, a failover, a dropped connection) is retried
with exponential backoff (0.2 s doubling to 5 s) for up to `MLOPS_STORE_RETRY_S` seconds
(default 60), then fails as one `StoreError` naming the store, its password hidden. Each
store method is one transaction, so re-running the whole call is safe. Anything else (a constraint,
bad input, a wrong password, a missing database) is raised at once, never retried.
Importing this module imports no SQLAlchemy, MLflow or Optuna.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from sqlalchemy import exc as sa
from sqlalchemy.exc import DBAPIError

from mlops.errors import MlopsError, StoreError, UserError, full_disk
from mlops.settings import redact

T = TypeVar("T")
ENV = "MLOPS_STORE_RETRY_S"
DEFAULT_S = 60.0
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0

log = logging.getLogger("mlops.retry")


class Unreachable(StoreError):
    """A store call that failed because the store could not be reached (a connection
    failure): `call` retries it. Raised by `mlops.db.session` once it rolled back."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail  # the driver's first line, password hidden


# Errors of the connection's driver that retrying cannot fix.
_PERMANENT = re.compile(
    r"authentication failed|pg_hba\.conf|does not exist|permission denied", re.IGNORECASE
)
# What MLflow's REST client and wrapped errors say when the server cannot be reached.
_CONNECTION = re.compile(
    r"connection (refused|failed|reset|timed out|is closed|to server)|server closed the "
    r"connection|terminating connection|could not connect|max retries exceeded|"
    r"database system is (starting up|shutting down|in recovery|not yet accepting)",
    re.IGNORECASE,
)


def budget_s(env: Mapping[str, str] | None = None) -> float:
    """Seconds a store call keeps retrying: `MLOPS_STORE_RETRY_S` (0: never retry)."""
    raw = (os.environ if env is None else env).get(ENV, "").strip()
    if not raw:
        return DEFAULT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise UserError(f"{ENV}={raw}: expected a number of seconds >= 0")
    return value


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what caused it, outermost first (as a traceback shows them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        suppressed = current.__suppress_context__
        current = current.__cause__ or (None if suppressed else current.__context__)


def _connection_error(exc: BaseException) -> bool | None:
    """True/False for a driver or SQLAlchemy connection-level error, None otherwise."""

    if isinstance(exc, sqlite3.Error):
        return False  # a local file: "locked" already waited out its busy timeout
    if isinstance(exc, sa.DBAPIError) and isinstance(exc.orig, sqlite3.Error):
        return False
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    kinds: tuple[type[BaseException], ...] = (
        sa.OperationalError,
        sa.InterfaceError,
        sa.DisconnectionError,
    )
    try:
        import psycopg

        kinds += (psycopg.OperationalError, psycopg.InterfaceError)
    except ImportError:  # pragma: no cover - psycopg ships with the platform
        pass
    if isinstance(exc, kinds):
        return not _PERMANENT.search(str(exc))
    return None


def transient(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the store is unreachable for now."""
    chain: list[BaseException] = []
    for e in _chain(exc):
        if isinstance(e, MlopsError):
            # Ours are final (e.g. an inner retry that gave up), but for a failed connection.
            return isinstance(e, Unreachable)
        verdict = _connection_error(e)
        if verdict is not None:
            return verdict
        chain.append(e)
    for e in chain:
        if getattr(e, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True  # MLflow's (or its tracking server's) word for a store outage
        kind = type(e).__name__
        wraps = kind in ("MlflowException", "RestException", "StorageInternalError")
        if (wraps or kind == "ConnectionError") and _CONNECTION.search(str(e)):
            return True
    return False


def _hide(text: str, url: str) -> str:
    """`text` with the password of `url` (if any) replaced by `***`."""
    found = re.match(r"^[A-Za-z][\w+.-]*://[^:/@]*:(.*)@[^@]*$", url)
    if found and len(found.group(1)) >= 3:  # shorter: it would hide letters of words
        text = text.replace(found.group(1), "***")
    return redact(text)


def detail(exc: BaseException, url: str = "") -> str:
    """The first line of the database driver's error (else of `exc`), password hidden."""

    text = ""
    for e in _chain(exc):
        if isinstance(e, Unreachable):
            text = e.detail
        elif isinstance(e, DBAPIError) and e.orig is not None:
            text = str(e.orig).strip()
        elif type(e).__module__.split(".")[0] in ("psycopg", "sqlite3"):
            text = str(e).strip()
        if text:
            break
    text = text or str(exc).strip()
    first = text.splitlines()[0].strip() if text else type(exc).__name__
    return _hide(first, url)


def call(fn: Callable[[], T], store: str, url: str) -> T:
    """`fn()`, retried while the store is unreachable, for up to `budget_s()` seconds."""
    budget = budget_s()
    start = time.monotonic()
    deadline = start + budget
    delay = FIRST_DELAY_S
    failed = False
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not transient(exc):
                raise
            now = time.monotonic()
            if not failed:
                failed = True
                if budget > 0:
                    log.warning(
                        "%s %s: unreachable (%s); retrying for up to %g s",
                        store, redact(url), detail(exc, url), budget,
                    )  # fmt: skip
            if now >= deadline:
                if budget > 0:
                    log.error("%s %s: unreachable for %g s; giving up", store, redact(url), budget)
                raise StoreError(
                    f"{store} {redact(url)}: unreachable for {budget:g} s: {detail(exc, url)}"
                ) from None
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        if failed:
            took = time.monotonic() - start
            log.info("%s %s: reachable again after %.1f s", store, redact(url), took)
        return result


def quiet_mlflow(record: logging.LogRecord) -> bool:
    """A logging filter for `mlflow.store.db.utils`: drop its traceback for an error we
    retry, or for a full disk (each reported in one line by us)."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (exc is not None and (transient(exc) or full_disk(exc) is not None))

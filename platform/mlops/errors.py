"""Error types that carry their own exit code and one-line message.

`UserError` (exit 2) is bad input: params, names, paths, data files. `DataError`
(exit 1) is data that parsed but cannot be used. `StoreError` (exit 1) is a store
that cannot be reached. Each is printed as one line, never with a traceback.
"""

from __future__ import annotations

import errno

# What a full disk says once a wrapper (SQLAlchemy, MLflow, a server) kept only the text.
_FULL_DISK_TEXT = ("database or disk is full", "no space left on device", "disk quota exceeded")


class MlopsError(Exception):
    """Base of every error the platform reports to a person as one line."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UserError(MlopsError):
    """Bad input from the user: rejected before any compute, exit code 2."""

    exit_code = 2


class DataError(MlopsError):
    """Data that was read but is unusable (validation failed), exit code 1."""

    exit_code = 1


class StoreError(MlopsError):
    """A store (tracking, database, artifacts) cannot be reached or used, exit code 1."""

    exit_code = 1


class Interrupted(BaseException):
    """Raised in the main thread when SIGTERM arrives, so runs end as KILLED."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, or its type name when it has none: what a
    one-line error quotes from a library's (often multi-line) message."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    return lines[0] if lines else type(exc).__name__


def no_space(exc: OSError) -> str:
    """The one line for a full disk (ENOSPC), naming the file when the OS said which."""
    where = f" writing {exc.filename}" if exc.filename else ""
    return f"no space left on the device{where}: free some space and run the command again"


def full_disk(exc: BaseException) -> str | None:
    """The one line for a full disk when `exc`, or anything that caused it, says so:
    ENOSPC or EDQUOT, SQLite's "database or disk is full", or a wrapper (SQLAlchemy,
    MLflow) that kept only that text; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return no_space(current)
        if any(text in str(current).lower() for text in _FULL_DISK_TEXT):
            return no_space(OSError(errno.ENOSPC, "No space left on device"))
        current = current.__cause__ or current.__context__
    return None

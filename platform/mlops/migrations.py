"""Alembic for the platform's own tables: each store keeps its migrations in its own
package with its own version table, and upgrades itself on first use (idempotent, safe
to race: PostgreSQL upgrades take an advisory lock, SQLite ones `BEGIN IMMEDIATE`).

Also the repair of what an interrupted batch migration leaves behind. On SQLite, Alembic's
batch mode (MLflow's migrations, and ours: `render_as_batch`) rebuilds a table X through
a copy `_alembic_tmp_X`; MLflow's runs without a transaction around its DDL, so a full
disk or a kill mid-rebuild leaves the copy, and every later upgrade fails with "table
_alembic_tmp_X already exists". `drop_leftovers` drops such a copy when X itself is
still there (the rebuild never replaced it), in one transaction.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from mlops import db, retry
from mlops.errors import StoreError

LEFTOVER_PREFIX = "_alembic_tmp_"
_CURRENT: set[tuple[str, str]] = set()


def revision(url: str, version_table: str) -> str | None:
    """The revision recorded in `version_table`, None if the table is missing or empty;
    a store that cannot be reached is a `StoreError` naming it (password hidden)."""

    try:
        with db.engine(url).connect() as conn:
            if not inspect(conn).has_table(version_table):
                return None
            row = conn.execute(text(f"SELECT version_num FROM {version_table}")).first()
            conn.rollback()
    except SQLAlchemyError as exc:
        raise db.failure(url, exc) from None
    return str(row[0]) if row else None


def _leftovers(tables: list[str]) -> tuple[list[str], list[str]]:
    """(copies whose table is there: safe to drop, copies whose table is missing)."""
    copies = [t for t in tables if t.startswith(LEFTOVER_PREFIX)]
    present = set(tables)
    droppable = [t for t in copies if t.removeprefix(LEFTOVER_PREFIX) in present]
    return droppable, [t for t in copies if t not in droppable]


def _drop_sqlite(path: Path) -> tuple[list[str], list[str]]:
    query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    with closing(sqlite3.connect(path, timeout=db.BUSY_TIMEOUT_S, isolation_level=None)) as conn:
        if not any(n.startswith(LEFTOVER_PREFIX) for (n,) in conn.execute(query)):
            return [], []  # the usual case: one read, no lock
        conn.execute("BEGIN IMMEDIATE")  # a migration under way finishes first
        try:
            droppable, orphans = _leftovers([n for (n,) in conn.execute(query)])
            for name in droppable:
                conn.execute(f'DROP TABLE "{name}"')
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return droppable, orphans


def _drop_sql(url: str) -> tuple[list[str], list[str]]:
    with db.engine(url).connect() as conn:
        if not any(n.startswith(LEFTOVER_PREFIX) for n in inspect(conn).get_table_names()):
            conn.rollback()
            return [], []
        conn.rollback()
        with conn.begin():  # PostgreSQL's DDL is transactional
            droppable, orphans = _leftovers(inspect(conn).get_table_names())
            for name in droppable:
                conn.execute(text(f'DROP TABLE "{name}"'))
    return droppable, orphans


def drop_leftovers(url: str) -> list[str]:
    """Drop the `_alembic_tmp_X` tables of interrupted batch migrations whose table X
    exists, in one transaction; return their names. A copy whose X is missing may hold
    the only rows of X: it stays, and a `StoreError` names it (after the others went)."""

    path = db.sqlite_path(url)
    if url.startswith("sqlite:") and (path is None or not path.is_file()):
        return []  # nothing created yet (or in memory): nothing left over
    try:
        dropped, orphans = _drop_sqlite(path) if path is not None else _drop_sql(url)
    except (sqlite3.Error, SQLAlchemyError) as exc:
        raise db.failure(url, exc) from None
    if orphans:
        table = orphans[0].removeprefix(LEFTOVER_PREFIX)
        raise StoreError(
            f"database {db.describe(url)}: table {orphans[0]} is left from an interrupted "
            f"migration and table {table} is missing: its rows may be only there; restore "
            f"a backup, or rename {orphans[0]} to {table} and run `mlops db upgrade`"
        )
    return dropped


def upgrade(url: str, migrations: Path) -> None:
    """Run the Alembic scripts in `migrations` up to head on `url`."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations))
    try:
        with db.engine(url).connect() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
    except SQLAlchemyError as exc:
        raise db.failure(url, exc) from None


def ensure_schema(url: str, migrations: Path, version_table: str, head: str) -> None:
    """Create or upgrade a store's tables in the platform database once per process,
    riding out a short outage (`mlops.retry`)."""
    if (url, version_table) in _CURRENT:
        return

    def ensure() -> None:
        if revision(url, version_table) != head:
            drop_leftovers(url)
            upgrade(url, migrations)

    retry.call(ensure, db.STORE, url)
    _CURRENT.add((url, version_table))


def run_env(metadata: Any, version_table: str, lock_id: int) -> None:
    """The body of a store's Alembic `env.py`: upgrade on the connection the caller
    handed over, under an advisory lock on PostgreSQL (the second upgrader waits, then
    finds the work done)."""
    from alembic import context

    connection = context.config.attributes["connection"]
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({int(lock_id)})"))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()

"""Alembic for the platform's own tables: each store keeps its migrations in its own
package with its own version table, and upgrades itself on first use (idempotent, safe
to race: PostgreSQL upgrades take an advisory lock, SQLite ones `BEGIN IMMEDIATE`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops import db
from mlops.errors import StoreError

_CURRENT: set[tuple[str, str]] = set()


def revision(url: str, version_table: str) -> str | None:
    """The revision recorded in `version_table`, None if the table is missing or empty;
    a store that cannot be reached is a `StoreError` naming it (password hidden)."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with db.engine(url).connect() as conn:
            if not inspect(conn).has_table(version_table):
                return None
            row = conn.execute(text(f"SELECT version_num FROM {version_table}")).first()
            conn.rollback()
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreError(f"database {db.describe(url)}: {detail}") from None
    return str(row[0]) if row else None


def upgrade(url: str, migrations: Path) -> None:
    """Run the Alembic scripts in `migrations` up to head on `url`."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import SQLAlchemyError

    config = Config()
    config.set_main_option("script_location", str(migrations))
    try:
        with db.engine(url).connect() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreError(f"database {db.describe(url)}: {detail}") from None


def ensure_schema(url: str, migrations: Path, version_table: str, head: str) -> None:
    """Create or upgrade a store's tables once per process."""
    if (url, version_table) in _CURRENT:
        return
    if revision(url, version_table) != head:
        upgrade(url, migrations)
    _CURRENT.add((url, version_table))


def run_env(metadata: Any, version_table: str, lock_id: int) -> None:
    """The body of a store's Alembic `env.py`: upgrade on the connection the caller
    handed over, under an advisory lock on PostgreSQL (the second upgrader waits, then
    finds the work done)."""
    from alembic import context
    from sqlalchemy import text

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

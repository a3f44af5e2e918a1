"""Alembic environment of the registry's tables (run through `registry.db.migrate`)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from registry.db.models import Base

VERSION_TABLE = "registry_alembic_version"


def run_migrations_online() -> None:
    """Upgrade on the connection the caller handed over in `config.attributes`."""
    connection = context.config.attributes["connection"]
    if connection.dialect.name == "postgresql":
        # Two processes upgrading at once: the second waits, then finds it done.
        connection.execute(text("SELECT pg_advisory_xact_lock(727274)"))
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()

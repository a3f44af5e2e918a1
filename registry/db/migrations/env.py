"""Alembic environment of the registry's tables (run through `mlops.migrations`)."""

from __future__ import annotations

from mlops.migrations import run_env
from registry.db.models import Base

VERSION_TABLE = "registry_alembic_version"

run_env(Base.metadata, VERSION_TABLE, lock_id=727274)

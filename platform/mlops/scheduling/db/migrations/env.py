"""Alembic environment of the scheduling tables (run through `mlops.migrations`)."""

from __future__ import annotations

from mlops.migrations import run_env
from mlops.scheduling.db.models import Base

VERSION_TABLE = "scheduling_alembic_version"

run_env(Base.metadata, VERSION_TABLE, lock_id=727275)

"""The scheduling tables: schedules, their runs, run locks, scheduler heartbeats.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "scheduling_schedules",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("trials", sa.Integer, nullable=False),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("timeout", sa.Float, nullable=True),
        sa.Column("grace", sa.Float, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("next_fire_at", sa.Float, nullable=True),
    )
    op.create_table(
        "scheduling_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule", sa.String(64), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fire_time", sa.Float, nullable=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("coalesced", sa.Integer, nullable=False),
        sa.Column("trials_requested", sa.Integer, nullable=False),
        sa.Column("trials_added", sa.Integer, nullable=True),
        sa.Column("best_before", sa.Float, nullable=True),
        sa.Column("best_after", sa.Float, nullable=True),
        sa.Column("study", sa.String(255), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=False),
        sa.Column("data_version", sa.Text, nullable=False),
        sa.Column("registered_version", sa.String(64), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("log_path", sa.Text, nullable=False),
    )
    op.create_table(
        "scheduling_locks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pid_started", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
    )
    op.create_table(
        "scheduling_schedulers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pid_started", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    """Drop the tables."""
    for table in (
        "scheduling_schedulers",
        "scheduling_locks",
        "scheduling_runs",
        "scheduling_schedules",
    ):
        op.drop_table(table)

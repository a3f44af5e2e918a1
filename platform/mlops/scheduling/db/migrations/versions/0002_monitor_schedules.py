"""Monitor schedules: the MODEL@STAGE a schedule watches, and what triggered each run.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the columns (existing schedules are sweeps: an empty monitor)."""
    with op.batch_alter_table("scheduling_schedules") as batch:
        batch.add_column(sa.Column("monitor", sa.String(255), nullable=False, server_default=""))
    with op.batch_alter_table("scheduling_runs") as batch:
        batch.add_column(sa.Column("trigger", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    """Drop the columns."""
    with op.batch_alter_table("scheduling_runs") as batch:
        batch.drop_column("trigger")
    with op.batch_alter_table("scheduling_schedules") as batch:
        batch.drop_column("monitor")

"""Webhooks and their delivery table.

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
    """Create the tables."""
    op.create_table(
        "registry_hooks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.String(255), nullable=False),
        sa.Column("secret_env", sa.String(255), nullable=False),
        sa.Column("max_backoff", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sqlite_autoincrement=True,  # SQLite must never reuse a removed hook's id
    )
    op.create_table(
        "registry_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hook_id", sa.Integer, nullable=False, index=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("ledger_id", sa.Integer, nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("payload_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("delivered_at", sa.Float, nullable=True),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Drop the tables."""
    op.drop_table("registry_deliveries")
    op.drop_table("registry_hooks")

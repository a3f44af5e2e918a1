"""ORM models of the registry's tables. They never leave `registry.db.store`."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Base of the registry's tables."""


class VersionRow(Base):
    """A model version as the registry knows it (mirrors MLflow; serves fast reads)."""

    __tablename__ = "registry_versions"
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    info_json: Mapped[str] = mapped_column(Text)


class HolderRow(Base):
    """Which version holds an exclusive stage of a model (mirrors the MLflow alias)."""

    __tablename__ = "registry_holders"
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    stage: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    since: Mapped[float] = mapped_column(Float)


class LedgerRow(Base):
    """One append-only ledger entry: who did what to which version, and the evidence."""

    __tablename__ = "registry_ledger"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    from_stage: Mapped[str] = mapped_column(String(64))
    to_stage: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    evidence_json: Mapped[str] = mapped_column(Text)
    forced: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str] = mapped_column(String(32))


class IntentRow(Base):
    """A stage change decided and not yet finished: what a repair rolls forward."""

    __tablename__ = "registry_intents"
    op_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    payload_json: Mapped[str] = mapped_column(Text)


class LockRow(Base):
    """A named lock with an owner and an expiry, recovered when its holder died."""

    __tablename__ = "registry_locks"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pid_started: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class HookRow(Base):
    """A webhook: where registry events are POSTed, which ones, and the variable that
    holds its signing secret (never the secret itself)."""

    __tablename__ = "registry_hooks"
    __table_args__ = ({"sqlite_autoincrement": True},)  # no id reused
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[str] = mapped_column(String(255))
    secret_env: Mapped[str] = mapped_column(String(255))
    max_backoff: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(255))


class DeliveryRow(Base):
    """One event owed to one hook, written in the transaction of the ledger entry that
    caused it; sent in id order, retried with backoff until the receiver takes it."""

    __tablename__ = "registry_deliveries"
    __table_args__ = ({"sqlite_autoincrement": True},)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hook_id: Mapped[int] = mapped_column(Integer, index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(32))
    ledger_id: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(255))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    payload_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer)
    next_at: Mapped[float] = mapped_column(Float)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)

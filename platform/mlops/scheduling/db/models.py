"""ORM models of the schedules' tables. They never leave `mlops.scheduling.store`."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Base of the scheduling tables."""


class ScheduleRow(Base):
    """A schedule: what to sweep, when, and the next fire time (claimed atomically)."""

    __tablename__ = "scheduling_schedules"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(255))
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64))
    trials: Mapped[int] = mapped_column(Integer)
    workers: Mapped[int] = mapped_column(Integer)
    timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    grace: Mapped[float] = mapped_column(Float)
    paused: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(255))
    next_fire_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    monitor: Mapped[str] = mapped_column(String(255), default="")


class RunRow(Base):
    """One firing of a schedule: a run, or a firing skipped or missed (and why)."""

    __tablename__ = "scheduling_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    fire_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    coalesced: Mapped[int] = mapped_column(Integer)
    trials_requested: Mapped[int] = mapped_column(Integer)
    trials_added: Mapped[int | None] = mapped_column(Integer, nullable=True)
    best_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    study: Mapped[str] = mapped_column(String(255))
    mlflow_run_id: Mapped[str] = mapped_column(String(64))
    data_version: Mapped[str] = mapped_column(Text)
    registered_version: Mapped[str] = mapped_column(String(64))
    error: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(255))
    log_path: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(Text, default="")


class LockRow(Base):
    """A schedule's run lock: owner, expiry (renewed while it runs) and the run."""

    __tablename__ = "scheduling_locks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pid_started: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    run_id: Mapped[int] = mapped_column(Integer)


class SchedulerRow(Base):
    """A scheduler process seen alive (heartbeat), so people can tell one is running."""

    __tablename__ = "scheduling_schedulers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pid_started: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float] = mapped_column(Float)
    seen_at: Mapped[float] = mapped_column(Float)

"""The schedules, their runs, run locks and scheduler heartbeats in the platform
database (SQLite by default, PostgreSQL in team mode). All SQL of scheduling is here;
callers get frozen dataclasses.

Two guarantees live in this module: a fire time is claimed by one scheduler only
(`claim` is a compare-and-set on `next_fire_at`), and a schedule never runs twice at
once (`start_run` inserts the run and its lock row in one transaction; a second insert
of the lock fails until the holder releases it or is found dead).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from mlops import db, migrations
from mlops.errors import UserError
from mlops.owners import Lease, Owner
from mlops.scheduling.db.models import LockRow, RunRow, ScheduleRow, SchedulerRow

HEAD_REVISION = "0002"
MIGRATIONS = Path(__file__).parent / "db" / "migrations"
VERSION_TABLE = "scheduling_alembic_version"
RUNNING = "running"


@dataclass(frozen=True)
class Schedule:
    """A schedule as stored."""

    name: str
    pipeline: str
    cron: str
    timezone: str
    trials: int
    workers: int = 1
    timeout: float | None = None
    grace: float = 3600.0
    paused: bool = False
    created_at: float = 0.0
    created_by: str = ""
    next_fire_at: float | None = None
    monitor: str = ""  # MODEL@STAGE: a monitor schedule (drift/live checks, retrain)

    @property
    def what(self) -> str:
        """What a run of it does, in a few words."""
        return f"watch {self.monitor}" if self.monitor else f"sweep {self.pipeline}"


@dataclass(frozen=True)
class Run:
    """One firing of a schedule and what came of it."""

    id: int
    schedule: str
    kind: str
    status: str
    fire_time: float | None
    started_at: float
    ended_at: float | None = None
    coalesced: int = 0
    trials_requested: int = 0
    trials_added: int | None = None
    best_before: float | None = None
    best_after: float | None = None
    study: str = ""
    mlflow_run_id: str = ""
    data_version: dict[str, str] = field(default_factory=dict)
    registered_version: str = ""
    error: str = ""
    owner: str = ""
    log_path: str = ""
    trigger: str = ""  # a monitor run: the checks' figures and what they decided


@dataclass(frozen=True)
class Holder:
    """Who holds a schedule's run lock, for which run, until when."""

    owner: Owner
    run_id: int
    expires_at: float

    def dead(self, now: float) -> bool:
        """Whether its lock may be taken at `now` (`owners.Lease`, the rule of every lock)."""
        return Lease(self.owner, self.expires_at).dead(now)


_RUN_FIELDS = {
    "status", "ended_at", "trials_added", "best_before", "best_after", "study",
    "mlflow_run_id", "data_version", "registered_version", "error", "log_path", "trigger",
}  # fmt: skip


def _schedule(row: Any) -> Schedule:
    return Schedule(
        row.name, row.pipeline, row.cron, row.timezone, row.trials, row.workers, row.timeout,
        row.grace, row.paused, row.created_at, row.created_by, row.next_fire_at, row.monitor,
    )  # fmt: skip


def _run(row: Any) -> Run:
    return Run(
        row.id, row.schedule, row.kind, row.status, row.fire_time, row.started_at,
        row.ended_at, row.coalesced, row.trials_requested, row.trials_added, row.best_before,
        row.best_after, row.study, row.mlflow_run_id, json.loads(row.data_version or "{}"),
        row.registered_version, row.error, row.owner, row.log_path, row.trigger,
    )  # fmt: skip


def _new_run(schedule: Schedule, kind: str, status: str, fire_time: float | None,
             now: float, coalesced: int, error: str = "") -> Any:  # fmt: skip
    return RunRow(
        schedule=schedule.name, kind=kind, status=status, fire_time=fire_time,
        started_at=now, ended_at=None if status == RUNNING else now, coalesced=coalesced,
        trials_requested=schedule.trials, study="", mlflow_run_id="", data_version="{}",
        registered_version="", error=error, owner=str(Owner.current()), log_path="",
        trigger="",
    )  # fmt: skip


@db.retrying  # each method, one transaction, rides out a short outage
class ScheduleStore:
    """The scheduling tables in the database at `url` (created on first use)."""

    def __init__(self, url: str) -> None:
        self.url = url
        migrations.ensure_schema(url, MIGRATIONS, VERSION_TABLE, HEAD_REVISION)

    # schedules
    def add(self, schedule: Schedule) -> None:
        """Add a schedule; a `UserError` if the name is taken."""

        values = {k: getattr(schedule, k) for k in Schedule.__dataclass_fields__}
        try:
            with db.session(self.url) as s:
                s.add(ScheduleRow(**values))
        except db.Conflict:
            raise UserError(f"schedule {schedule.name!r}: already exists") from None

    def get(self, name: str) -> Schedule | None:
        """One schedule, or None."""

        with db.session(self.url) as s:
            row = s.get(ScheduleRow, name)
            return _schedule(row) if row is not None else None

    def schedules(self) -> list[Schedule]:
        """Every schedule, by name."""

        with db.session(self.url) as s:
            return [_schedule(r) for r in s.scalars(select(ScheduleRow).order_by(ScheduleRow.name))]

    def set_paused(self, name: str, paused: bool, next_fire_at: float | None) -> None:
        """Pause, or resume from `next_fire_at`."""

        with db.session(self.url) as s:
            row = s.get(ScheduleRow, name)
            if row is not None:
                row.paused, row.next_fire_at = paused, next_fire_at

    def remove(self, name: str) -> None:
        """Forget a schedule (its history stays)."""

        with db.session(self.url) as s:
            s.execute(delete(ScheduleRow).where(ScheduleRow.name == name))

    def claim(self, name: str, expected: float, following: float | None) -> bool:
        """Move `next_fire_at` from `expected` to `following`; False if another scheduler
        already did (so each fire time is taken once)."""

        with db.session(self.url) as s:
            done = s.execute(
                update(ScheduleRow)
                .where(ScheduleRow.name == name, ScheduleRow.next_fire_at == expected)
                .values(next_fire_at=following)
            )
            return bool(getattr(done, "rowcount", 0) == 1)

    # runs
    def start_run(
        self, schedule: Schedule, kind: str, fire_time: float | None, now: float,
        coalesced: int, expires_at: float,
    ) -> int | None:  # fmt: skip
        """Record a running run and take the schedule's lock, in one transaction. A lock
        whose holder is dead (this host) or expired (another host's) is recovered first.
        None, and nothing written, if a live holder has it."""
        for _attempt in range(3):
            run_id = self._insert_run(schedule, kind, fire_time, now, coalesced, expires_at)
            if run_id is not None:
                return run_id
            holder = self.holder(schedule.name)
            if holder is not None and not holder.dead(now):
                return None
            if holder is not None:
                self.recover(schedule.name, holder, now, f"its holder ({holder.owner}) died")
            # else: released between our insert and our read; try again
        return None

    def _insert_run(
        self, schedule: Schedule, kind: str, fire_time: float | None, now: float,
        coalesced: int, expires_at: float,
    ) -> int | None:  # fmt: skip

        me = Owner.current()
        try:
            with db.session(self.url) as s:
                row = _new_run(schedule, kind, RUNNING, fire_time, now, coalesced)
                s.add(row)
                s.flush()
                s.add(
                    LockRow(
                        name=schedule.name, host=me.host, pid=me.pid, pid_started=me.started,
                        expires_at=expires_at, run_id=row.id,
                    )
                )  # fmt: skip
                return int(row.id)
        except db.Conflict:
            return None

    def record(
        self, schedule: Schedule, kind: str, status: str, fire_time: float | None,
        now: float, coalesced: int, error: str,
    ) -> int:  # fmt: skip
        """Record a firing that did not run (skipped, missed)."""
        with db.session(self.url) as s:
            row = _new_run(schedule, kind, status, fire_time, now, coalesced, error)
            s.add(row)
            s.flush()
            return int(row.id)

    def update_run(self, run_id: int, **values: Any) -> None:
        """Set fields of a run while it is running."""
        self._set(run_id, values, only_running=True)

    def finish_run(self, run_id: int, status: str, now: float, **values: Any) -> bool:
        """End a running run (False if it had already ended, e.g. as abandoned)."""
        return self._set(run_id, {**values, "status": status, "ended_at": now}, True)

    def _set(self, run_id: int, values: dict[str, Any], only_running: bool) -> bool:
        unknown = set(values) - _RUN_FIELDS
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        if "data_version" in values:
            values["data_version"] = json.dumps(values["data_version"], sort_keys=True)
        with db.session(self.url) as s:
            row = s.get(RunRow, run_id)
            if row is None or (only_running and row.status != RUNNING):
                return False
            for k, v in values.items():
                setattr(row, k, v)
            return True

    def run(self, run_id: int) -> Run | None:
        """One run, or None."""

        with db.session(self.url) as s:
            row = s.get(RunRow, run_id)
            return _run(row) if row is not None else None

    def runs(
        self, name: str | None = None, limit: int | None = None, status: str | None = None
    ) -> list[Run]:
        """Runs of one schedule (or all; or in one status), oldest first (the last `limit`
        if given)."""

        query = select(RunRow).order_by(RunRow.id.desc())
        if name is not None:
            query = query.where(RunRow.schedule == name)
        if status is not None:
            query = query.where(RunRow.status == status)
        if limit is not None:
            query = query.limit(limit)
        with db.session(self.url) as s:
            return [_run(r) for r in s.scalars(query)][::-1]

    def last_runs(self) -> dict[str, Run]:
        """The latest run of each schedule."""

        latest = select(func.max(RunRow.id)).group_by(RunRow.schedule)
        with db.session(self.url) as s:
            rows = s.scalars(select(RunRow).where(RunRow.id.in_(latest)))
            return {r.schedule: _run(r) for r in rows}

    # locks
    def holder(self, name: str) -> Holder | None:
        """Who holds the schedule's run lock, or None."""

        with db.session(self.url) as s:
            row = s.get(LockRow, name)
            if row is None:
                return None
            return Holder(Owner(row.host, row.pid, row.pid_started), row.run_id, row.expires_at)

    def renew(self, name: str, run_id: int, expires_at: float) -> bool:
        """Push the lock's expiry (False if it is no longer ours)."""

        with db.session(self.url) as s:
            row = s.get(LockRow, name)
            if row is None or row.run_id != run_id:
                return False
            row.expires_at = expires_at
            return True

    def release(self, name: str, run_id: int) -> None:
        """Drop the lock if `run_id` holds it."""

        with db.session(self.url) as s:
            s.execute(delete(LockRow).where(LockRow.name == name, LockRow.run_id == run_id))

    def recover(self, name: str, holder: Holder, now: float, why: str) -> bool:
        """Take a dead holder's lock away and end its run as abandoned (once)."""

        with db.session(self.url) as s:
            gone = s.execute(
                delete(LockRow).where(LockRow.name == name, LockRow.run_id == holder.run_id)
            )
            if getattr(gone, "rowcount", 0) != 1:
                return False
            row = s.get(RunRow, holder.run_id)
            if row is not None and row.status == RUNNING:
                row.status, row.ended_at, row.error = "abandoned", now, why
            return True

    # schedulers
    def beat(self, scheduler_id: str, started_at: float, now: float) -> None:
        """Record that this scheduler process is alive."""

        me = Owner.current()
        with db.session(self.url) as s:
            row = s.get(SchedulerRow, scheduler_id)
            if row is None:
                s.add(
                    SchedulerRow(
                        id=scheduler_id, host=me.host, pid=me.pid, pid_started=me.started,
                        started_at=started_at, seen_at=now,
                    )
                )  # fmt: skip
            else:
                row.seen_at = now

    def schedulers(self, now: float, within: float) -> list[tuple[Owner, float]]:
        """Scheduler processes seen in the last `within` seconds and not known dead,
        with their start times."""

        with db.session(self.url) as s:
            rows = list(s.scalars(select(SchedulerRow).where(SchedulerRow.seen_at >= now - within)))
            found = [(Owner(r.host, r.pid, r.pid_started), r.started_at) for r in rows]
        return [(o, t) for o, t in found if o.alive() is not False]

    def leave(self, scheduler_id: str) -> None:
        """Forget a scheduler that stops."""

        with db.session(self.url) as s:
            s.execute(delete(SchedulerRow).where(SchedulerRow.id == scheduler_id))

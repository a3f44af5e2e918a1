"""The registry's store in the platform database: versions, stage holders, the
append-only ledger, pending intents and named locks.

All SQL of the registry is here; callers get frozen dataclasses. Reads need only
SQLAlchemy (no MLflow, no torch), which keeps `mlops registry list|show|history` fast.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mlops import db, migrations
from mlops.errors import StoreError
from mlops.owners import Lease, Owner
from registry.db.hooks import enqueue
from registry.db.models import HolderRow, IntentRow, LedgerRow, LockRow, VersionRow

HEAD_REVISION = "0002"


def lock_name(model: str) -> str:
    """The lock every stage change of `model` holds (promotion, repair, sync)."""
    return f"registry:{model}"


_HELD = threading.local()  # the (pid, url, lock name) this thread holds


@dataclass(frozen=True)
class Version:
    """A registered model version as the registry records it."""

    model: str
    version: int
    run_id: str
    source: str
    sha256: str
    artifact_sha256: str
    stage: str
    created_at: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """A ledger entry (id and time are set when it is appended)."""

    action: str
    model: str
    version: int | None
    from_stage: str
    to_stage: str
    actor: str
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    forced: bool = False
    outcome: str = "done"
    id: int = 0
    at: float = 0.0


@dataclass(frozen=True)
class Change:
    """A stage change: `version` of `model` moves to `to_stage`.

    `exclusive` stages are held by one version (an MLflow alias); `displaced` is the
    version that held `to_stage` before and moves to `displaced_to`.
    """

    model: str
    version: int
    from_stage: str
    to_stage: str
    exclusive: bool
    displaced: int | None = None
    displaced_to: str = "none"


@dataclass(frozen=True)
class Intent:
    """A change decided (gates passed) but not yet finished in MLflow and the ledger.

    `refused`: the tracking store refused its writes and not all of them could be undone;
    a repair only ever undoes such an intent."""

    op_id: str
    model: str
    created_at: float
    change: Change
    entry: Entry
    refused: bool = False


MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "registry_alembic_version"


def ensure_schema(url: str) -> None:
    """Create or upgrade the registry's tables (idempotent, safe to race)."""
    migrations.ensure_schema(url, MIGRATIONS, VERSION_TABLE, HEAD_REVISION)


def _version(row: Any) -> Version:
    return Version(
        row.model,
        row.version,
        row.run_id,
        row.source,
        row.sha256,
        row.artifact_sha256,
        row.stage,
        row.created_at,
        json.loads(row.info_json),
    )


def _entry(row: Any) -> Entry:
    return Entry(
        row.action,
        row.model,
        row.version,
        row.from_stage,
        row.to_stage,
        row.actor,
        row.reason,
        json.loads(row.evidence_json),
        row.forced,
        row.outcome,
        row.id,
        row.at,
    )


def _entry_row(entry: Entry) -> Any:
    return LedgerRow(
        at=time.time(),
        actor=entry.actor,
        action=entry.action,
        model=entry.model,
        version=entry.version,
        from_stage=entry.from_stage,
        to_stage=entry.to_stage,
        reason=entry.reason,
        evidence_json=json.dumps(entry.evidence, sort_keys=True),
        forced=entry.forced,
        outcome=entry.outcome,
    )


def _record(s: Session, entry: Entry) -> None:
    """Append `entry` and, in the same transaction, the webhook deliveries it causes."""
    row = _entry_row(entry)
    s.add(row)
    enqueue(s, row, entry)


@db.retrying  # each method, one transaction, rides out a short outage
class RegistryStore:
    """The registry's tables in the database at `url` (created on first use)."""

    def __init__(self, url: str) -> None:
        self.url = url
        ensure_schema(url)

    # reads
    def models(self) -> list[str]:
        """Names of every model with a recorded version."""

        with db.session(self.url) as s:
            return list(s.scalars(select(VersionRow.model).distinct().order_by(VersionRow.model)))

    def versions(self, model: str | None = None) -> list[Version]:
        """Versions of one model (or all), by name then newest first."""

        query = select(VersionRow).order_by(VersionRow.model, VersionRow.version.desc())
        if model is not None:
            query = query.where(VersionRow.model == model)
        with db.session(self.url) as s:
            return [_version(r) for r in s.scalars(query)]

    def has_model(self, model: str) -> bool:
        """Whether any version of `model` is recorded (one indexed row, not all of them)."""

        with db.session(self.url) as s:
            query = select(VersionRow.version).where(VersionRow.model == model).limit(1)
            return s.scalars(query).first() is not None

    def version(self, model: str, version: int) -> Version | None:
        """One version, or None."""

        with db.session(self.url) as s:
            row = s.get(VersionRow, (model, version))
            return _version(row) if row is not None else None

    def holders(self, model: str) -> dict[str, int]:
        """Exclusive stage → the version holding it."""

        with db.session(self.url) as s:
            rows = s.scalars(select(HolderRow).where(HolderRow.model == model))
            return {r.stage: r.version for r in rows}

    def history(
        self, model: str, limit: int | None = None, versions: Iterable[int] | None = None
    ) -> list[Entry]:
        """Ledger entries of a model (of these `versions` only, if given), oldest first
        (the last `limit` if given)."""

        query = select(LedgerRow).where(LedgerRow.model == model).order_by(LedgerRow.id.desc())
        if versions is not None:
            query = query.where(LedgerRow.version.in_(list(versions)))
        if limit is not None:
            query = query.limit(limit)
        with db.session(self.url) as s:
            return [_entry(r) for r in s.scalars(query)][::-1]

    def intents(self, model: str | None = None) -> list[Intent]:
        """Unfinished changes (left by a killed command), oldest first."""

        query = select(IntentRow).order_by(IntentRow.created_at)
        if model is not None:
            query = query.where(IntentRow.model == model)
        with db.session(self.url) as s:
            rows = list(s.scalars(query))
        found = []
        for r in rows:
            payload = json.loads(r.payload_json)
            found.append(
                Intent(
                    r.op_id,
                    r.model,
                    r.created_at,
                    Change(**payload["change"]),
                    Entry(**payload["entry"]),
                    bool(payload.get("refused", False)),
                )
            )
        return found

    # writes
    def record_version(self, version: Version, entry: Entry) -> bool:
        """Add a version and its `register` ledger entry; False if it was already there."""

        with db.session(self.url) as s:
            if s.get(VersionRow, (version.model, version.version)) is not None:
                return False
            s.add(
                VersionRow(
                    model=version.model,
                    version=version.version,
                    run_id=version.run_id,
                    source=version.source,
                    sha256=version.sha256,
                    artifact_sha256=version.artifact_sha256,
                    stage=version.stage,
                    created_at=version.created_at,
                    info_json=json.dumps(version.info, sort_keys=True),
                )
            )
            _record(s, entry)
        return True

    def append(self, entry: Entry) -> None:
        """Append one ledger entry (a refusal, an override attempt, a repair note)."""
        with db.session(self.url) as s:
            _record(s, entry)

    def add_intent(self, change: Change, entry: Entry) -> str:
        """Record a decided change before touching MLflow; returns its id."""

        op_id = uuid.uuid4().hex
        payload = {"change": asdict(change), "entry": asdict(entry)}
        with db.session(self.url) as s:
            s.add(
                IntentRow(
                    op_id=op_id,
                    model=change.model,
                    created_at=time.time(),
                    payload_json=json.dumps(payload, sort_keys=True),
                )
            )
        return op_id

    def apply(self, change: Change, entry: Entry, op_id: str | None = None) -> None:
        """Apply a change to holders and stages, append its entry and drop its intent,
        all in one transaction."""

        now = time.time()
        with db.session(self.url) as s:
            s.execute(
                delete(HolderRow).where(
                    HolderRow.model == change.model, HolderRow.version == change.version
                )
            )
            if change.exclusive:
                holder = s.get(HolderRow, (change.model, change.to_stage))
                if holder is None:
                    s.add(
                        HolderRow(
                            model=change.model,
                            stage=change.to_stage,
                            version=change.version,
                            since=now,
                        )
                    )
                else:
                    holder.version, holder.since = change.version, now
            row = s.get(VersionRow, (change.model, change.version))
            if row is not None:
                row.stage = change.to_stage
            if change.displaced is not None and change.displaced != change.version:
                old = s.get(VersionRow, (change.model, change.displaced))
                if old is not None:
                    old.stage = change.displaced_to
            _record(s, entry)
            if op_id is not None:
                s.execute(delete(IntentRow).where(IntentRow.op_id == op_id))

    def settle(self, op_id: str, entry: Entry) -> None:
        """Drop an intent that will not be applied and append the entry that says why
        (a refusal, an undone change), in one transaction."""

        with db.session(self.url) as s:
            s.execute(delete(IntentRow).where(IntentRow.op_id == op_id))
            _record(s, entry)

    def flag_refused(self, op_id: str, entry: Entry) -> None:
        """Mark an intent as refused by the tracking store (a repair will undo it, never
        complete it) and append the refusal, in one transaction."""

        with db.session(self.url) as s:
            row = s.get(IntentRow, op_id)
            if row is not None:
                payload = json.loads(row.payload_json)
                payload["refused"] = True
                row.payload_json = json.dumps(payload, sort_keys=True)
            _record(s, entry)

    # locks
    @contextmanager
    def lock(self, name: str, ttl: float = 600.0, wait: float = 300.0) -> Iterator[None]:
        """Hold the named lock (waiting up to `wait` seconds). A holder that is gone
        (`owners.Lease`: dead on this host, or another host's past its expiry) loses it.
        The thread that holds it re-enters it at once (a stage change that syncs the model
        takes it twice); it is released when the outermost hold ends."""
        key = (os.getpid(), self.url, name)  # a forked child holds nothing of its parent's
        held: set[tuple[int, str, str]] = _HELD.__dict__.setdefault("locks", set())
        if key in held:  # the outer hold releases it
            yield
            return
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + wait
        while not self._try_lock(name, owner, ttl):
            holder = self._holder(name)
            if holder is not None and _stale(holder):
                self._break(name, holder["owner"])
                continue
            if time.monotonic() > deadline:
                who = f"{holder['host']} pid {holder['pid']}" if holder else "another process"
                raise StoreError(f"{name}: locked by {who} for more than {wait:g} s")
            time.sleep(random.uniform(0.01, 0.05))
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            self._break(name, owner)

    def _try_lock(self, name: str, owner: str, ttl: float) -> bool:
        me = Owner.current()
        try:
            with db.session(self.url) as s:
                s.add(
                    LockRow(
                        name=name,
                        owner=owner,
                        host=me.host,
                        pid=me.pid,
                        pid_started=me.started,
                        expires_at=time.time() + ttl,
                    )
                )
        except db.Conflict:
            return False
        return True

    def _holder(self, name: str) -> dict[str, Any] | None:
        with db.session(self.url) as s:
            row = s.get(LockRow, name)
            if row is None:
                return None
            return {
                "owner": row.owner,
                "host": row.host,
                "pid": row.pid,
                "pid_started": row.pid_started,
                "expires_at": row.expires_at,
            }

    def _break(self, name: str, owner: str) -> None:

        with db.session(self.url) as s:
            s.execute(delete(LockRow).where(LockRow.name == name, LockRow.owner == owner))


def _stale(holder: dict[str, Any]) -> bool:
    owner = Owner(holder["host"], int(holder["pid"]), float(holder["pid_started"]))
    return Lease(owner, holder["expires_at"]).dead(time.time())

"""Webhooks and their deliveries in the platform database.

`enqueue` runs inside the transaction that appends a ledger entry, so an event exists
exactly when its change does. Deliveries of one hook are taken oldest first, one at a
time: a receiver that was down gets every event, in order, when it returns.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mlops import db
from registry.db.models import DeliveryRow, HookRow, LedgerRow
from registry.hooks import events

PENDING, DELIVERED = "pending", "delivered"


@dataclass(frozen=True)
class Hook:
    """A webhook as recorded."""

    id: int
    url: str
    events: tuple[str, ...]
    secret_env: str
    max_backoff: float
    created_at: float
    actor: str


@dataclass(frozen=True)
class Delivery:
    """One event owed to one hook and how its delivery went so far."""

    id: int
    hook_id: int
    event_id: str
    event: str
    ledger_id: int
    model: str
    version: int | None
    body: bytes
    created_at: float
    state: str
    attempts: int
    next_at: float
    last_status: int | None
    last_error: str
    delivered_at: float | None


def _hook(row: Any) -> Hook:
    return Hook(row.id, row.url, tuple(row.events.split(",")), row.secret_env,
                row.max_backoff, row.created_at, row.actor)  # fmt: skip


def _delivery(row: Any) -> Delivery:
    return Delivery(
        row.id, row.hook_id, row.event_id, row.event, row.ledger_id, row.model, row.version,
        row.payload_json.encode(), row.created_at, row.state, row.attempts, row.next_at,
        row.last_status, row.last_error, row.delivered_at,
    )  # fmt: skip


def enqueue(s: Session, row: LedgerRow, entry: Any) -> None:
    """In the ledger entry's own transaction: one delivery per hook that wants its event."""
    event = events.event_of(entry.action, entry.outcome)
    if event is None:
        return
    hooks = [h for h in s.scalars(select(HookRow)) if event in h.events.split(",")]
    if not hooks:
        return
    s.flush()  # the ledger row's id
    event_id = uuid.uuid4().hex
    body = json.dumps(events.payload(event, event_id, row.id, row.at, entry), sort_keys=True)
    for hook in hooks:
        s.add(
            DeliveryRow(
                hook_id=hook.id, event_id=event_id, event=event, ledger_id=row.id,
                model=entry.model, version=entry.version, payload_json=body,
                created_at=row.at, state=PENDING, attempts=0, next_at=row.at,
                last_status=None, last_error="", delivered_at=None,
            )
        )  # fmt: skip


@db.retrying
class HookStore:
    """Hooks and deliveries in the database at `url` (the registry's tables exist)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def add(self, url: str, wanted: tuple[str, ...], secret_env: str, max_backoff: float,
            actor: str) -> Hook:  # fmt: skip
        """Record a hook; events from now on are owed to it."""
        with db.session(self.url) as s:
            row = HookRow(url=url, events=",".join(wanted), secret_env=secret_env,
                          max_backoff=max_backoff, created_at=time.time(), actor=actor)  # fmt: skip
            s.add(row)
            s.flush()
            return _hook(row)

    def remove(self, hook_id: int) -> bool:
        """Forget a hook and what is still owed to it; False if there was none."""
        with db.session(self.url) as s:
            if s.get(HookRow, hook_id) is None:
                return False
            s.execute(delete(DeliveryRow).where(DeliveryRow.hook_id == hook_id))
            s.execute(delete(HookRow).where(HookRow.id == hook_id))
            return True

    def hooks(self) -> list[Hook]:
        """Every hook, oldest first."""
        with db.session(self.url) as s:
            return [_hook(r) for r in s.scalars(select(HookRow).order_by(HookRow.id))]

    def pending_counts(self) -> dict[int, int]:
        """Hook id → deliveries not yet taken by its receiver."""
        query = (
            select(DeliveryRow.hook_id, func.count())
            .where(DeliveryRow.state == PENDING)
            .group_by(DeliveryRow.hook_id)
        )
        with db.session(self.url) as s:
            return {hook: int(n) for hook, n in s.execute(query)}

    def log(self, limit: int, hook_id: int | None = None) -> tuple[list[Delivery], int]:
        """The newest `limit` deliveries (of one hook if given), oldest first, and how
        many there are in all."""
        query = select(DeliveryRow).order_by(DeliveryRow.id.desc()).limit(limit)
        count = select(func.count()).select_from(DeliveryRow)
        if hook_id is not None:
            query = query.where(DeliveryRow.hook_id == hook_id)
            count = count.where(DeliveryRow.hook_id == hook_id)
        with db.session(self.url) as s:
            return [_delivery(r) for r in s.scalars(query)][::-1], int(s.scalar(count) or 0)

    def head(self, hook_id: int) -> Delivery | None:
        """The oldest delivery the hook's receiver has not taken."""
        query = (
            select(DeliveryRow)
            .where(DeliveryRow.hook_id == hook_id, DeliveryRow.state == PENDING)
            .order_by(DeliveryRow.id)
            .limit(1)
        )
        with db.session(self.url) as s:
            row = s.scalars(query).first()
            return _delivery(row) if row is not None else None

    def delivered(self, delivery_id: int, status: int, at: float) -> None:
        """The receiver took it."""
        self._set(delivery_id, state=DELIVERED, last_status=status, last_error="",
                  delivered_at=at, attempts=DeliveryRow.attempts + 1)  # fmt: skip

    def failed(self, delivery_id: int, status: int | None, error: str, next_at: float) -> None:
        """An attempt failed; the next one is due at `next_at`."""
        self._set(delivery_id, last_status=status, last_error=error[:500], next_at=next_at,
                  attempts=DeliveryRow.attempts + 1)  # fmt: skip

    def _set(self, delivery_id: int, **values: Any) -> None:
        with db.session(self.url) as s:
            s.execute(update(DeliveryRow).where(DeliveryRow.id == delivery_id).values(**values))

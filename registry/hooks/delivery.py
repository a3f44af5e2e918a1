"""Sending owed events to their hooks: signed POSTs, oldest first per hook, a failure
waits out its backoff and holds back the events behind it (order is kept).

Any process may deliver — the registry commands try once right after their change, and
`mlops registry hooks deliver --watch` keeps at it — a per-hook lock in the database
keeps two senders from racing on one hook. Delivery is at least once: a receiver
deduplicates by the `Idempotency-Key` header (the event's id).
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mlops.errors import StoreError
from registry.db.hooks import Delivery, Hook, HookStore
from registry.db.store import RegistryStore
from registry.hooks import events

log = logging.getLogger(__name__)
TIMEOUT_S = 10.0
USER_AGENT = "mlops-registry-hooks/1"


@dataclass(frozen=True)
class Attempt:
    """One POST of one delivery and how it went."""

    delivery: int
    hook: int
    event: str
    model: str
    version: int | None
    status: int | None
    error: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed delivery: the signed body goes only where it was told."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(
    hook: Hook, delivery: Delivery, secret: bytes, timeout: float, now: float
) -> tuple[int | None, str]:
    """POST one delivery; (HTTP status or None, error text or "")."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        events.EVENT_HEADER: delivery.event,
        events.KEY_HEADER: delivery.event_id,
        events.SIGNATURE_HEADER: events.signature(secret, delivery.body, int(now)),
    }
    request = urllib.request.Request(hook.url, delivery.body, headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        return int(exc.code), f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, str(reason)[:300] or type(exc).__name__


Sender = Callable[[Hook, Delivery, bytes, float, float], tuple[int | None, str]]


def deliver_due(
    url: str,
    *,
    timeout: float = TIMEOUT_S,
    budget: float | None = None,
    environ: Mapping[str, str] | None = None,
    send: Sender = post,
) -> list[Attempt]:
    """Send every due delivery of every hook, oldest first per hook, until one fails or
    `budget` seconds are spent; the attempts made."""
    environ = os.environ if environ is None else environ
    store, locks = HookStore(url), RegistryStore(url)
    started = time.monotonic()
    attempts: list[Attempt] = []
    for hook in store.hooks():
        try:
            with locks.lock(f"hooks:{hook.id}", ttl=120.0, wait=0.0):
                attempts += _drain(store, hook, environ, timeout, send, started, budget)
        except StoreError as exc:  # another sender holds it, or the database is away
            log.debug("hook %s: skipped: %s", hook.id, exc)
    return attempts


def _drain(
    store: HookStore,
    hook: Hook,
    environ: Mapping[str, str],
    timeout: float,
    send: Sender,
    started: float,
    budget: float | None,
) -> list[Attempt]:
    done: list[Attempt] = []
    while budget is None or time.monotonic() - started < budget:
        head = store.head(hook.id)
        now = time.time()
        if head is None or head.next_at > now:
            break
        secret = environ.get(hook.secret_env, "")
        if secret:
            status, error = send(hook, head, secret.encode(), timeout, now)
        else:
            status, error = None, f"the secret variable {hook.secret_env} is not set here"
        attempt = Attempt(head.id, hook.id, head.event, head.model, head.version, status, error)
        done.append(attempt)
        if attempt.ok:
            store.delivered(head.id, status or 0, time.time())
            log.info("hook %s: %s sent (HTTP %s)", hook.id, _what(attempt), status)
            continue
        wait = events.backoff(head.attempts + 1, hook.max_backoff)
        store.failed(head.id, status, error or f"HTTP {status}", time.time() + wait)
        log.warning("hook %s: %s not taken (%s); again in %.0f s", hook.id, _what(attempt),
                    error or f"HTTP {status}", wait)  # fmt: skip
        break
    return done


def _what(attempt: Attempt) -> str:
    version = f" v{attempt.version}" if attempt.version is not None else ""
    return f"{attempt.event} of {attempt.model}{version}"


def flush(url: str, budget: float = 5.0) -> None:
    """Right after a registry change: send what is due, within `budget` seconds; what is
    not taken waits for the next sender. Never fails the command that changed things."""
    try:
        deliver_due(url, timeout=min(TIMEOUT_S, budget), budget=budget)
    except Exception as exc:  # the change is done and recorded; delivery catches up later
        log.warning("webhooks: not sent now (%s); `mlops registry hooks deliver` retries", exc)


def watch(url: str, interval: float, should_stop: Callable[[], bool],
          report: Callable[[Attempt], None]) -> None:  # fmt: skip
    """Deliver until `should_stop()`, looking for due deliveries every `interval` s."""
    while not should_stop():
        try:
            for attempt in deliver_due(url):
                report(attempt)
        except StoreError as exc:
            log.warning("webhooks: database unavailable (%s); trying again", exc)
        deadline = time.monotonic() + interval
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.1, interval))

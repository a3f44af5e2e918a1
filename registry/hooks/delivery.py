"""Sending owed events to their hooks: signed POSTs, oldest first per hook, a failure
waits out its backoff and holds back the events behind it (order is kept).

Any process may deliver — the registry commands try once right after their change, and
`mlops registry hooks deliver --watch` keeps at it — a per-hook lock in the database
keeps two senders from racing on one hook. Delivery is at least once: a receiver
deduplicates by the `Idempotency-Key` header (the event's id).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from mlops.errors import StoreError
from registry.db.hooks import Delivery, Hook, HookStore
from registry.db.store import RegistryStore
from registry.hooks import events

log = logging.getLogger(__name__)
TIMEOUT_S = 10.0
LOCK_TTL_S = 120.0
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


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """A connection to the URL's host, the request target, and Basic auth from its user
    info. http.client never follows a redirect: the signed body goes only where it is told."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(host, port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    auth = {}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return conn, target, auth


def post(
    hook: Hook, delivery: Delivery, secret: bytes, timeout: float, now: float
) -> tuple[int | None, str]:
    """POST one delivery within `timeout` seconds in all (a receiver that answers a byte
    at a time is cut off too); (HTTP status or None, error text or "")."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        events.EVENT_HEADER: delivery.event,
        events.KEY_HEADER: delivery.event_id,
        events.SIGNATURE_HEADER: events.signature(secret, delivery.body, int(now)),
    }
    try:
        conn, target, auth = _connection(hook.url, timeout)
    except (ValueError, http.client.HTTPException) as exc:
        return None, f"bad URL: {type(exc).__name__}"
    found: list[tuple[int | None, str]] = []

    def send() -> None:
        try:
            conn.request("POST", target, delivery.body, {**headers, **auth})
            response = conn.getresponse()
            response.read(64 * 1024)
            status = int(response.status)
            found.append((status, "" if 200 <= status < 300 else f"HTTP {status}"))
        except Exception as exc:  # any failure of the receiver is a failed attempt
            found.append((None, (str(exc) or type(exc).__name__)[:300]))

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        with contextlib.suppress(OSError):
            if conn.sock is not None:
                conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        worker.join(1.0)
        return None, f"timed out after {timeout:g} s"
    conn.close()
    return found[0] if found else (None, "no answer")


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
    `budget` seconds are spent; the attempts made. One hook's trouble never stops the
    others."""
    environ = os.environ if environ is None else environ
    store, locks = HookStore(url), RegistryStore(url)
    deadline = None if budget is None else time.monotonic() + budget
    attempts: list[Attempt] = []
    for hook in store.hooks():
        try:
            with locks.lock(f"hooks:{hook.id}", ttl=LOCK_TTL_S, wait=0.0):
                attempts += _drain(store, hook, environ, timeout, send, deadline)
        except StoreError as exc:  # another sender holds it, or the database is away
            log.debug("hook %s: skipped: %s", hook.id, exc)
    return attempts


def _drain(
    store: HookStore,
    hook: Hook,
    environ: Mapping[str, str],
    timeout: float,
    send: Sender,
    deadline: float | None,
) -> list[Attempt]:
    """Send the hook's due deliveries in order until one fails, the deadline comes, or
    half the lock's life is spent (the lock is not renewed: another host may take it)."""
    done: list[Attempt] = []
    stop = time.monotonic() + LOCK_TTL_S / 2
    if deadline is not None:
        stop = min(stop, deadline)
    while (left := stop - time.monotonic()) > 0:
        head = store.head(hook.id)
        now = time.time()
        if head is None or head.next_at > now:
            break
        secret = environ.get(hook.secret_env, "")
        if secret:
            status, error = send(hook, head, secret.encode(), min(timeout, left), now)
        else:
            status, error = None, f"the secret variable {hook.secret_env} is not set here"
        attempt = Attempt(head.id, hook.id, head.event, head.model, head.version, status, error)
        done.append(attempt)
        if attempt.ok:
            store.delivered(head.id, status or 0, time.time())
            continue
        wait = events.backoff(head.attempts + 1, hook.max_backoff)
        store.failed(head.id, status, error or f"HTTP {status}", time.time() + wait)
        break
    return done


def _what(attempt: Attempt) -> str:
    version = f" v{attempt.version}" if attempt.version is not None else ""
    return f"{attempt.event} of {attempt.model}{version}"


def flush(url: str, budget: float = 5.0) -> None:
    """Right after a registry change: send what is due, within `budget` seconds in all;
    what is not taken waits for the next sender (one warning line). Never fails the
    command that changed things."""
    try:
        failed = [a for a in deliver_due(url, timeout=budget, budget=budget) if not a.ok]
    except Exception as exc:  # the change is done and recorded; delivery catches up later
        log.warning("webhooks: not sent now (%s); `mlops registry hooks deliver` retries", exc)
        return
    for attempt in failed:
        log.warning("webhooks: hook %s did not take %s (%s); `mlops registry hooks deliver` "
                    "retries", attempt.hook, _what(attempt), attempt.error)  # fmt: skip


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

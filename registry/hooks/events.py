"""What a registry event is, how it is signed and verified, and how long a failed
delivery waits: pure functions, no I/O.

A ledger entry becomes an event when it records a change that happened (`register`,
`promote`, `rollback`, `archive`, done or repaired) or a promotion the gates refused
(`gate_failed`). Denied and abandoned changes are not events: nothing changed.

The signature follows the scheme receivers already know from payment webhooks:
`X-Mlops-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is HMAC-SHA256 of
`"{t}." + body` under the hook's secret; a receiver refuses a stale `t` (replay).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any
from urllib.parse import urlsplit

from mlops.errors import UserError

EVENTS = ("register", "promote", "rollback", "archive", "gate_failed")
SIGNATURE_HEADER = "X-Mlops-Signature"
EVENT_HEADER = "X-Mlops-Event"
KEY_HEADER = "Idempotency-Key"
TOLERANCE_S = 300.0
FIRST_WAIT_S = 1.0
MAX_URL = 2048
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def event_of(action: str, outcome: str) -> str | None:
    """The event a ledger entry stands for, or None."""
    if outcome in ("done", "repaired") and action in EVENTS:
        return action
    if outcome == "refused" and action in ("promote", "rollback"):
        return "gate_failed"
    return None


def payload(event: str, event_id: str, ledger_id: int, at: float, entry: Any) -> dict[str, Any]:
    """The JSON body of an event: the ledger entry's facts and, for gated changes, the
    gate results (never the store's evidence: that names the tracking server)."""
    evidence = entry.evidence or {}
    body: dict[str, Any] = {
        "id": event_id,
        "type": event,
        "ledger_id": ledger_id,
        "at": at,
        "model": entry.model,
        "version": entry.version,
        "from_stage": entry.from_stage,
        "to_stage": entry.to_stage,
        "action": entry.action,
        "outcome": entry.outcome,
        "actor": entry.actor,
        "reason": entry.reason,
        "forced": entry.forced,
    }
    if "gates" in evidence:
        body["gates"] = evidence["gates"]
        body["passed"] = evidence.get("passed")
    return body


def signature(secret: bytes, body: bytes, t: int) -> str:
    """The signature header's value for `body` sent at unix time `t`."""
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: bytes, body: bytes, header: str, now: float, tolerance: float = TOLERANCE_S
) -> bool:
    """Whether `header` signs `body` under `secret` within `tolerance` seconds of `now`."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    given = fields.get("t", "")
    if not (given.isascii() and given.isdigit() and len(given) <= 12):
        return False
    t = int(given)
    if abs(now - t) > tolerance:
        return False
    expected = signature(secret, body, t).split("v1=", 1)[1].encode()
    return hmac.compare_digest(expected, fields.get("v1", "").encode("utf-8", "replace"))


def backoff(attempts: int, cap: float) -> float:
    """Seconds to wait after the `attempts`-th failure: 1, 2, 4, … up to `cap`."""
    return float(min(cap, FIRST_WAIT_S * 2.0 ** min(max(attempts - 1, 0), 30)))


def parse_events(text: str) -> tuple[str, ...]:
    """`register,promote,…` as a tuple in the canonical order (one line if unknown)."""
    asked = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(asked) - set(EVENTS))
    if unknown or not asked:
        raise UserError(
            f"--events {text[:200]!r}: unknown event {', '.join(unknown)[:200] or '(none given)'}; "
            f"choose from {', '.join(EVENTS)}"
        )
    return tuple(e for e in EVENTS if e in asked)


def check_url(url: str) -> str:
    """An http(s) URL with a host and no spaces (one line if not)."""
    bad = UserError(f"hook URL {url[:200]!r}: not an http(s) URL with a host (and a numeric port)")
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number
    except ValueError:
        raise bad from None
    if (
        len(url) > MAX_URL
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or ord(c) < 32 for c in url)
    ):
        raise bad
    return url


def check_env_name(name: str, environ: dict[str, str] | Any) -> str:
    """The name of a set, non-empty environment variable holding the secret."""
    if not _ENV_NAME.fullmatch(name):
        raise UserError(f"--secret-env {name[:200]!r}: not an environment variable name")
    if not environ.get(name):
        raise UserError(f"--secret-env {name}: the variable is not set (export it, then retry)")
    return name

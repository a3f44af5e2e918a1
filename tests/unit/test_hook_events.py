"""Registry events, pure: which ledger entries are events, signatures, backoff, input."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from mlops.errors import UserError
from registry.db.store import Entry
from registry.hooks import events


@pytest.mark.parametrize(
    ("action", "outcome", "event"),
    [
        ("register", "done", "register"),
        ("promote", "done", "promote"),
        ("promote", "repaired", "promote"),
        ("rollback", "done", "rollback"),
        ("archive", "done", "archive"),
        ("promote", "refused", "gate_failed"),
        ("rollback", "refused", "gate_failed"),
        ("promote", "denied", None),
        ("promote", "abandoned", None),
        ("sync", "done", None),
    ],
)
def test_which_entries_are_events(action: str, outcome: str, event: str | None) -> None:
    assert events.event_of(action, outcome) == event


def test_payload_keeps_gates_and_leaves_the_store_out() -> None:
    entry = Entry("promote", "digits", 3, "staging", "production", "ann", "why",
                  {"gates": [{"name": "g"}], "passed": False, "store": {"url": "x"}},
                  outcome="refused")  # fmt: skip
    body = events.payload("gate_failed", "k", 7, 1.5, entry)
    assert body["gates"] == [{"name": "g"}] and body["passed"] is False
    assert "store" not in body and body["ledger_id"] == 7 and body["id"] == "k"


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    body, secret = b'{"type":"promote"}', b"s"
    header = events.signature(secret, body, 1000)
    expected = hmac.new(secret, b"1000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1000,v1={expected}"
    assert events.verify(secret, body, header, now=1100)
    assert not events.verify(secret, body + b" ", header, now=1100)
    assert not events.verify(b"other", body, header, now=1100)
    assert not events.verify(secret, body, header, now=1000 + events.TOLERANCE_S + 1)
    for broken in ("", "t=x,v1=00", "v1=" + expected, "t=1000", "garbage"):
        assert not events.verify(secret, body, broken, now=1000)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [events.backoff(n, 10) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert events.backoff(10_000, 300) == 300
    assert events.backoff(3, 0.5) == 0.5


def test_events_urls_and_secret_names_are_checked() -> None:
    assert events.parse_events("promote, register") == ("register", "promote")
    for bad in ("", "promote,deploy", ","):
        with pytest.raises(UserError, match="--events"):
            events.parse_events(bad)
    assert events.check_url("https://hooks.example.com/x?y=1")
    for bad in (
        "ftp://h/x",
        "http:///x",
        "http://h/a b",
        "h/x",
        "http://h/\n",
        "http://h/" + "a" * 3000,
    ):
        with pytest.raises(UserError, match="hook URL"):
            events.check_url(bad)
    assert events.check_env_name("HOOK_SECRET", {"HOOK_SECRET": "x"}) == "HOOK_SECRET"
    with pytest.raises(UserError, match="not set"):
        events.check_env_name("HOOK_SECRET", {"HOOK_SECRET": ""})
    with pytest.raises(UserError, match="not an environment variable name"):
        events.check_env_name("A-B", {"A-B": "x"})


def test_broken_signatures_and_urls_are_refused_not_crashed() -> None:
    body, secret = b"{}", b"s"
    for header in ("t=1000,v1=é", "t=" + "9" * 400 + ",v1=00", "t=-5,v1=00", "t=１０００,v1=00"):
        assert not events.verify(secret, body, header, now=1000)
    for bad in ("http://x:abc/", "http://[::1", "http://[zz]/"):
        with pytest.raises(UserError, match="hook URL"):
            events.check_url(bad)
    with pytest.raises(UserError) as refused:
        events.parse_events("x" * 100_000)
    assert len(str(refused.value)) < 600

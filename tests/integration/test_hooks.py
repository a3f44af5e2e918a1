"""Registry events to webhooks, with real receivers and a real delivery process.

A receiver that is down while the registry changes, then answers 500 to its first
attempts, still gets every event once, in ledger order, signed (checked here with hmac,
not with our own verifier) and with one idempotency key per event; a refused promotion
sends `gate_failed` and never `promote`. An event is written in the ledger entry's
transaction: when its delivery row cannot be written, the entry is not written either.
Both on SQLite and PostgreSQL. Then the README's path through the CLI: `hooks listen`
sees the promotion the moment `promote` returns; bad input is one line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from mlops import db
from mlops.errors import StoreError
from mlops.exposure import free_port
from registry.context import Context
from registry.db.hooks import HookStore
from registry.db.store import Entry, RegistryStore
from registry.hooks import events as hook_events
from registry.hooks.delivery import deliver_due
from registry.hooks.receiver import Receiver
from registry.promotion import change_stage
from registry.stages import Ref, Refused
from tests.integration.registry_project import cli, context, register_small, write_project

pytestmark = pytest.mark.stores("database")

SECRET = "hook-secret-for-tests"
GATED = """
registry:
  gates:
    staging: {integrity: true}
    production: {integrity: true, thresholds: {accuracy: 0.9}}
"""


class Flaky(ThreadingHTTPServer):
    """Answers 500 to its first `reject` POSTs, then 200; keeps every POST it got."""

    daemon_threads = True

    def __init__(self, port: int, reject: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.reject = reject
        self.got: list[tuple[int, dict[str, str], bytes]] = []
        self.guard = threading.Lock()

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        with self.guard:
            return [(h, b) for status, h, b in self.got if status == 200]


class _Handler(BaseHTTPRequestHandler):
    server: Flaky

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.guard:
            status = 500 if self.server.reject > 0 else 200
            self.server.reject -= 1
            self.server.got.append((status, dict(self.headers.items()), body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def signed(headers: dict[str, str], body: bytes) -> bool:
    """The signature header verifies under SECRET, computed here independently."""
    fields = dict(p.split("=", 1) for p in headers["X-Mlops-Signature"].split(","))
    mac = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    return (
        hmac.compare_digest(mac.hexdigest(), fields["v1"])
        and abs(time.time() - int(fields["t"])) < 300
    )


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def hooks_cli(ctx: Context, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return cli(ctx.settings.root, "registry", "hooks", *args,
               env={**env, "HOOK_SECRET": SECRET})  # fmt: skip


def log(ctx: Context, env: dict[str, str]) -> list[dict[str, Any]]:
    done = hooks_cli(ctx, env, "log", "--json", "--limit", "1000")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.fixture
def project(tmp_path: Path, backend: dict[str, str]) -> tuple[Context, dict[str, str]]:
    write_project(tmp_path, GATED)
    return context(tmp_path, backend), backend


def _changes(ctx: Context) -> list[tuple[str, str]]:
    """Register v1 (good), v2 (good), v3 (weak) and move them; the events they owe."""
    for seed, steps in ((0, 150), (1, 150), (2, 5)):
        register_small(ctx, "digits", seed=seed, steps=steps)
    change_stage(ctx, "digits", Ref(version=1), "staging")
    change_stage(ctx, "digits", Ref(version=1), "production")
    with pytest.raises(Refused):
        change_stage(ctx, "digits", Ref(version=3), "production")
    change_stage(ctx, "digits", Ref(version=2), "production")
    change_stage(ctx, "digits", Ref(version=1), "production", action="rollback")
    change_stage(ctx, "digits", Ref(version=3), "archived", action="archive")
    return [("register", "1"), ("register", "2"), ("register", "3"), ("promote", "1"),
            ("promote", "1"), ("gate_failed", "3"), ("promote", "2"), ("rollback", "1"),
            ("archive", "3")]  # fmt: skip


@pytest.fixture
def deliverer(project: tuple[Context, dict[str, str]]) -> Iterator[subprocess.Popen[str]]:
    """`mlops registry hooks deliver --watch` as its own process, stopped with SIGTERM."""
    ctx, env = project
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlops", "registry", "hooks", "deliver", "--watch",
         "--interval", "0.2"],
        cwd=ctx.settings.root, env={**clean, **env, "HOOK_SECRET": SECRET},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    yield process
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err


def test_a_receiver_down_then_failing_gets_every_event_in_order(
    project: tuple[Context, dict[str, str]], deliverer: subprocess.Popen[str]
) -> None:
    ctx, env = project
    port = free_port()
    added = hooks_cli(ctx, env, "add", f"http://127.0.0.1:{port}/events", "--secret-env",
                      "HOOK_SECRET", "--max-backoff", "0.5")  # fmt: skip
    assert added.returncode == 0, added.stderr
    expected = _changes(ctx)  # the receiver is down all along

    until(lambda: any(d["attempts"] >= 2 for d in log(ctx, env)), 60, "retries while down")
    owed = log(ctx, env)
    assert [d["state"] for d in owed] == ["pending"] * len(expected)
    assert all(d["attempts"] == 0 for d in owed[1:]), "a later event was tried before the first"
    assert owed[0]["last_error"] and owed[0]["last_status"] is None

    receiver = Flaky(port, reject=2)
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    try:
        until(lambda: len(receiver.accepted()) >= len(expected), 60, "every event")
        time.sleep(1.0)  # anything sent twice would arrive now
    finally:
        receiver.shutdown()
        receiver.server_close()

    accepted = receiver.accepted()
    events = [json.loads(body) for _, body in accepted]
    assert [(e["type"], str(e["version"])) for e in events] == expected
    assert all(signed(headers, body) for headers, body in accepted)
    keys = [headers["Idempotency-Key"] for headers, _ in accepted]
    assert keys == [e["id"] for e in events] and len(set(keys)) == len(keys)
    rejected = [h["Idempotency-Key"] for status, h, _ in receiver.got if status == 500]
    assert rejected == [keys[0], keys[0]], "the first event is retried, nothing jumps ahead"
    assert [e["ledger_id"] for e in events] == sorted(e["ledger_id"] for e in events)
    ledger = {e.id: e for e in ctx.store.history("digits")}
    for event in events:
        entry = ledger[event["ledger_id"]]
        assert (entry.action, entry.version, entry.to_stage) == (
            event["action"], event["version"], event["to_stage"])  # fmt: skip
    refused = next(e for e in events if e["type"] == "gate_failed")
    assert refused["passed"] is False and refused["to_stage"] == "production"
    assert not [e for e in events if e["type"] == "promote" and e["version"] == 3]
    assert all(d["state"] == "delivered" for d in log(ctx, env))


def test_an_event_is_written_with_its_ledger_entry_or_not_at_all(
    project: tuple[Context, dict[str, str]],
) -> None:
    ctx, env = project
    added = hooks_cli(ctx, env, "add", "http://127.0.0.1:9/x", "--secret-env", "HOOK_SECRET")
    assert added.returncode == 0, added.stderr
    entry = Entry("promote", "digits", 1, "staging", "production", "tester")
    ctx.store.append(entry)
    assert [d["event"] for d in log(ctx, env)] == ["promote"]
    before = len(ctx.store.history("digits"))
    engine = create_engine(db.driver_url(ctx.settings.database_url))
    with engine.begin() as conn:  # a delivery row can no longer be written
        conn.execute(text("ALTER TABLE registry_deliveries RENAME TO gone"))
    engine.dispose()
    with pytest.raises(StoreError):
        ctx.store.append(entry)
    assert len(ctx.store.history("digits")) == before, "the entry outlived its event"
    ctx.store.append(Entry("promote", "digits", 1, "staging", "production", "t", outcome="denied"))
    assert len(ctx.store.history("digits")) == before + 1, "a non-event entry needs no delivery"


def test_the_readme_path_listen_add_promote(tmp_path: Path) -> None:
    """`hooks listen` prints the promotion once `promote` returns (sent by the command
    itself, no deliverer running); forged posts get 401; bad input is one line, exit 2."""
    write_project(tmp_path, GATED)
    ctx = context(tmp_path)
    register_small(ctx, "digits")
    env = {"HOOK_SECRET": SECRET}
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    listener = subprocess.Popen(
        [sys.executable, "-m", "mlops", "registry", "hooks", "listen", "--secret-env",
         "HOOK_SECRET", "--port", str(port), "--json"],
        cwd=tmp_path, env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    until(lambda: _listening(port) or listener.poll() is not None, 60, "the listener")
    try:
        url = f"http://127.0.0.1:{port}/"
        for bad, needle in (
            (["add", url, "--secret-env", "NOT_SET_ANYWHERE"], "NOT_SET_ANYWHERE"),
            (["add", "ftp://example.com/x", "--secret-env", "HOOK_SECRET"], "ftp://"),
            (["add", url, "--secret-env", "HOOK_SECRET", "--events", "promote,deploy"], "deploy"),
            (["remove", "42"], "no hook 42"),
        ):
            done = cli(tmp_path, "registry", "hooks", *bad, env=env)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1 and needle in lines[0], done.stderr
        added = cli(tmp_path, "registry", "hooks", "add", url, "--secret-env", "HOOK_SECRET",
                    "--events", "promote", env=env)  # fmt: skip
        assert added.returncode == 0, added.stderr
        again = cli(tmp_path, "registry", "hooks", "add", url, "--secret-env", "HOOK_SECRET",
                    env=env)  # fmt: skip
        assert again.returncode == 2 and "already posts" in again.stderr

        wrong = {"X-Mlops-Signature": f"t={int(time.time())},v1=00"}
        forged = urllib.request.Request(url, b'{"type": "promote"}', wrong, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=30)
        assert refused.value.code == 401
        promoted = cli(tmp_path, "registry", "promote", "digits", "1", "--to", "staging", env=env)
        assert promoted.returncode == 0, promoted.stderr
    finally:
        listener.send_signal(signal.SIGTERM)
        out, err = listener.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["type"], e["model"], e["version"], e["to_stage"]) for e in events] == [
        ("promote", "digits", 1, "staging")
    ], err
    shown = cli(tmp_path, "registry", "hooks", "log", env=env)
    assert shown.returncode == 0 and "delivered" in shown.stdout, shown.stderr


class Hostile(ThreadingHTTPServer):
    """`drip`: one header line a second, forever; `garbage`: not HTTP; `ok`: 200, keeping
    each request's headers."""

    daemon_threads = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _HostileHandler)
        self.mode = mode
        self.seen: list[dict[str, str]] = []
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/in"


class _HostileHandler(BaseHTTPRequestHandler):
    server: Hostile

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(dict(self.headers.items()))
        if self.server.mode == "garbage":
            self.wfile.write(b"HELLO THERE\r\n\r\n")
            return
        if self.server.mode == "drip":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(60):
                self.wfile.write(b"X-Slow: 1\r\n")
                self.wfile.flush()
                time.sleep(1.0)
            return
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_hostile_receivers_cost_one_attempt_of_their_own_hook(tmp_path: Path) -> None:
    """A receiver that drips its answer is cut off at the budget; one that answers
    nonsense is a failed attempt; neither keeps the next hook's event from going out
    (Basic auth from the URL's user info); a removed hook's id is never reused."""

    url = f"sqlite:///{tmp_path / 'platform.db'}"
    store, hooks = RegistryStore(url), HookStore(url)
    drip, garbage, ok = Hostile("drip"), Hostile("garbage"), Hostile("ok")
    try:
        good = ok.url.replace("http://", "http://ann:p%40ss@")
        made = [hooks.add(u, ("promote",), "HOOK_SECRET", 300.0, "t")
                for u in (drip.url, garbage.url, good)]  # fmt: skip
        store.append(Entry("promote", "digits", 1, "staging", "production", "t"))
        attempts = deliver_due(url, timeout=3.0, environ={"HOOK_SECRET": SECRET})
        by_hook = {a.hook: a for a in attempts}
        assert by_hook[made[0].id].error == "timed out after 3 s"
        assert by_hook[made[1].id].status is None and not by_hook[made[1].id].ok
        assert by_hook[made[2].id].ok and len(ok.seen) == 1
        assert ok.seen[0]["Authorization"] == "Basic YW5uOnBAc3M="  # ann:p@ss
        log = {d.hook_id: d for d in hooks.log(10)[0]}
        assert log[made[0].id].state == log[made[1].id].state == "pending"
        assert log[made[1].id].attempts == 1 and log[made[1].id].next_at > time.time()
        assert hooks.remove(made[2].id)
        again = hooks.add(ok.url, ("promote",), "HOOK_SECRET", 300.0, "t")
        assert again.id > made[2].id, "a removed hook's id came back"
    finally:
        for server in (drip, garbage, ok):
            server.shutdown()
            server.server_close()


def test_the_listener_takes_an_event_once_whatever_the_key_header(tmp_path: Path) -> None:
    """A replayed signed event with a new Idempotency-Key is not a new event; broken
    signatures and bodies are 4xx, never a crash."""

    got: list[dict[str, Any]] = []
    receiver = Receiver(("127.0.0.1", 0), SECRET.encode(), got.append)
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/"

    def send(body: bytes, signature: str, key: str = "k") -> int:
        headers = {"X-Mlops-Signature": signature, "Idempotency-Key": key}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10):
                return 200
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        body = json.dumps({"id": "evt-1", "type": "promote"}).encode()
        signed_now = hook_events.signature(SECRET.encode(), body, int(time.time()))
        assert [send(body, signed_now, key) for key in ("a", "a", "b", "c")] == [200] * 4
        assert [e["id"] for e in got] == ["evt-1"]
        now = int(time.time())
        assert send(body, f"t={now},v1=é") == 401
        assert send(body, "t=" + "9" * 400 + ",v1=00") == 401
        listed = b"[1, 2]"
        assert send(listed, hook_events.signature(SECRET.encode(), listed, now)) == 400
    finally:
        receiver.shutdown()
        receiver.server_close()

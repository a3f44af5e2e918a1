"""`mlops registry hooks …`: registry events to webhooks — add, list, remove, log, deliver.

Imports only typer and rich at import time (the services load in the command bodies).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlops import console

if TYPE_CHECKING:
    from registry.db.hooks import Delivery
    from registry.hooks.delivery import Attempt

app = typer.Typer(
    help="Registry events (register, promote, rollback, archive, gate_failed) to webhooks.",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
SecretEnv = Annotated[
    str,
    typer.Option(
        "--secret-env", help="Environment variable holding the signing secret.", show_default=False
    ),
]
DEFAULT_EVENTS = "register,promote,rollback,archive,gate_failed"


def _url() -> str:
    from mlops.settings import Settings
    from registry.db.store import ensure_schema

    url = Settings.from_env().database_url
    ensure_schema(url)
    return url


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else ""


@app.command("add")
def add_cmd(
    url: Annotated[str, typer.Argument(help="The receiver's http(s) URL.", show_default=False)],
    secret_env: SecretEnv,
    wanted: Annotated[
        str, typer.Option("--events", help="Comma-separated events to send.")
    ] = DEFAULT_EVENTS,
    max_backoff: Annotated[
        float, typer.Option("--max-backoff", min=0.1, help="Longest wait between retries, s.")
    ] = 300.0,
    as_json: JsonFlag = False,
) -> None:
    """Send registry events to URL, signed with HMAC-SHA256 under the secret in
    --secret-env (the variable's name is stored, never its value)."""
    from mlops.errors import UserError
    from mlops.owners import current_actor
    from mlops.settings import redact
    from registry.db.hooks import HookStore
    from registry.hooks import events

    events.check_url(url)
    chosen = events.parse_events(wanted)
    events.check_env_name(secret_env, os.environ)
    store = HookStore(_url())
    same = [h for h in store.hooks() if h.url == url]
    if same:
        raise UserError(f"hook {same[0].id} already posts to {redact(url)}; remove it first")
    hook = store.add(url, chosen, secret_env, max_backoff, current_actor())
    if as_json:
        console.emit_json({**asdict(hook), "url": redact(hook.url)})
        return
    console.out.print(
        f"hook {hook.id}: {', '.join(hook.events)} → {redact(hook.url)} "
        f"(signed with ${hook.secret_env})",
        markup=False,
    )


@app.command("list")
def list_cmd(as_json: JsonFlag = False) -> None:
    """The hooks, their events and how many deliveries each still owes."""
    from rich.markup import escape

    from mlops.settings import redact
    from registry.db.hooks import HookStore

    store = HookStore(_url())
    hooks, pending = store.hooks(), store.pending_counts()
    rows = [{**asdict(h), "url": redact(h.url), "pending": pending.get(h.id, 0)} for h in hooks]
    shown = [[r["id"], escape(r["url"]), ",".join(r["events"]), r["secret_env"], r["pending"],
              escape(r["actor"])] for r in rows]  # fmt: skip
    if as_json:
        console.emit_json(rows)
        return
    if not rows:
        console.out.print("no hooks; add one with `mlops registry hooks add URL --secret-env NAME`")
        return
    console.table("Hooks", ["id", "url", "events", "secret env", "pending", "added by"], shown)


@app.command("remove")
def remove_cmd(
    hook_id: Annotated[int, typer.Argument(help="The hook's id.", show_default=False)],
) -> None:
    """Remove a hook and drop what it is still owed."""
    from mlops.errors import UserError
    from registry.db.hooks import HookStore

    if not HookStore(_url()).remove(hook_id):
        raise UserError(f"no hook {hook_id} (see `mlops registry hooks list`)")
    console.out.print(f"hook {hook_id} removed")


def _delivery_row(d: Delivery) -> dict[str, Any]:
    row = asdict(d)
    row.pop("body")
    return row


@app.command("log")
def log_cmd(
    hook_id: Annotated[int | None, typer.Option("--hook", help="One hook's deliveries.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The newest N.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Deliveries, oldest first: event, state, attempts, the last answer or error."""
    from rich.markup import escape

    from registry.db.hooks import HookStore

    found, total = HookStore(_url()).log(limit, hook_id)
    if as_json:
        console.emit_json([_delivery_row(d) for d in found])
        return
    rows = [
        [d.id, d.hook_id, d.event, d.model, d.version, d.state, d.attempts,
         d.last_status or "", escape(d.last_error),
         _when(d.delivered_at) if d.delivered_at else f"next {_when(d.next_at)}",
         d.event_id]
        for d in found
    ]  # fmt: skip
    columns = ["id", "hook", "event", "model", "version", "state", "attempts", "status",
               "error", "delivered", "idempotency key"]  # fmt: skip
    console.table("Deliveries", columns, rows)
    if total > len(found):
        console.out.print(f"showing {len(found)} of {total} deliveries; --limit for more")


def _json_line(attempt: Attempt) -> None:
    print(json.dumps({**asdict(attempt), "ok": attempt.ok}, sort_keys=True), flush=True)


def _report(attempt: Attempt) -> None:
    what = f"{attempt.event} {attempt.model}" + (
        f" v{attempt.version}" if attempt.version is not None else ""
    )
    how = f"HTTP {attempt.status}" if attempt.status is not None else attempt.error
    line = f"hook {attempt.hook}: delivery {attempt.delivery} {what}: {how}"
    if attempt.ok:
        console.err.print(line, markup=False, highlight=False)
    else:
        console.warning(f"{line} (retried with backoff)")


@app.command("deliver")
def deliver_cmd(
    watch: Annotated[bool, typer.Option("--watch", help="Keep delivering until stopped.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="With --watch: look every N s.")
    ] = 1.0,
    as_json: JsonFlag = False,
) -> None:
    """Send the deliveries that are due (with --watch, until SIGTERM or Ctrl-C; --json:
    one JSON line per attempt)."""
    from registry.hooks import delivery

    url = _url()
    if not watch:
        attempts = delivery.deliver_due(url)
        if as_json:
            console.emit_json([{**asdict(a), "ok": a.ok} for a in attempts])
        else:
            for attempt in attempts:
                _report(attempt)
        return
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    console.err.print(f"delivering registry events every {interval:g} s; Ctrl-C to stop")
    delivery.watch(url, interval, stop.is_set, _json_line if as_json else _report)


@app.command("listen")
def listen_cmd(
    secret_env: SecretEnv,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8787,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per event.")] = False,
) -> None:
    """Receive registry events: verify each signature and print one line per event (a
    receiver to try hooks with; yours verifies the same header)."""
    from mlops.errors import UserError
    from registry.hooks import events
    from registry.hooks.receiver import Receiver

    secret = os.environ.get(events.check_env_name(secret_env, os.environ), "").encode()

    def report(event: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(event, sort_keys=True), flush=True)
            return
        version = f" v{event.get('version')}" if event.get("version") is not None else ""
        stages = f" {event.get('from_stage')} → {event.get('to_stage')}"
        print(f"{event.get('type')} {event.get('model')}{version}{stages} by "
              f"{event.get('actor')} (ledger {event.get('ledger_id')})", flush=True)  # fmt: skip

    try:
        server = Receiver((host, port), secret, report)
    except OSError as exc:
        raise UserError(f"--port {port}: cannot listen on {host}: {exc.strerror}") from None
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    console.err.print(f"listening on http://{host}:{server.server_port}/ ; Ctrl-C to stop")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

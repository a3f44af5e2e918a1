"""`mlops serve`: resolve and verify the version, bind the port, then run uvicorn (one
worker) until SIGTERM or Ctrl-C, with the swap watcher and the sink alongside.

Everything that can fail because of the user's input (target, port, options, the token)
fails before the server starts, with one line. Listening beyond loopback without a token
is allowed but warned about (`exposure`).
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from mlops.errors import MlopsError, UserError
from mlops.exposure import is_loopback
from mlops.live import default_sink
from mlops.serving.app import create_app
from mlops.serving.auth import read_token
from mlops.serving.backends import BACKENDS
from mlops.serving.challenger import Canary, Shadow, parse_canary
from mlops.serving.metrics import ServingMetrics
from mlops.serving.model import load_version
from mlops.serving.sink import Sink
from mlops.serving.swap import State, Watcher
from registry.context import Context
from registry.loading import parse_target, resolve
from registry.stages import Ref

if TYPE_CHECKING:
    from mlops.serving.model import Served
    from mlops.settings import Settings
    from registry.db.store import Version

log = logging.getLogger("mlops.serve")
GRACEFUL_S = 10


@dataclass(frozen=True)
class ServeOptions:
    """What `mlops serve` was asked to do."""

    target: str
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "torch"
    poll_s: float = 5.0
    log_inputs: float = 0.0
    sink: Path | None = None
    max_batch: int = 1024
    threads: int = 1
    export: str | None = None  # the passing ONNX export to serve (`onnx-int8`, …)
    auth_token_env: str | None = None
    feedback: bool = False  # record every answer, so /feedback can join labels to them
    live_window: int = 1000
    batch_max: int = 0  # coalesce concurrent requests into model calls of at most this many rows
    batch_wait_ms: float = 2.0
    shadow: str | None = None  # MODEL@STAGE scoring every request off the response path
    canary: str | None = None  # MODEL@STAGE:P% answering a share of requests


@dataclass
class Prepared:
    """A verified version behind a bound socket, ready to run."""

    state: State
    sock: socket.socket
    workdir: Path
    watcher: Watcher | None = None
    challenger_watcher: Watcher | None = None
    signals: list[int] = field(default_factory=list)
    token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"


def check(options: ServeOptions) -> None:
    """Refuse bad options before any work (exit 2)."""

    parse_target(options.target)
    if options.backend not in BACKENDS:
        raise UserError(f"--backend {options.backend!r}: expected one of {', '.join(BACKENDS)}")
    if not 0.0 <= options.log_inputs <= 1.0:
        raise UserError(f"--log-inputs {options.log_inputs}: expected a fraction in [0, 1]")
    if options.export is not None:
        if options.backend != "onnx":
            raise UserError(f"--export {options.export}: serving an export needs --backend onnx")
        if not re.fullmatch(r"onnx(-int8)?(-pruned[0-9.]+)?", options.export):
            raise UserError(
                f"--export {options.export!r}: expected an ONNX export variant such as "
                "onnx, onnx-int8 or onnx-pruned50 (see the version's mlops.export.* tags)"
            )
    if options.auth_token_env is not None:
        read_token(options.auth_token_env)
    if options.batch_max < 0 or not 0 <= options.batch_wait_ms <= 1000:
        raise UserError(
            f"--batch-max {options.batch_max} --batch-wait-ms {options.batch_wait_ms:g}: "
            "expected rows >= 0 (0: off) and a wait of 0 to 1000 ms"
        )
    if options.shadow is not None and options.canary is not None:
        raise UserError("--shadow and --canary: give one challenger, not both")
    if options.canary is not None:
        parse_canary(options.canary)


def challenger_target(options: ServeOptions, name: str) -> str | None:
    """The challenger's MODEL@STAGE (or @VERSION), checked to be of the served model."""
    text = options.shadow or (parse_canary(options.canary)[0] if options.canary else None)
    if text is None:
        return None
    flag = "--shadow" if options.shadow else "--canary"
    other, _ = parse_target(text)
    if other != name:
        raise UserError(
            f"{flag} {text}: a challenger of {name} must be a version of {name} "
            "(its answers and labels are compared row by row)"
        )
    return text


def exposure(prepared: Prepared) -> str | None:
    """The warning for a server that listens beyond loopback without a token, else None."""
    host, port = prepared.sock.getsockname()[:2]
    if prepared.token is not None or is_loopback(host):
        return None
    where = "every interface" if host in ("0.0.0.0", "::") else "a non-loopback interface"
    return (
        f"serving {prepared.state.target} on {host}:{port} ({where}) without authentication: "
        "anyone who reaches this port can call /predict, /metadata and /metrics; set "
        "--auth-token-env NAME (a bearer token from that variable) or bind 127.0.0.1 behind "
        "an authenticating proxy"
    )


def bind(host: str, port: int, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A listening socket (port 0: a free one), or one line saying why not. With
    `reuse_port`, other sockets may bind the same port (`--workers`: one per worker, the
    kernel spreads the connections over them); without `listen`, it only holds the port."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted sockets only when
        # their proto says TCP (0 would leave Nagle on: 40 ms per keep-alive request).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise MlopsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if not listen:
        return sock
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True)
class Target:
    """The version a target names now, and the registry context it was resolved in."""

    ctx: Context
    name: str
    ref: Ref
    version: Version
    token: str | None = None  # the bearer token requests must carry (--auth-token-env)


def resolve_target(settings: Settings, options: ServeOptions) -> Target:
    """Check the options and the target and find the version (bad input: one line, before
    anything is downloaded or bound)."""

    check(options)
    token = read_token(options.auth_token_env) if options.auth_token_env else None
    name, ref = parse_target(options.target)
    ctx = Context.load(settings)
    if ref.stage is not None:
        ctx.policy.check_stage(ref.stage, exclusive=True)
    challenger = challenger_target(options, name)
    if challenger is not None:
        other = parse_target(challenger)[1]
        if other.stage is not None:
            ctx.policy.check_stage(other.stage, exclusive=True)
        resolve(ctx, name, other)  # an unknown stage or version: one line, before loading
    return Target(ctx, name, ref, resolve(ctx, name, ref), token)


def prepare(
    settings: Settings,
    options: ServeOptions,
    target: Target | None = None,
    sock: socket.socket | None = None,
) -> Prepared:
    """Resolve the target (unless given), load and verify it, bind the port (unless a
    bound `sock` is given: a worker of `--workers`); nothing is served yet."""

    target = target or resolve_target(settings, options)
    ctx, name, ref, version = target.ctx, target.name, target.ref, target.version
    sock = sock or bind(options.host, options.port)
    workdir = Path(tempfile.mkdtemp(prefix="mlops-serve-"))
    try:
        served = load_version(ctx, version, options.backend, workdir, options.max_batch,
                              options.threads, options.export)  # fmt: skip
        metrics = ServingMetrics(name)
        sink = None
        if options.log_inputs > 0 or options.feedback:
            path = options.sink or default_sink(settings, name)
            sink = _open_sink(path, options.log_inputs, metrics, options.feedback)
            sink.describe(name, served.input.sink_names)
            sink.describe_version(name, served.version, served.spec.task, served.spec.classes)
        state = State(served, options.target, ref.stage, metrics, sink, options.poll_s,
                      options.live_window, batch_max=options.batch_max,
                      batch_wait_ms=options.batch_wait_ms)  # fmt: skip
        metrics.serving(served, ref.stage)
        state.refresh_live(served)
        rival = _challenger(ctx, options, state, workdir / "challenger")
    except BaseException:
        sock.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    prepared = Prepared(state, sock, workdir, token=target.token)
    if ref.stage is not None and options.poll_s > 0:
        prepared.watcher = _watcher(ctx, state, options, workdir)
    if rival is not None and rival.stage is not None and options.poll_s > 0:
        prepared.challenger_watcher = _watcher(ctx, rival, options, workdir / "challenger")
    return prepared


def _challenger(ctx: Any, options: ServeOptions, state: State, workdir: Path) -> State | None:
    """Load the `--shadow` or `--canary` version beside the primary (its own state, same
    metrics and sink); None without one."""
    served = state.current
    text = challenger_target(options, served.name)
    if text is None:
        return None
    ref = parse_target(text)[1]
    workdir.mkdir()
    version = resolve(ctx, served.name, ref)
    loaded = load_version(ctx, version, options.backend, workdir, options.max_batch,
                          options.threads, options.export)  # fmt: skip
    role = "shadow" if options.shadow else "canary"
    rival = State(loaded, text, ref.stage, state.metrics, state.sink, options.poll_s,
                  options.live_window, role=role)  # fmt: skip
    state.metrics.serving(loaded, ref.stage, role)
    if state.sink is not None:
        state.sink.describe_version(loaded.name, loaded.version, loaded.spec.task,
                                    loaded.spec.classes)  # fmt: skip
        rival.refresh_live(loaded)
    if options.shadow:
        state.shadow = Shadow(rival, state.metrics, state.sink)
    else:
        state.canary = Canary(rival, parse_canary(options.canary or "")[1])
    return rival


def _open_sink(path: Path, fraction: float, metrics: ServingMetrics, answers: bool) -> Sink:

    try:
        return Sink(
            path, fraction, metrics.sink_rows.inc, metrics.sink_dropped.inc, answers=answers
        )
    except (OSError, sqlite3.Error) as exc:
        raise UserError(f"--sink {path}: cannot write there ({exc})") from None


def _watcher(ctx: Any, state: State, options: ServeOptions, workdir: Path) -> Watcher:
    name, stage = state.current.name, state.stage
    assert stage is not None

    def holder() -> int | None:
        return ctx.store.holders(name).get(stage)

    def load(version: int) -> Served:
        keep = {f"v{state.current.version}", f"v{version}"}
        for old in workdir.iterdir():  # files of versions swapped out earlier
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
        record = resolve(ctx, name, Ref(version=version))
        return load_version(ctx, record, options.backend, workdir, options.max_batch,
                            options.threads, options.export)  # fmt: skip

    return Watcher(state, holder, load, options.poll_s)


def _log_to_stderr() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def run(prepared: Prepared) -> list[int]:
    """Serve until SIGTERM or Ctrl-C (in-flight requests finish); the signals received."""

    _log_to_stderr()
    state = prepared.state
    config = uvicorn.Config(
        create_app(state, prepared.token),
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_S,
    )
    server = uvicorn.Server(config)

    # uvicorn re-raises the signal that stopped it once it has shut down: these handlers
    # take it, so a stop by SIGTERM or Ctrl-C is a clean exit.
    def received(signum: int, _frame: object) -> None:
        prepared.signals.append(signum)

    previous = {s: signal.signal(s, received) for s in (signal.SIGINT, signal.SIGTERM)}
    for watcher in (prepared.watcher, prepared.challenger_watcher):
        if watcher is not None:
            watcher.start()
    try:
        server.run(sockets=[prepared.sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        close(prepared)
    return prepared.signals


def close(prepared: Prepared) -> None:
    """Stop the watcher and the sink, release the socket and the downloaded files."""
    for watcher in (prepared.watcher, prepared.challenger_watcher):
        if watcher is not None:
            watcher.stop()
    if prepared.state.shadow is not None:
        prepared.state.shadow.close()
    if prepared.state.sink is not None:
        prepared.state.sink.close()
    prepared.sock.close()
    shutil.rmtree(prepared.workdir, ignore_errors=True)

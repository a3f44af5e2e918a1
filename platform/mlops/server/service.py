"""Start, inspect and stop the tracking server: what `mlops server …` does, minus printing."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from mlops.errors import Interrupted, MlopsError
from mlops.exposure import is_loopback
from mlops.server import auth as server_auth
from mlops.server import process
from mlops.server.process import ServerState
from mlops.settings import Settings


@dataclass(frozen=True)
class StartOptions:
    host: str = "127.0.0.1"
    port: int = 5000
    artifacts: str | None = None
    allowed_hosts: str | None = None
    auth_config: Path | None = None


@dataclass(frozen=True)
class Started:
    state: ServerState
    proc: subprocess.Popen[bytes]
    synced: list[tuple[str, str, str]]


def exposure(options: StartOptions) -> str | None:
    """The warning for a server that listens beyond loopback without auth, else None."""
    if options.auth_config is not None or is_loopback(options.host):
        return None
    wild = options.host.strip("[] ") in ("0.0.0.0", "::", "")
    where = "every network interface" if wild else options.host
    return (
        f"--host {options.host}: the MLflow server listens on {where}, port {options.port}, "
        "without authentication: anyone who reaches it can read, change and delete every "
        "run, model and artifact; add --auth --auth-config FILE (users and grants, see the "
        "README's Team mode) or bind 127.0.0.1 behind an authenticating proxy"
    )


def _refuse_running(settings: Settings) -> None:
    state = process.read_state(settings)
    if state is None:
        return
    alive = state.alive()
    if alive is None:
        raise MlopsError(f"a server of this project runs on {state.hostname} ({state.url})")
    if alive:
        raise MlopsError(
            f"a server already runs at {state.url} (pid {state.pid}); `mlops server stop` first"
        )
    process.forget(settings)  # a server that died without cleaning up


def check(settings: Settings, options: StartOptions) -> tuple[str, server_auth.AuthConfig | None]:
    """Refuse bad input and a running server (one line each); the artifacts destination
    and the checked users file."""
    process.backend_store(settings)
    artifacts = process.artifacts_destination(settings, options.artifacts)
    config = server_auth.load(options.auth_config) if options.auth_config else None
    _refuse_running(settings)
    process.check_port_free(options.host, options.port)
    return artifacts, config


def start(
    settings: Settings, options: StartOptions, wait: Callable[[str], Any] | None = None
) -> Started:
    """Check everything, start the server, wait until it answers, sync auth users.

    Bad input fails before anything starts; a server that does not come up is stopped
    and its state removed, with the last line of its log in the error."""
    artifacts, config = check(settings, options)
    folder = process.state_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    extra: dict[str, str] = {}
    if config is not None:
        _, extra = server_auth.write_server_config(config, folder)
        extra["MLFLOW_FLASK_SERVER_SECRET_KEY"] = process.secret_key(folder)
    cmd = process.command(
        settings, options.host, options.port, artifacts, options.allowed_hosts, config is not None
    )
    log = folder / "server.log"
    proc = process.spawn(cmd, process.environment(extra), log)
    state = process.new_state(
        proc, options.host, options.port, settings, artifacts, config is not None, log
    )
    process.record(settings, state)
    try:
        if wait is not None:
            wait(state.url)
        if not process.wait_healthy(state.url, proc):
            raise MlopsError(
                f"the server did not start on {state.url}: {process.tail(log)} (log: {log})"
            )
        synced: list[tuple[str, str, str]] = []
        if config is not None:
            api = server_auth.AuthApi(state.url, config.admin, config.admin_password)
            synced = server_auth.sync(api, config)
    except BaseException:
        process.terminate(state.pid, state.started, grace=10)
        proc.wait()
        process.forget(settings, state)
        raise
    return Started(state, proc, synced)


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def serve_foreground(settings: Settings, started: Started) -> int:
    """Wait on a started server until it exits or we get SIGTERM/SIGINT (then stop it)."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        return started.proc.wait()
    except (KeyboardInterrupt, Interrupted):
        process.terminate(started.state.pid, started.state.started)
        started.proc.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        process.forget(settings, started.state)


@dataclass(frozen=True)
class Status:
    running: bool
    healthy: bool
    state: ServerState | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self.state) if self.state else {}
        url = self.state.url if self.state else None
        return {"running": self.running, "healthy": self.healthy, "url": url, "note": self.note,
                **found}  # fmt: skip


def status(settings: Settings) -> Status:
    """Whether this project's server runs and answers."""
    state = process.read_state(settings)
    if state is None:
        return Status(False, False, None, "no server started (`mlops server start`)")
    alive = state.alive()
    if alive is False:
        return Status(False, False, state, f"pid {state.pid} is gone (the server died)")
    healthy = process.healthy(state.url)
    where = "" if alive else f" on {state.hostname}"
    note = "answers /health" if healthy else "does not answer /health"
    return Status(True, healthy, state, f"{note}{where}")


def stop(settings: Settings) -> str:
    """Stop this project's server; say what happened."""
    state = process.read_state(settings)
    if state is None:
        return "no server is running"
    alive = state.alive()
    if alive is None:
        raise MlopsError(f"the server runs on {state.hostname}: stop it there")
    if not alive:
        process.forget(settings, state)
        return f"the server (pid {state.pid}) was not running; its state was removed"
    killed = process.terminate(state.pid, state.started)
    process.forget(settings, state)
    return f"stopped the server at {state.url} (pid {state.pid}{', killed' if killed else ''})"

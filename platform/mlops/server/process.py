"""The tracking server process: the command line, its state file, start, status, stop.

The server runs `mlflow server` on the configured backend store (SQLite by default,
PostgreSQL in team mode) with served artifacts, one worker and job execution off (a
small machine runs it in about 300 MB instead of 2.4 GB). Its state — pid, start time,
URL, stores — lives in `<home>/server/server.json`, so `status` and `stop` find it
from any shell of the project.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from mlops.db import driver_url
from mlops.errors import MlopsError, UserError
from mlops.io import read_json, write_bytes, write_json
from mlops.owners import Owner, process_started
from mlops.settings import Settings, redact

STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class ServerState:
    """What `start` recorded about a running server."""

    host: str
    port: int
    pid: int
    started: float
    hostname: str
    backend: str
    artifacts: str
    auth: bool
    log: str

    @property
    def url(self) -> str:
        """Where clients reach it (`0.0.0.0` binds every interface: use loopback here)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def alive(self) -> bool | None:
        """Whether the recorded process still runs (None: another host's server)."""
        return Owner(self.hostname, self.pid, self.started).alive()


def state_dir(settings: Settings) -> Path:
    """`<home>/server`: state file, log, auth config of the server."""
    return settings.home / "server"


def state_file(settings: Settings) -> Path:
    return state_dir(settings) / "server.json"


def read_state(settings: Settings) -> ServerState | None:
    """The recorded server, or None; a damaged state file is an error naming it."""
    path = state_file(settings)
    if not path.is_file():
        return None
    try:
        return ServerState(**read_json(path))
    except (ValueError, TypeError) as exc:
        raise MlopsError(f"{path}: not a server state file ({exc}); delete it") from None


def backend_store(settings: Settings) -> str:
    """The database the server serves: the tracking URI, which must not be a server."""
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        raise UserError(
            f"MLOPS_TRACKING_URI={redact(uri)} is a server: the server itself needs a "
            "database (sqlite:///… or postgresql://…) there"
        )
    return uri


def artifacts_destination(settings: Settings, given: str | None) -> str:
    """Where served artifacts are stored: `given`, else the configured artifact root."""
    value = (given or "").strip() or settings.artifact_root
    if value.startswith("mlflow-artifacts:"):
        raise UserError(
            f"artifacts destination {value}: that is a server's proxy; give a folder or an "
            "object store (--artifacts-destination)"
        )
    return value


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that something already listens on (one line, before starting)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"--port {port}: {host}:{port} is not free ({exc.strerror})") from None


def command(
    settings: Settings,
    host: str,
    port: int,
    artifacts: str,
    allowed_hosts: str | None = None,
    auth: bool = False,
) -> list[str]:
    """The `mlflow server` command line, sized for a small machine."""
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", driver_url(backend_store(settings)),
        "--serve-artifacts",
        "--artifacts-destination", artifacts,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    if allowed_hosts:
        cmd += ["--allowed-hosts", with_default_hosts(allowed_hosts)]
    if auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def with_default_hosts(allowed_hosts: str) -> str:
    """`allowed_hosts` added to MLflow's defaults (localhost and private IPs): MLflow's
    `--allowed-hosts` replaces them, which would lock out the browser on localhost."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    given = [h.strip() for h in allowed_hosts.split(",") if h.strip()]
    return ",".join(dict.fromkeys([*get_default_allowed_hosts(), *given]))


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: no background job runner (it costs ~2 GB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_AUTH_")}
    return {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra or {})}


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start the server in its own session (stopped as a whole), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


def secret_key(folder: Path) -> str:
    """The Flask secret of the auth app's CSRF protection: `MLFLOW_FLASK_SERVER_SECRET_KEY`
    when set (several servers must share one), else one kept in `folder` across restarts."""
    given = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY", "")
    if given:
        return given
    path = folder / "secret_key"
    if not path.is_file():
        write_bytes(path, secrets.token_hex(32).encode())
        path.chmod(0o600)
    return path.read_text().strip()


def record(settings: Settings, state: ServerState) -> None:
    write_json(state_file(settings), asdict(state))


def forget(settings: Settings, state: ServerState | None = None) -> None:
    """Remove the state file (only if it still describes `state`, when given)."""
    path = state_file(settings)
    if state is not None and read_state(settings) != state:
        return
    path.unlink(missing_ok=True)


def new_state(
    proc: subprocess.Popen[bytes], host: str, port: int, settings: Settings, artifacts: str,
    auth: bool, log: Path,
) -> ServerState:  # fmt: skip
    return ServerState(
        host=host, port=port, pid=proc.pid, started=process_started(proc.pid) or 0.0,
        hostname=socket.gethostname(), backend=redact(settings.tracking_uri),
        artifacts=redact(artifacts), auth=auth, log=str(log),
    )  # fmt: skip


def healthy(url: str, timeout: float = 2.0, path: str = "/health") -> bool:
    """Whether `url/health` (or another `path`) answers 200 now."""

    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0, path: str = "/health"
) -> bool:
    """Poll `/health` (or `path`) until it answers; False if the process dies or time
    runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if healthy(url, path=path):
            return True
        time.sleep(0.3)
    return False


def terminate(pid: int, started: float, grace: float = STOP_GRACE_S) -> bool:
    """SIGTERM the server's process group, SIGKILL after `grace`; True if it had to kill."""
    owner = Owner(socket.gethostname(), pid, started)
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not owner.alive():
            return False
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def tail(log: Path, lines: int = 1) -> str:
    """The last meaningful line(s) of the server log, for error messages."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    useful = [line.strip() for line in text if line.strip()]
    errors = [line for line in useful if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return " | ".join((errors or useful)[-lines:])

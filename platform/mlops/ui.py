"""Starting an MLflow server process (the UI) on the configured stores."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from mlops.config import Settings
from mlops.db import driver_url


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(settings: Settings, host: str, port: int, workers: int = 1) -> list[str]:
    """The `mlflow server` command line for these settings, sized for a small machine."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", driver_url(settings.tracking_uri),
        "--default-artifact-root", settings.artifact_root,
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip


def server_env() -> dict[str, str]:
    """Environment for the server: no background job runner (it costs ~2 GB)."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def start_server(settings: Settings, host: str, port: int) -> subprocess.Popen[bytes]:
    """Start the server in its own process group (so it can be stopped as a whole)."""
    if settings.tracking_uri.startswith("sqlite:///"):
        path = settings.tracking_uri.removeprefix("sqlite:///")
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return subprocess.Popen(
        server_command(settings, host, port), env=server_env(), start_new_session=True
    )


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> bool:
    """Poll `url/health` until it answers 200; False if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def stop_server(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass

"""`mlops ui`: an MLflow server process on the configured stores, attached to the shell.

It shares the command line and the process handling of `mlops server` (one worker, job
execution off); unlike `mlops server start` it records no state and stops with the shell.
"""

from __future__ import annotations

import os
import subprocess

from mlops.owners import process_started
from mlops.server import process as server
from mlops.settings import Settings


def start_server(settings: Settings, host: str, port: int) -> subprocess.Popen[bytes]:
    """Start the server in its own process group (so it can be stopped as a whole)."""
    if settings.tracking_uri.startswith("sqlite:///"):
        os.makedirs(
            os.path.dirname(settings.tracking_uri.removeprefix("sqlite:///")), exist_ok=True
        )
    artifacts = server.artifacts_destination(settings, None)
    return subprocess.Popen(
        server.command(settings, host, port, artifacts),
        env=server.environment(),
        start_new_session=True,
    )


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> bool:
    """Poll `url/health` until it answers 200; False if the process dies or time runs out."""
    return server.wait_healthy(url, process, timeout)


def stop_server(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after `grace` seconds."""
    if process.poll() is not None:
        return
    server.terminate(process.pid, process_started(process.pid) or 0.0, grace)
    process.wait()

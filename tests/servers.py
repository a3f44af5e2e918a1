"""Starting `mlops serve` in a project and waiting for a server process to answer."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlops.exposure import free_port
from tests.e2e.project import clean_env


def wait_ready(
    process: subprocess.Popen[str], port: int, timeout: float = 120.0, path: str = "/ready"
) -> None:
    """Until GET `path` on 127.0.0.1:`port` answers 200; fails if the process exits first
    (with what it printed) or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"server exited {process.returncode}\n{out}\n{err}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("server not ready in time")


@contextmanager
def serving(root: Path, target: str, *args: str) -> Iterator[int]:
    """`mlops serve TARGET ARGS…` in the project `root` on a free port, ready: its port.
    Stopped (and its output drained) on the way out."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlops", "serve", target, "--port", str(port), *args]
    process = subprocess.Popen(
        cmd, cwd=root, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_ready(process, port)
        yield port
    finally:
        process.terminate()
        process.communicate(timeout=30)

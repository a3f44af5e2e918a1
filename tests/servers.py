"""Waiting for a server process the tests started to answer."""

from __future__ import annotations

import http.client
import subprocess
import time


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

"""Who holds something: host, pid and the pid's start time, and whether that process
still lives. Locks and runs record an owner so a dead holder can be recovered."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


def process_started(pid: int) -> float | None:
    """Start time of a live process (None if gone, or a zombie awaiting its parent)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    """A process: its host, pid and start time (a reused pid has another start time)."""

    host: str
    pid: int
    started: float

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_started(pid) or 0.0)

    def alive(self) -> bool | None:
        """True or False on this host; None for another host's process (we cannot tell)."""
        if self.host != socket.gethostname():
            return None
        actual = process_started(self.pid)
        return actual is not None and abs(actual - self.started) < 1.0

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid}"

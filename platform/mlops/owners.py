"""Who holds something: host, pid and the pid's start time, and whether that process
still lives. Locks and runs record an owner so a dead holder can be recovered; `Lease`
is the one rule by which every lock of the platform decides that its holder is gone."""

from __future__ import annotations

import ctypes
import getpass
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

import psutil


def current_actor() -> str:
    """Who acts, for ledgers and schedules: `MLOPS_USER`, else the OS user."""

    return os.environ.get("MLOPS_USER", "").strip() or getpass.getuser()


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for children that must get SIGTERM when their parent dies, so a
    killed coordinator leaves no orphan running on its own (Linux; None elsewhere).

    `prctl` is looked up here, in the parent: between fork and exec the child only calls
    it (no import, no dlopen, no lock another thread could have held)."""
    if not sys.platform.startswith("linux"):
        return None

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return preexec


def process_started(pid: int) -> float | None:
    """Start time of a live process (None if gone, or a zombie awaiting its parent)."""

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


@dataclass(frozen=True)
class Lease:
    """A lock's holder and when its hold runs out (pushed on while it works).

    The rule of every named lock (a registry model's, a schedule's): on this host the
    process table decides, so a live holder keeps its lock even past the expiry and a dead
    one loses it at once; another host's holder, which we cannot see, keeps it until the
    expiry (tests/integration/test_leases.py checks both locks against it)."""

    owner: Owner
    expires_at: float

    def dead(self, now: float) -> bool:
        """Whether the lock may be taken from its holder at `now`."""
        alive = self.owner.alive()
        return alive is False or (alive is None and self.expires_at < now)

"""The platform's two named locks — a registry model's (stage changes) and a schedule's
(its one running run) — follow one lease rule, checked here on both, over SQLite and
PostgreSQL:

- a free lock is taken; a held one is not;
- on this host the process table decides: a live holder keeps its lock even past its
  expiry, a dead holder loses it at once, even before;
- another host's holder, whom we cannot see, keeps it until its expiry, then loses it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from mlops import db
from mlops.errors import StoreError
from mlops.owners import Owner, process_started
from mlops.scheduling.db.models import LockRow as ScheduleLockRow
from mlops.scheduling.store import Schedule, ScheduleStore
from registry.db.models import LockRow as RegistryLockRow
from registry.db.store import RegistryStore


class Lock(Protocol):
    """A named lock as the contract sees it."""

    def take(self, name: str) -> bool:
        """Take and release the lock `name`; False if its holder keeps it."""

    def held_by(self, name: str, owner: Owner, expires_at: float) -> None:
        """Make `owner` the holder of `name` until `expires_at`."""


class RegistryLock:
    def __init__(self, url: str) -> None:
        self.store = RegistryStore(url)

    def take(self, name: str) -> bool:
        try:
            with self.store.lock(name, wait=0.3):
                return True
        except StoreError:
            return False

    def held_by(self, name: str, owner: Owner, expires_at: float) -> None:
        with db.session(self.store.url) as s:
            s.add(
                RegistryLockRow(
                    name=name, owner=uuid.uuid4().hex, host=owner.host, pid=owner.pid,
                    pid_started=owner.started, expires_at=expires_at,
                )
            )  # fmt: skip


class ScheduleLock:
    def __init__(self, url: str) -> None:
        self.store = ScheduleStore(url)

    def _schedule(self, name: str) -> Schedule:
        found = self.store.get(name)
        if found is None:
            self.store.add(Schedule(name, "digits", "*/5 * * * *", "UTC", trials=1))
            found = self.store.get(name)
        assert found is not None
        return found

    def take(self, name: str) -> bool:
        now = time.time()
        run = self.store.start_run(self._schedule(name), "manual", None, now, 0, now + 600)
        if run is None:
            return False
        self.store.finish_run(run, "succeeded", time.time())
        self.store.release(name, run)
        return True

    def held_by(self, name: str, owner: Owner, expires_at: float) -> None:
        now = time.time()
        run = self.store.start_run(self._schedule(name), "manual", None, now, 0, expires_at)
        assert run is not None
        with db.session(self.store.url) as s:
            row = s.get(ScheduleLockRow, name)
            assert row is not None
            row.host, row.pid, row.pid_started = owner.host, owner.pid, owner.started


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'platform.db'}"
    made: str = request.getfixturevalue("pg_database")
    return made


@pytest.fixture(params=["registry", "schedule"])
def lock(request: pytest.FixtureRequest, url: str) -> Lock:
    kinds: dict[str, Callable[[str], Lock]] = {"registry": RegistryLock, "schedule": ScheduleLock}
    return kinds[request.param](url)


@dataclass
class Process:
    owner: Owner
    child: subprocess.Popen[bytes]


@pytest.fixture
def other() -> Iterator[Process]:
    """Another live process on this host."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        started = None
        while started is None:
            started = process_started(child.pid)
        yield Process(Owner(socket.gethostname(), child.pid, started), child)
    finally:
        child.kill()
        child.wait()


HOUR = 3600.0


def test_a_free_lock_is_taken_and_released(lock: Lock) -> None:
    assert lock.take("free")
    assert lock.take("free")  # released


def test_a_live_holder_here_keeps_it_before_and_past_its_expiry(lock: Lock, other: Process) -> None:
    lock.held_by("fresh", other.owner, time.time() + HOUR)
    assert not lock.take("fresh")
    lock.held_by("expired", other.owner, time.time() - HOUR)
    assert not lock.take("expired")


def test_a_dead_holder_here_loses_it_at_once(lock: Lock, other: Process) -> None:
    lock.held_by("dead", other.owner, time.time() + HOUR)
    other.child.kill()
    other.child.wait()
    assert lock.take("dead")


def test_another_hosts_holder_keeps_it_until_its_expiry(lock: Lock) -> None:
    there = Owner("elsewhere.invalid", 4242, 1.0)
    lock.held_by("remote", there, time.time() + HOUR)
    assert not lock.take("remote")
    lock.held_by("remote-expired", there, time.time() - 1)
    assert lock.take("remote-expired")

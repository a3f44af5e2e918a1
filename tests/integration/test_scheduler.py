"""The scheduler in process, on the embedded SQLite database and on PostgreSQL, with a
fake clock: fire times, coalescing after downtime, missed firings past the grace
window, pause/resume, overlapping runs, two schedulers on one database, recovery of
a dead holder's lock, a restart, and a clean shutdown.

The run processes are real but cheap (`python -c ...`), never a sweep (the real fire
process is covered by the sweep tests). The scheduler records a run process that ends
without recording an outcome as `failed` ("... without a result"); a run that should
succeed records it itself through `ScheduleStore.finish_run`, as the fire process does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
import pytest
from sqlalchemy import update

from mlops import db
from mlops.errors import MlopsError
from mlops.owners import Owner
from mlops.scheduling import service
from mlops.scheduling.db.models import LockRow, ScheduleRow
from mlops.scheduling.scheduler import LOCK_TTL_S, Scheduler
from mlops.scheduling.store import Run, Schedule, ScheduleStore
from mlops.settings import Settings
from tests.integration import sweep_project as sp
from tests.integration.conftest import PG

# The `backend` fixture (conftest.py) puts these stores on PostgreSQL in its second run.
pytestmark = pytest.mark.stores("database")

WAIT_S = 30.0  # waiting for a run process to end: a hang fails instead of blocking
CHILD_CAP_S = 30  # no run process of these tests lives longer
MARKER = "mlops-scheduler-test-child"  # in every run process's command line
NO_RESULT = "without a result"

Command = Callable[[Run], list[str]]


def at(hour: int, minute: int, second: int = 0, day: int = 15) -> float:
    """A fake time: 2030-01-`day` `hour`:`minute`:`second` UTC, in epoch seconds."""
    return datetime(2030, 1, day, hour, minute, second, tzinfo=UTC).timestamp()


class FakeClock:
    """The scheduler's clock, moved by the test; `sleep` just moves it."""

    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def set(self, when: float) -> None:
        self.t = when


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", f"# {MARKER}\n{code}"]


def exits(code: int = 0) -> Command:
    """A run process that ends at once, recording nothing."""
    return lambda run: _python(f"import sys; sys.exit({code})")


def sleeps(seconds: float) -> Command:
    """A run process that sleeps, recording nothing."""
    assert seconds <= CHILD_CAP_S
    return lambda run: _python(f"import time; time.sleep({seconds})")


def waits_for(flag: Path) -> Command:
    """A run process that lives until `flag` exists (at most CHILD_CAP_S)."""
    code = (
        "import os, time\n"
        f"end = time.monotonic() + {CHILD_CAP_S}\n"
        f"while not os.path.exists({str(flag)!r}) and time.monotonic() < end:\n"
        "    time.sleep(0.02)\n"
    )
    return lambda run: _python(code)


def succeeds(url: str, clock: FakeClock) -> Command:
    """A run process that records its run `succeeded` (at the fake time it started),
    as the real fire process does."""

    def command(run: Run) -> list[str]:
        return _python(
            "from mlops.scheduling.store import ScheduleStore\n"
            f"ok = ScheduleStore({url!r}).finish_run({run.id}, 'succeeded', {clock.now()!r})\n"
            f"print('run {run.id} recorded', ok)\n"
        )

    return command


def marked_children() -> list[psutil.Process]:
    """Live run processes of this test process."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any(MARKER in a for a in p.cmdline()):
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


@dataclass
class Bench:
    """A project with a platform database, a fake clock and the schedulers made."""

    settings: Settings
    store: ScheduleStore
    clock: FakeClock
    made: list[Scheduler] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.settings.database_url

    def scheduler(self, command: Command, store: ScheduleStore | None = None) -> Scheduler:
        made = Scheduler(self.settings, store or self.store, self.clock, command, tick=5.0)
        self.made.append(made)
        return made

    def add(self, name: str, cron: str, when: float, grace: float = 3600.0) -> Schedule:
        """`service.add` at fake time `when` (the clock moves there)."""
        self.clock.set(when)
        draft = Schedule(name, sp.PIPELINE, cron, "UTC", trials=2, grace=grace)
        return service.add(self.store, self.settings, draft, now=when).schedule

    def tick(self, scheduler: Scheduler, when: float) -> list[int]:
        self.clock.set(when)
        return scheduler.tick()

    def next_fire(self, name: str) -> float | None:
        found = self.store.get(name)
        assert found is not None
        return found.next_fire_at

    def run(self, run_id: int) -> Run:
        found = self.store.run(run_id)
        assert found is not None
        return found


def wait_child(scheduler: Scheduler, run_id: int) -> int:
    """Wait (real time) for the run process of `run_id` to end; its exit code."""
    return scheduler.children[run_id].process.wait(timeout=WAIT_S)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits project written once; each test copies it."""
    root = tmp_path_factory.mktemp("scheduler-template")
    sp.write_project(root)
    return root


@pytest.fixture
def bench(project: Path, template: Path, backend: dict[str, str]) -> Iterator[Bench]:
    """A fresh project on the backend; every scheduler made is shut down afterwards
    (so no run process outlives the test)."""
    shutil.copyfile(template / "params.yaml", project / "params.yaml")
    shutil.copytree(template / "data", project / "data")
    settings = sp.settings(project, backend)
    assert settings.database_url.startswith("postgresql" if backend else "sqlite")
    made = Bench(settings, ScheduleStore(settings.database_url), FakeClock(at(9, 0)))
    try:
        yield made
    finally:
        for scheduler in made.made:
            scheduler.shutdown()


# fire times


def test_fires_at_the_cron_time_once(bench: Bench, tmp_path: Path) -> None:
    added = bench.add("every5", "*/5 * * * *", at(10, 2))
    assert added.next_fire_at == at(10, 5)
    assert bench.next_fire("every5") == at(10, 5)
    # The run process lives until the flag: the tick at 10:05:30 must find it running (one
    # that ended at once could already be reaped there, a race on a busy machine).
    flag = tmp_path / "end-the-run"
    scheduler = bench.scheduler(waits_for(flag))

    assert bench.tick(scheduler, at(10, 4)) == []
    assert bench.store.runs("every5") == []
    assert bench.next_fire("every5") == at(10, 5)

    started = bench.tick(scheduler, at(10, 5, 1))
    assert len(started) == 1
    run = bench.run(started[0])
    assert (run.schedule, run.kind, run.status) == ("every5", "scheduled", "running")
    assert (run.fire_time, run.started_at, run.coalesced) == (at(10, 5), at(10, 5, 1), 0)
    assert run.trials_requested == 2
    assert run.owner == str(Owner.current())
    assert bench.next_fire("every5") == at(10, 10)
    holder = bench.store.holder("every5")
    assert holder is not None
    assert (holder.run_id, holder.owner) == (run.id, Owner.current())
    assert holder.expires_at == at(10, 5, 1) + LOCK_TTL_S

    # The same fire time is not fired twice.
    assert bench.tick(scheduler, at(10, 5, 30)) == []
    assert [r.id for r in bench.store.runs("every5")] == [run.id]

    # The process ended without recording an outcome: reaped as failed, lock released.
    flag.touch()
    assert wait_child(scheduler, run.id) == 0
    assert bench.tick(scheduler, at(10, 6)) == []
    reaped = bench.run(run.id)
    assert reaped.status == "failed"
    assert reaped.error == "the run process ended (exit code 0) without a result"
    assert reaped.ended_at == at(10, 6)
    assert bench.store.holder("every5") is None
    assert scheduler.children == {}
    assert Path(reaped.log_path).is_file()
    assert bench.store.last_runs()["every5"].id == run.id


def test_failed_run_process_exit_code_is_recorded(bench: Bench) -> None:
    bench.add("fails", "*/5 * * * *", at(10, 2))
    scheduler = bench.scheduler(exits(3))
    [run_id] = bench.tick(scheduler, at(10, 5, 1))
    assert wait_child(scheduler, run_id) == 3
    bench.tick(scheduler, at(10, 5, 10))
    run = bench.run(run_id)
    assert run.status == "failed"
    assert "(exit code 3)" in run.error and NO_RESULT in run.error


def test_catch_up_coalesces_the_fire_times_missed_while_down(bench: Bench) -> None:
    bench.add("every5", "*/5 * * * *", at(10, 2))
    scheduler = bench.scheduler(exits(0))
    # Down from before 10:05 until 10:33: 10:05, 10:10, ..., 10:30 are due.
    started = bench.tick(scheduler, at(10, 33))
    assert len(started) == 1
    [run] = bench.store.runs("every5")
    assert run.id == started[0]
    assert (run.kind, run.status, run.coalesced) == ("catch-up", "running", 5)
    assert run.fire_time == at(10, 30)
    assert bench.next_fire("every5") == at(10, 35)
    assert len(scheduler.children) == 1

    wait_child(scheduler, run.id)
    # Back on time: the next fire time is a plain scheduled run.
    [following] = bench.tick(scheduler, at(10, 35, 2))
    assert bench.run(run.id).status == "failed"  # reaped first
    nxt = bench.run(following)
    assert (nxt.kind, nxt.fire_time, nxt.coalesced) == ("scheduled", at(10, 35), 0)
    wait_child(scheduler, following)


def test_daily_schedule_past_its_grace_window_is_missed(bench: Bench) -> None:
    bench.add("nightly", "0 2 * * *", at(1, 0), grace=3600.0)
    bench.add("early", "30 4 * * *", at(1, 0), grace=3600.0)
    assert bench.next_fire("nightly") == at(2, 0)
    scheduler = bench.scheduler(exits(0))

    # The scheduler comes back at 05:00: 02:00 is 3 h late (past the 1 h grace),
    # 04:30 half an hour late (within it).
    started = bench.tick(scheduler, at(5, 0))

    [missed] = bench.store.runs("nightly")
    assert (missed.kind, missed.status, missed.fire_time) == ("missed", "missed", at(2, 0))
    assert missed.coalesced == 0
    assert missed.started_at == missed.ended_at == at(5, 0)
    assert "grace window (3600 s)" in missed.error
    assert bench.store.holder("nightly") is None
    assert bench.next_fire("nightly") == at(2, 0, day=16)

    [caught] = bench.store.runs("early")
    assert started == [caught.id]  # the missed firing started no run process
    assert (caught.kind, caught.fire_time) == ("catch-up", at(4, 30))
    assert list(scheduler.children) == [caught.id]
    assert bench.next_fire("early") == at(4, 30, day=16)
    wait_child(scheduler, caught.id)


# pause / resume


def test_paused_schedule_does_not_fire_and_resume_does_not_catch_up(bench: Bench) -> None:
    bench.add("every5", "*/5 * * * *", at(10, 2))
    scheduler = bench.scheduler(exits(0))
    bench.clock.set(at(10, 3))
    paused = service.pause(bench.store, "every5")
    assert paused.paused and paused.next_fire_at == at(10, 5)

    for when in (at(10, 5, 1), at(10, 12), at(10, 20, 1)):
        assert bench.tick(scheduler, when) == []
    assert bench.store.runs("every5") == []

    resumed = service.resume(bench.store, "every5", now=at(10, 22, 30))
    assert not resumed.paused
    assert resumed.next_fire_at == at(10, 25)
    # Nothing of the paused period (10:05 ... 10:20) is caught up.
    assert bench.tick(scheduler, at(10, 22, 31)) == []
    assert bench.store.runs("every5") == []

    [run_id] = bench.tick(scheduler, at(10, 25, 1))
    run = bench.run(run_id)
    assert (run.kind, run.fire_time, run.coalesced) == ("scheduled", at(10, 25), 0)
    assert bench.next_fire("every5") == at(10, 30)
    wait_child(scheduler, run_id)


# overlap


def test_fire_time_while_a_run_is_going_is_skipped(bench: Bench, tmp_path: Path) -> None:
    flag = tmp_path / "release"
    bench.add("every5", "*/5 * * * *", at(10, 2))
    scheduler = bench.scheduler(waits_for(flag))
    [first] = bench.tick(scheduler, at(10, 5, 1))
    assert len(marked_children()) == 1

    # While it runs, each tick renews its lock.
    assert bench.tick(scheduler, at(10, 7)) == []
    holder = bench.store.holder("every5")
    assert holder is not None
    assert (holder.run_id, holder.expires_at) == (first, at(10, 7) + LOCK_TTL_S)

    # The next fire time comes while the run process lives: skipped, no second process.
    assert bench.tick(scheduler, at(10, 10, 1)) == []
    runs = bench.store.runs("every5")
    assert len(runs) == 2 and runs[0].id == first
    skipped = runs[1]
    assert (skipped.kind, skipped.status, skipped.fire_time) == (
        "scheduled",
        "skipped",
        at(10, 10),
    )
    assert skipped.error.startswith(f"run {first} (") and "is still going" in skipped.error
    assert skipped.ended_at == at(10, 10, 1)
    assert bench.run(first).status == "running"
    assert list(scheduler.children) == [first]
    assert len(marked_children()) == 1
    assert bench.next_fire("every5") == at(10, 15)
    assert bench.store.holder("every5").run_id == first  # type: ignore[union-attr]

    # The run ends; the next tick reaps it, then fires the next time.
    flag.touch()
    assert wait_child(scheduler, first) == 0
    [second] = bench.tick(scheduler, at(10, 15, 1))
    assert second not in (first, skipped.id)
    assert bench.run(first).status == "failed"
    run = bench.run(second)
    assert (run.kind, run.status, run.fire_time) == ("scheduled", "running", at(10, 15))
    assert bench.store.holder("every5").run_id == second  # type: ignore[union-attr]
    assert list(scheduler.children) == [second]
    wait_child(scheduler, second)


# two schedulers on one database


def test_two_schedulers_fire_a_due_time_once(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    bench.add("every5", "*/5 * * * *", at(10, 2))
    other_store = ScheduleStore(bench.url)
    a = bench.scheduler(exits(0))
    b = bench.scheduler(exits(0), store=other_store)

    # Both tick the same due time at the same moment.
    bench.clock.set(at(10, 5, 1))
    barrier = threading.Barrier(2)

    def tick(scheduler: Scheduler) -> list[int]:
        barrier.wait(timeout=WAIT_S)
        return scheduler.tick()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(tick, [a, b]))
    started = results[0] + results[1]
    assert len(started) == 1
    assert [r.id for r in bench.store.runs("every5")] == started
    assert bench.next_fire("every5") == at(10, 10)
    for scheduler in (a, b):
        for run_id in list(scheduler.children):
            wait_child(scheduler, run_id)
        assert bench.tick(scheduler, at(10, 6)) == []  # the winner reaps its run
    assert bench.store.holder("every5") is None

    # Both read the schedule before either claims it: the claim decides, the loser
    # records nothing (not even a skipped firing).
    stale = other_store.schedules()
    assert [s.next_fire_at for s in stale] == [at(10, 10)]
    [run_id] = bench.tick(a, at(10, 10, 1))
    monkeypatch.setattr(other_store, "schedules", lambda: stale)
    assert b.tick() == []
    assert [r.id for r in bench.store.runs("every5")] == [started[0], run_id]
    assert b.children == {}
    wait_child(a, run_id)
    bench.tick(a, at(10, 11))
    assert {r.status for r in bench.store.runs("every5")} == {"failed"}


def test_claim_is_a_compare_and_set(bench: Bench) -> None:
    bench.add("every5", "*/5 * * * *", at(10, 2))
    first, second = ScheduleStore(bench.url), ScheduleStore(bench.url)
    assert first.claim("every5", at(10, 5), at(10, 10)) is True
    assert second.claim("every5", at(10, 5), at(10, 10)) is False
    assert bench.next_fire("every5") == at(10, 10)
    assert second.claim("every5", at(10, 10), at(10, 15)) is True
    assert first.claim("every5", at(10, 10), at(10, 15)) is False
    assert bench.next_fire("every5") == at(10, 15)
    assert first.claim("no-such", at(10, 15), at(10, 20)) is False
    # A schedule that never fires again.
    assert first.claim("every5", at(10, 15), None) is True
    assert bench.next_fire("every5") is None


# run locks


def _start_run_in_dead_process(bench: Bench, name: str, now: float) -> tuple[int, int]:
    """Start a run of `name` (taking its lock) in a child process that then exits:
    its pid and the run id."""
    code = (
        "import os\n"
        "from mlops.scheduling.store import ScheduleStore\n"
        f"store = ScheduleStore({bench.url!r})\n"
        f"schedule = store.get({name!r})\n"
        f"run_id = store.start_run(schedule, 'manual', None, {now!r}, 0, {now + 86400.0!r})\n"
        "print(os.getpid(), run_id)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=bench.settings.root,
        capture_output=True,
        text=True,
        timeout=WAIT_S * 2,
    )
    assert done.returncode == 0, done.stderr
    pid, run_id = (int(v) for v in done.stdout.split())
    return pid, run_id


def test_start_run_recovers_a_dead_holders_lock(bench: Bench) -> None:
    schedule = bench.add("every5", "*/5 * * * *", at(10, 2))
    pid, old = _start_run_in_dead_process(bench, "every5", at(10, 3))
    holder = bench.store.holder("every5")
    assert holder is not None
    assert (holder.run_id, holder.owner.pid) == (old, pid)
    assert holder.expires_at > at(12, 0)  # not expired: the process table decides
    assert holder.owner.alive() is False
    assert bench.run(old).status == "running"

    new = bench.store.start_run(schedule, "manual", None, at(10, 4), 0, at(10, 6))
    assert new is not None and new != old
    abandoned = bench.run(old)
    assert abandoned.status == "abandoned"
    assert abandoned.ended_at == at(10, 4)
    assert abandoned.error == f"its holder ({holder.owner}) died"
    holder = bench.store.holder("every5")
    assert holder is not None
    assert (holder.run_id, holder.owner) == (new, Owner.current())
    # Recovered once: the abandoned run is not finished again.
    assert bench.store.finish_run(old, "succeeded", at(10, 5)) is False
    assert bench.run(old).status == "abandoned"


def test_scheduler_fires_after_recovering_a_dead_holders_lock(bench: Bench) -> None:
    bench.add("every5", "*/5 * * * *", at(10, 2))
    _, old = _start_run_in_dead_process(bench, "every5", at(10, 3))
    scheduler = bench.scheduler(exits(0))
    [new] = bench.tick(scheduler, at(10, 5, 1))
    assert bench.run(old).status == "abandoned"
    assert bench.run(old).ended_at == at(10, 5, 1)
    run = bench.run(new)
    assert (run.kind, run.status, run.fire_time) == ("scheduled", "running", at(10, 5))
    assert [r.status for r in bench.store.runs("every5")] == ["abandoned", "running"]
    wait_child(scheduler, new)


def test_a_live_holder_is_not_recovered_even_past_its_expiry(bench: Bench) -> None:
    schedule = bench.add("every5", "*/5 * * * *", at(10, 2))
    # This process holds the lock; its expiry is long past.
    mine = bench.store.start_run(schedule, "manual", None, at(10, 3), 0, at(10, 3) - 600)
    assert mine is not None
    holder = bench.store.holder("every5")
    assert holder is not None and holder.owner == Owner.current()
    assert holder.expires_at < at(10, 3)
    assert holder.dead(at(11, 0)) is False

    assert bench.store.start_run(schedule, "manual", None, at(11, 0), 0, at(11, 2)) is None
    assert [r.id for r in bench.store.runs("every5")] == [mine]  # nothing written
    assert bench.run(mine).status == "running"
    assert bench.store.holder("every5").run_id == mine  # type: ignore[union-attr]

    # Neither is the scheduler's: it records a skipped firing.
    scheduler = bench.scheduler(exits(0))
    assert bench.tick(scheduler, at(11, 0, 1)) == []
    skipped = bench.store.runs("every5")[-1]
    assert skipped.status == "skipped" and skipped.error.startswith(f"run {mine} (")
    assert scheduler.children == {}

    # Only its own run releases it.
    bench.store.release("every5", mine + 1000)
    assert bench.store.holder("every5").run_id == mine  # type: ignore[union-attr]
    assert bench.store.renew("every5", mine + 1000, at(12, 0)) is False
    assert bench.store.renew("every5", mine, at(12, 0)) is True
    assert bench.store.finish_run(mine, "succeeded", at(11, 1)) is True
    bench.store.release("every5", mine)
    assert bench.store.holder("every5") is None
    assert bench.store.start_run(schedule, "manual", None, at(11, 2), 0, at(11, 4)) is not None


def test_another_hosts_holder_is_recovered_only_once_expired(bench: Bench) -> None:
    schedule = bench.add("every5", "*/5 * * * *", at(10, 2))
    theirs = bench.store.start_run(schedule, "manual", None, at(10, 3), 0, at(10, 5))
    assert theirs is not None
    with db.session(bench.url) as s:
        row = s.get(LockRow, "every5")
        assert row is not None
        row.host = "elsewhere.invalid"
    holder = bench.store.holder("every5")
    assert holder is not None and holder.owner.alive() is None

    # Not expired yet: it may still be running there.
    assert bench.store.start_run(schedule, "manual", None, at(10, 4), 0, at(10, 6)) is None
    assert bench.run(theirs).status == "running"
    # Expired: recovered.
    mine = bench.store.start_run(schedule, "manual", None, at(10, 6), 0, at(10, 8))
    assert mine is not None
    assert bench.run(theirs).status == "abandoned"
    assert "elsewhere.invalid" in bench.run(theirs).error
    assert bench.store.holder("every5").run_id == mine  # type: ignore[union-attr]


# restart


def test_schedules_and_history_survive_a_restart(bench: Bench) -> None:
    bench.add("every5", "*/5 * * * *", at(10, 2))
    bench.add("idle", "0 * * * *", at(10, 2))
    service.pause(bench.store, "idle")
    before = bench.scheduler(succeeds(bench.url, bench.clock))
    [first] = bench.tick(before, at(10, 5, 1))
    assert wait_child(before, first) == 0
    bench.tick(before, at(10, 6))  # reaped: the outcome the run recorded stands
    done = bench.run(first)
    assert (done.status, done.ended_at, done.error) == ("succeeded", at(10, 5, 1), "")
    assert "recorded True" in Path(done.log_path).read_text()
    schedules, history = bench.store.schedules(), bench.store.runs()

    # A new process: a new store and a new scheduler on the same database.
    store = ScheduleStore(bench.url)
    assert store.schedules() == schedules
    assert [s.name for s in schedules] == ["every5", "idle"]
    assert store.get("every5").next_fire_at == at(10, 10)  # type: ignore[union-attr]
    assert store.get("idle").paused  # type: ignore[union-attr]
    assert store.runs() == history
    assert store.last_runs() == {"every5": done}
    after = bench.scheduler(succeeds(bench.url, bench.clock), store=store)
    assert bench.tick(after, at(10, 9)) == []
    [second] = bench.tick(after, at(10, 10, 2))
    assert second > first
    run = store.run(second)
    assert run is not None
    assert (run.kind, run.fire_time, run.coalesced) == ("scheduled", at(10, 10), 0)
    wait_child(after, second)
    bench.tick(after, at(10, 11))
    assert [r.status for r in store.runs("every5")] == ["succeeded", "succeeded"]
    assert store.runs("idle") == []
    assert store.get("every5").next_fire_at == at(10, 15)  # type: ignore[union-attr]


# shutdown


def test_shutdown_interrupts_the_runs_and_leaves(bench: Bench) -> None:
    bench.add("every5", "*/5 * * * *", at(10, 2))
    scheduler = bench.scheduler(sleeps(CHILD_CAP_S))
    [run_id] = bench.tick(scheduler, at(10, 5, 1))
    process = scheduler.children[run_id].process
    assert process.poll() is None
    seen = bench.store.schedulers(at(10, 5, 1), within=600)
    assert [o.pid for o, _ in seen] == [os.getpid()]
    assert seen[0][1] == scheduler.started_at

    bench.clock.set(at(10, 6))
    scheduler.shutdown()

    assert process.returncode == -signal.SIGTERM
    run = bench.run(run_id)
    assert (run.status, run.error, run.ended_at) == (
        "interrupted",
        "the scheduler stopped",
        at(10, 6),
    )
    assert bench.store.holder("every5") is None
    assert scheduler.children == {}
    assert bench.store.schedulers(at(10, 6), within=600) == []
    assert marked_children() == []
    # A stopping scheduler fires nothing more.
    assert bench.tick(scheduler, at(10, 10, 1)) == []
    assert [r.id for r in bench.store.runs("every5")] == [run_id]


def test_serve_ticks_on_the_fake_clock_until_told_to_stop(bench: Bench) -> None:
    bench.add("every5", "*/5 * * * *", at(10, 2))
    scheduler = bench.scheduler(exits(0))
    bench.clock.set(at(10, 4, 58))
    ticks = iter(range(4))  # ticks at 10:04:58, :05:03, :05:08, :05:13

    scheduler.serve(lambda: next(ticks, None) is None)

    assert bench.clock.now() == at(10, 5, 18)
    [run] = bench.store.runs("every5")
    assert (run.kind, run.fire_time, run.started_at) == ("scheduled", at(10, 5), at(10, 5, 3))
    assert run.status in {"failed", "interrupted"}  # reaped, or stopped with the scheduler
    assert bench.store.holder("every5") is None
    assert bench.store.schedulers(bench.clock.now(), within=600) == []


def test_schedule_with_a_going_run_cannot_be_removed(bench: Bench, tmp_path: Path) -> None:
    flag = tmp_path / "release"
    schedule = bench.add("every5", "*/5 * * * *", at(10, 2))
    scheduler = bench.scheduler(waits_for(flag))
    [run_id] = bench.tick(scheduler, at(10, 5, 1))
    with pytest.raises(MlopsError, match=f"run {run_id} is going"):
        service.remove(bench.store, "every5")
    flag.touch()
    wait_child(scheduler, run_id)
    bench.tick(scheduler, at(10, 6))
    service.remove(bench.store, "every5")
    assert bench.store.get("every5") is None
    assert [r.id for r in bench.store.runs("every5")] == [run_id]  # history stays
    assert bench.tick(scheduler, at(10, 10, 1)) == []
    # The name is free again.
    again = bench.add("every5", "*/5 * * * *", at(10, 11))
    assert again == replace(schedule, created_at=at(10, 11), next_fire_at=at(10, 15))


def test_shutdown_records_a_run_that_ended_before_it_as_failed(bench: Bench) -> None:
    bench.add("every5", "*/5 * * * *", at(10, 2))
    scheduler = bench.scheduler(exits(3))
    [run_id] = bench.tick(scheduler, at(10, 5, 1))
    assert wait_child(scheduler, run_id) == 3  # ended before any tick reaped it
    bench.clock.set(at(10, 6))
    scheduler.shutdown()
    run = bench.run(run_id)
    assert run.status == "failed", f"{run.status}: {run.error}"
    assert "(exit code 3)" in run.error


# robustness of the loop


def test_a_broken_schedule_does_not_stop_the_others(bench: Bench) -> None:

    bench.add("broken", "*/5 * * * *", at(10, 2))
    bench.add("fine", "*/5 * * * *", at(10, 2))
    with db.session(bench.url) as s:  # e.g. edited by hand in the database
        s.execute(update(ScheduleRow).where(ScheduleRow.name == "broken").values(cron="99 * * * *"))
    scheduler = bench.scheduler(exits(0))
    started = bench.tick(scheduler, at(10, 5, 1))
    assert [bench.run(r).schedule for r in started] == ["fine"]
    assert bench.store.runs("broken") == []


def test_serve_rides_out_a_database_outage(
    project: Path,
    template: Path,
    pg_database: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    # Ticks that fail at once: the store's own retry of a transaction (mlops.db.retrying)
    # would wait out the outage inside one tick.
    monkeypatch.setenv("MLOPS_STORE_RETRY_S", "0")

    shutil.copyfile(template / "params.yaml", project / "params.yaml")
    shutil.copytree(template / "data", project / "data")
    bench = Bench(*_pg_parts(project, pg_database))
    bench.add("every5", "*/5 * * * *", at(10, 2))
    scheduler = bench.scheduler(exits(0))
    name = pg_database.rsplit("/", 1)[1]

    def connections(allowed: bool) -> None:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            connections(True)  # two ticks failed; the database is back
        return calls > 5

    bench.clock.set(at(10, 5, 1))
    connections(False)
    try:
        scheduler.serve(should_stop)  # ticks at 10:05:01 and :06 fail, :11 fires
    finally:
        connections(True)
    failed = [r for r in caplog.records if r.getMessage().startswith("tick failed")]
    assert len(failed) == 2, [r.getMessage() for r in caplog.records]
    assert name in failed[0].getMessage()  # the store is named (password-free URL)
    runs = bench.store.runs("every5")
    assert [(r.kind, r.fire_time) for r in runs] == [("scheduled", at(10, 5))]


def _pg_parts(project: Path, url: str) -> tuple[Settings, ScheduleStore, FakeClock]:
    settings = sp.settings(project, {"MLOPS_DATABASE_URL": url})
    return settings, ScheduleStore(url), FakeClock(at(9, 0))

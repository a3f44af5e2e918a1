"""The scheduler as real processes: `tests/integration/scheduler_proc.py` serves a real
`Scheduler` on a clock file the test moves, and each firing is a real run process
(`python -m mlops.scheduling.fire`) running a real small sweep.

- Two schedulers on one database (SQLite, PostgreSQL) fire each fire time once: one
  history run per fire time, all succeeded, nothing skipped, one trial and one MLflow
  sweep run per history run.
- SIGKILL of the scheduler holding a schedule's lock: its run process stops with it,
  a second scheduler recovers the lock at the next fire time, and stops cleanly on
  SIGTERM (its run interrupted, no lock left).
- Schedules and their history persist across a scheduler restart (added and read with
  the real CLI).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from mlops.scheduling import service
from mlops.scheduling.store import Run, Schedule, ScheduleStore
from tests.integration import sweep_project as sp

# The `backend` fixture (conftest.py) puts these stores on PostgreSQL in its second run.
pytestmark = pytest.mark.stores("database", "optuna")

SCRIPT = Path(__file__).resolve().parent / "scheduler_proc.py"
MLOPS = Path(sys.executable).parent / "mlops"
CRON = "*/5 * * * *"
T0 = 1_900_000_000.0 + 17  # the clock before the first fire time (UTC, mid-minute)
WAIT_S = 120.0  # one firing (a 1-trial sweep) takes ~15-20 s; a hang fails the test
STOP_S = 120.0  # a stopping scheduler waits up to 60 s for its runs
TICK = "0.2"


# -- the clock, the scheduler processes ---------------------------------------------------


class Clock:
    """The clock file the scheduler processes read, replaced atomically."""

    def __init__(self, path: Path, start: float) -> None:
        self.path = path
        self.value = start
        self.set(start)

    def set(self, when: float) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(repr(when))
        os.replace(tmp, self.path)
        self.value = when


@dataclass
class Procs:
    """Every scheduler process a test started (and their descendants, for cleanup)."""

    root: Path
    logs: dict[int, Path] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def start(self, clock: Clock, env: dict[str, str], label: str) -> subprocess.Popen[bytes]:
        log = self.root.parent / f"scheduler-{label}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), str(clock.path), "--tick", TICK],
                cwd=self.root,
                env=sp.clean_env({**env, "DVC_ROOT": str(self.root)}),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        wait_for(lambda: "started (pid" in log.read_text(), 60, f"scheduler {label} up", self)
        return proc

    def remember(self) -> None:
        """Note the descendants of live schedulers (run processes, sweep workers)."""
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                self.seen.update(c.pid for c in psutil.Process(proc.pid).children(True))

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.poll() is not None:
                raise AssertionError(
                    f"scheduler pid {proc.pid} died (exit {proc.returncode})\n" + self.report()
                )

    def report(self) -> str:
        """The tails of the scheduler logs and of the run logs, for a failure message."""
        parts = []
        for pid, log in self.logs.items():
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- scheduler pid {pid} ({log.name}):\n{text[-3000:]}")
        runs = self.root / ".mlops" / "scheduler" / "runs"
        for path in sorted(runs.glob("*.log")) if runs.is_dir() else []:
            parts.append(f"--- {path.name}:\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def cleanup(self) -> None:
        self.remember()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        for pid in self.seen:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """The scheduler processes of a test, killed (with their children) at its end."""
    found = Procs(tmp_path / "project")
    try:
        yield found
    finally:
        found.cleanup()


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, procs: Procs | None = None
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if procs is not None:
            procs.check_alive()
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            extra = f"\n{procs.report()}" if procs is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {what}{extra}")
        time.sleep(0.25)


def stop(proc: subprocess.Popen[bytes], procs: Procs) -> int:
    """SIGTERM a scheduler and wait for it to exit; its exit code."""
    procs.remember()
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"scheduler pid {proc.pid} ignored SIGTERM\n{procs.report()}"
        ) from None


def gone(pid: int) -> bool:
    """True once the process is gone (a zombie nobody reaps counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- the project, its schedule ------------------------------------------------------------


def make_project(root: Path, epochs: int) -> None:
    root.mkdir()
    sp.write_project(root, sp.params_yaml(epochs=epochs))


def add_schedule(root: Path, env: dict[str, str], name: str, trials: int) -> tuple[Any, Schedule]:
    """Add `name` (every 5 minutes, UTC) as if added at T0; its store and schedule."""
    settings = sp.settings(root, env)
    store = ScheduleStore(settings.database_url)
    draft = Schedule(name, sp.PIPELINE, CRON, "UTC", trials)
    added = service.add(store, settings, draft, now=T0).schedule
    assert added.next_fire_at is not None and added.next_fire_at > T0
    return store, added


def finished_run(store: ScheduleStore, name: str, fire_time: float) -> Run | None:
    """The run of `fire_time` once it ended and its lock was released, else None.

    The run process records the outcome before it exits; the scheduler releases the
    lock when it reaps the process on its next tick. A fire time that comes between
    the two is skipped (the run is still going), so tests move the clock only after."""
    found = [r for r in store.runs(name) if r.fire_time == fire_time]
    if not found or found[-1].status == "running" or store.holder(name) is not None:
        return None
    return found[-1]


def sweeping(store: ScheduleStore, name: str, fire_time: float) -> Run | None:
    """The run of `fire_time` once it is running its sweep (MLflow parent run made)."""
    found = [r for r in store.runs(name) if r.fire_time == fire_time]
    if found and found[-1].status == "running" and found[-1].mlflow_run_id:
        return found[-1]
    return None


def trial_running(study: Any, first: int) -> bool:
    """True when a trial numbered `first` or later is running."""
    return any(t.number >= first for t in sp.trials(study, ("RUNNING",)))


def sweep_runs(root: Path, env: dict[str, str] | None = None) -> list[Any]:
    return [r for r in sp.runs(root, env) if r.data.tags.get("mlops.stage") == "sweep"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def history_text(store: ScheduleStore, name: str) -> str:
    return "\n".join(
        f"run {r.id}: {r.kind} {r.status} fire {r.fire_time} owner {r.owner} {r.error}"
        for r in store.runs(name)
    )


# -- tests --------------------------------------------------------------------------------


def test_two_schedulers_fire_each_time_once(
    backend: dict[str, str], procs: Procs, tmp_path: Path
) -> None:
    root = procs.root
    make_project(root, epochs=1)
    store, schedule = add_schedule(root, backend, "twice", trials=1)
    assert schedule.next_fire_at is not None
    first = schedule.next_fire_at
    fire_times = [first, first + 300.0]
    clock = Clock(tmp_path / "clock", T0)
    a = procs.start(clock, backend, "a")
    b = procs.start(clock, backend, "b")

    for when in fire_times:
        clock.set(when + 1.0)
        wait_for(
            functools.partial(finished_run, store, "twice", when),
            WAIT_S,
            f"the run of fire time {when}",
            procs,
        )
    # A few more ticks of both at the last time: nothing else fires.
    time.sleep(2.0)
    procs.remember()
    assert stop(a, procs) == 0, procs.report()
    assert stop(b, procs) == 0, procs.report()

    history = store.runs("twice")
    detail = history_text(store, "twice") + "\n" + procs.report()
    assert [r.fire_time for r in history] == fire_times, detail
    assert [r.status for r in history] == ["succeeded", "succeeded"], detail
    assert all(r.kind == "scheduled" and r.coalesced == 0 for r in history), detail
    assert all(r.trials_added == 1 for r in history), detail
    assert {int(r.owner.rsplit(" ", 1)[1]) for r in history} <= {a.pid, b.pid}, detail
    assert store.runs("twice", status="skipped") == []
    assert store.holder("twice") is None
    study = sp.open_study(root, backend)
    assert sp.count(study, "COMPLETE") == len(sp.trials(study)) == len(history)

    sweeps = sweep_runs(root)
    assert sorted(r.info.run_id for r in sweeps) == sorted(r.mlflow_run_id for r in history)
    for run in sweeps:
        assert run.data.tags["mlops.schedule"] == "twice"
        assert run.info.status == "FINISHED"
    by_mlflow = {r.mlflow_run_id: r for r in history}
    for run in sweeps:
        assert run.data.tags["mlops.schedule.run"] == str(by_mlflow[run.info.run_id].id)


def test_lock_recovered_after_sigkill_of_its_holder(procs: Procs, tmp_path: Path) -> None:
    root = procs.root
    make_project(root, epochs=200)  # trials long enough to kill the scheduler mid-run
    store, schedule = add_schedule(root, {}, "slow", trials=50)
    assert schedule.next_fire_at is not None
    first, second = schedule.next_fire_at, schedule.next_fire_at + 300.0
    clock = Clock(tmp_path / "clock", T0)
    a = procs.start(clock, {}, "a")
    clock.set(first + 1.0)

    old = wait_for(lambda: sweeping(store, "slow", first), WAIT_S, "the first run's sweep", procs)
    # Kill only once a trial runs: the run process is then past starting its workers
    # (a SIGTERM that lands while `run_sweep` is inside `Popen` leaves the worker being
    # started running on its own, outside the `try` that stops the workers).
    study = sp.open_study(root)
    wait_for(lambda: trial_running(study, 0), WAIT_S, "a trial of the first run", procs)
    holder = store.holder("slow")
    assert holder is not None and holder.owner.pid == a.pid and holder.run_id == old.id
    children = psutil.Process(a.pid).children(recursive=True)
    assert children, "the scheduler has no run process"
    family = {c.pid for c in children}
    procs.seen.update(family)

    os.kill(a.pid, signal.SIGKILL)
    assert a.wait(timeout=30) == -signal.SIGKILL
    wait_for(lambda: all(gone(p) for p in family), 90, "the run process to die with A", procs)
    assert all(gone(p) for p in family)
    after_kill = store.run(old.id)
    assert after_kill is not None and after_kill.status in ("interrupted", "running"), after_kill

    b = procs.start(clock, {}, "b")
    known = len(sp.trials(study))
    clock.set(second + 1.0)

    new = wait_for(
        lambda: sweeping(store, "slow", second), WAIT_S, "the second run (scheduler B)", procs
    )
    holder = store.holder("slow")
    assert holder is not None, procs.report()
    assert holder.owner.pid == b.pid and holder.run_id == new.id
    wait_for(lambda: trial_running(study, known), WAIT_S, "a trial of the second run", procs)
    ended_old = store.run(old.id)
    assert ended_old is not None
    # Stopped cleanly by its SIGTERM, or (still running when B came) recovered.
    expected = "interrupted" if after_kill.status == "interrupted" else "abandoned"
    assert ended_old.status == expected, ended_old
    assert ended_old.ended_at is not None

    code = stop(b, procs)
    assert code == 0, procs.report()
    ended_new = store.run(new.id)
    assert ended_new is not None and ended_new.status == "interrupted", ended_new
    assert store.holder("slow") is None
    assert store.runs("slow", status="running") == []
    assert [r.status for r in store.runs("slow")] == [expected, "interrupted"]
    wait_for(lambda: all(gone(p) for p in procs.seen), 60, "every run process to end")

    statuses = {r.info.run_id: r.info.status for r in sweep_runs(root)}
    assert statuses[new.mlflow_run_id] == "KILLED"
    if expected == "interrupted":
        assert statuses[old.mlflow_run_id] == "KILLED"


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLOPS), *args],
        cwd=root,
        env=sp.clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_schedule_and_history_persist_across_restart(procs: Procs, tmp_path: Path) -> None:
    root = procs.root
    make_project(root, epochs=1)
    added = _cli(root, "schedule", "add", "nightly", "--pipeline", "digits", "--cron", CRON,
                 "--trials", "1", "--timezone", "UTC", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    first = json.loads(added.stdout)["schedule"]["next_fire_at"]
    second = first + 300.0
    store = ScheduleStore(sp.settings(root).database_url)
    clock = Clock(tmp_path / "clock", first - 60.0)

    one = procs.start(clock, {}, "one")
    clock.set(first + 1.0)
    wait_for(lambda: finished_run(store, "nightly", first), WAIT_S, "the first run", procs)
    assert stop(one, procs) == 0, procs.report()

    two = procs.start(clock, {}, "two")
    time.sleep(2.0)  # several ticks at the first fire time: it is not fired again
    assert len(store.runs("nightly")) == 1, history_text(store, "nightly")
    clock.set(second + 1.0)
    wait_for(lambda: finished_run(store, "nightly", second), WAIT_S, "the second run", procs)
    assert stop(two, procs) == 0, procs.report()

    shown = _cli(root, "schedule", "history", "nightly", "--json")
    assert shown.returncode == 0, shown.stderr
    history = json.loads(shown.stdout)
    detail = json.dumps(history, indent=1) + "\n" + procs.report()
    assert [r["fire_time"] for r in history] == [first, second], detail
    assert [r["status"] for r in history] == ["succeeded", "succeeded"], detail
    assert all(r["kind"] == "scheduled" for r in history), detail
    assert all(r["trials_added"] == 1 for r in history), detail
    ids = [r["mlflow_run_id"] for r in history]
    assert all(ids) and len(set(ids)) == 2, detail
    train_md5 = md5(root / "data" / "split" / "train.parquet")
    for run in history:
        assert run["data_version"]["train"] == train_md5, detail
        assert set(run["data_version"]) == {"train", "val", "test"}, detail
    assert sorted(r.info.run_id for r in sweep_runs(root)) == sorted(ids)
    listed = _cli(root, "schedule", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (schedule,) = json.loads(listed.stdout)["schedules"]
    assert schedule["name"] == "nightly" and schedule["next_fire_at"] == second + 300.0

"""The scheduler: a loop that fires due schedules, one run process per firing.

Every `tick` seconds it renews the locks of its running runs, reaps the runs that
ended, and fires what is due (see `planner`). Each fire time is claimed in the
database first, so two schedulers on one database never both fire it; each run takes
the schedule's lock, so a schedule never runs twice at once. A lock whose holder died
(on this host) or expired (another host's) is recovered and its run recorded as
abandoned. Runs are child processes (`python -m mlops.scheduling.fire RUN_ID`) that
die with the scheduler; their output goes to one log file per run.

Time comes from a `Clock`, so tests move it instead of sleeping for minutes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from mlops.errors import MlopsError, UserError
from mlops.owners import die_with_parent
from mlops.scheduling import planner
from mlops.scheduling.cron import Timetable
from mlops.scheduling.store import Run, Schedule, ScheduleStore
from mlops.settings import Settings

LOCK_TTL_S = 120.0  # a lock not renewed for this long is another host's dead holder
STOP_WAIT_S = 60.0  # how long a stopping scheduler waits for its runs to stop cleanly
log = logging.getLogger("mlops.scheduler")


class Clock(Protocol):
    """Where the scheduler's time comes from."""

    def now(self) -> float:
        """Seconds since the epoch."""

    def sleep(self, seconds: float) -> None:
        """Wait (a test clock may just move time)."""


class SystemClock:
    """The real time; a set `stop` event cuts a sleep short."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()

    def now(self) -> float:
        """`time.time()`."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or until `stop` is set."""
        self.stop.wait(seconds)


def fire_command(run: Run) -> list[str]:
    """The command of one run process."""
    return [sys.executable, "-m", "mlops.scheduling.fire", str(run.id)]


@dataclass
class _Child:
    schedule: str
    run_id: int
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]


class Scheduler:
    """Fires the schedules of one database."""

    def __init__(
        self,
        settings: Settings,
        store: ScheduleStore,
        clock: Clock | None = None,
        command: Callable[[Run], list[str]] = fire_command,
        tick: float = 5.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        self.command = command
        self.tick_s = tick
        self.id = uuid.uuid4().hex
        self.started_at = self.clock.now()
        self.children: dict[int, _Child] = {}
        self.stopping = False
        self.logs = settings.home / "scheduler" / "runs"

    # one pass
    def tick(self) -> list[int]:
        """Renew, reap, fire; returns the ids of the runs started."""
        now = self.clock.now()
        self.store.beat(self.id, self.started_at, now)
        for child in list(self.children.values()):
            if child.process.poll() is None:
                self.store.renew(child.schedule, child.run_id, now + LOCK_TTL_S)
            else:
                self._reap(child)
        started = []
        for schedule in self.store.schedules():
            if schedule.paused or self.stopping:
                continue
            try:
                run_id = self._fire_if_due(schedule, now)
            except UserError as exc:  # one broken schedule must not stop the others
                log.error("%s: %s", schedule.name, exc)
                continue
            if run_id is not None:
                started.append(run_id)
        return started

    def _fire_if_due(self, schedule: Schedule, now: float) -> int | None:
        timetable = Timetable.of(schedule.cron, schedule.timezone)
        firing = planner.due(schedule.next_fire_at, now, timetable.next_after, schedule.grace)
        if firing is None or schedule.next_fire_at is None:
            return None
        if not self.store.claim(schedule.name, schedule.next_fire_at, firing.next_fire_at):
            return None  # another scheduler took this fire time
        when = timetable.format(firing.fire_time)
        if firing.kind == "missed":
            self.store.record(
                schedule, "missed", "missed", firing.fire_time, now, firing.coalesced,
                f"the scheduler was down past the grace window ({schedule.grace:g} s)",
            )  # fmt: skip
            log.warning("%s: missed %s (outside the grace window), not run", schedule.name, when)
            return None
        run_id = self.start(schedule, firing.kind, firing.fire_time, firing.coalesced, now)
        if run_id is not None:
            extra = f", {firing.coalesced} earlier coalesced" if firing.coalesced else ""
            log.info("%s: fired %s run %d for %s%s", schedule.name, firing.kind, run_id, when,
                     extra)  # fmt: skip
        return run_id

    def start(
        self, schedule: Schedule, kind: str, fire_time: float | None, coalesced: int, now: float
    ) -> int | None:
        """Take the schedule's lock and start a run process; None (and a `skipped` entry)
        when a run of the schedule is still going."""
        run_id = self.store.start_run(schedule, kind, fire_time, now, coalesced, now + LOCK_TTL_S)
        if run_id is None:
            holder = self.store.holder(schedule.name)
            busy = f"run {holder.run_id} ({holder.owner}) is still going" if holder else "busy"
            self.store.record(schedule, kind, "skipped", fire_time, now, coalesced, busy)
            log.warning("%s: skipped: %s", schedule.name, busy)
            return None
        self._spawn(schedule.name, run_id)
        return run_id

    def _spawn(self, name: str, run_id: int) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        path = self.logs / f"{name}-{run_id}.log"
        self.store.update_run(run_id, log_path=str(path))
        run = self.store.run(run_id)
        assert run is not None
        log_file = path.open("ab")
        env = {**os.environ, "DVC_ROOT": str(self.settings.root), "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            self.command(run), cwd=self.settings.root, env=env, stdout=log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only calls prctl in the child
        )  # fmt: skip
        self.children[run_id] = _Child(name, run_id, process, log_file)

    def _reap(self, child: _Child) -> None:
        code = child.process.wait()
        child.log_file.close()
        del self.children[child.run_id]
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        now = self.clock.now()
        self.store.finish_run(
            child.run_id, "failed", now, error=f"the run process ended ({how}) without a result"
        )
        self.store.release(child.schedule, child.run_id)
        run = self.store.run(child.run_id)
        if run is not None:
            detail = f": {run.error}" if run.error else ""
            log.info("%s: run %d %s%s", child.schedule, run.id, run.status, detail)

    # the loop
    def serve(self, should_stop: Callable[[], bool]) -> None:
        """Tick until `should_stop()`, then stop the runs cleanly."""
        log.info("scheduler %s started (pid %d), database %s", self.id[:8], os.getpid(),
                 self.store.url.split("://")[0])  # fmt: skip
        try:
            while not should_stop():
                try:
                    self.tick()
                except MlopsError as exc:  # e.g. the database is unreachable for a while
                    log.error("tick failed, trying again in %g s: %s", self.tick_s, exc)
                self.clock.sleep(self.tick_s)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Ask running runs to stop (SIGTERM: they fail their current trial cleanly), wait
        for them, record them, release their locks."""
        self.stopping = True
        stopped = set()
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.terminate()
                stopped.add(child.run_id)
        deadline = time.monotonic() + STOP_WAIT_S
        for child in list(self.children.values()):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
            if child.run_id in stopped:  # one that had ended on its own is reaped as such
                self.store.finish_run(
                    child.run_id, "interrupted", self.clock.now(), error="the scheduler stopped"
                )
            self._reap(child)
        self.store.leave(self.id)
        log.info("scheduler %s stopped", self.id[:8])


def live_schedulers(store: ScheduleStore, now: float) -> list[str]:
    """Scheduler processes alive on this database, for people and for a warning."""
    return [str(o) for o, _ in store.schedulers(now, within=4 * LOCK_TTL_S)]


def log_to(path: Path | None, level: int = logging.INFO) -> None:
    """Send the scheduler's log to stdout and, if given, a file."""
    handlers: list[Any] = [logging.StreamHandler(sys.stdout)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    log.setLevel(level)
    log.propagate = False

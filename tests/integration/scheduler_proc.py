"""A real scheduler process on a clock the test moves, for the scheduler process tests.

    python tests/integration/scheduler_proc.py CLOCK_FILE [--tick 0.2]

Run in a project folder (cwd and `DVC_ROOT` = the project). It builds the settings
from its environment (`MLOPS_*`), opens the schedule store and serves a `Scheduler`
with the real fire command (each firing is a real `python -m mlops.scheduling.fire`
child running a real sweep) until SIGTERM or SIGINT, then exits 0 after the
scheduler's clean shutdown.

The clock reads epoch seconds (a float) from CLOCK_FILE, which the test replaces
atomically (write a temporary file, `os.replace`); its sleep waits at most 0.2 real
seconds, so a moved clock is seen quickly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from mlops.scheduling.scheduler import Scheduler, log, log_to
from mlops.scheduling.store import ScheduleStore
from mlops.settings import Settings

MAX_SLEEP_S = 0.2


class FileClock:
    """Time read from a file the test writes; short real sleeps."""

    def __init__(self, path: Path, stop: threading.Event) -> None:
        self.path = path
        self.stop = stop

    def now(self) -> float:
        """The epoch seconds in the file (retried while the file is being replaced)."""
        for _ in range(50):
            try:
                return float(self.path.read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.01)
        return float(self.path.read_text().strip())

    def sleep(self, seconds: float) -> None:
        """Wait min(seconds, 0.2) real seconds (less if a stop is requested)."""
        self.stop.wait(min(seconds, MAX_SLEEP_S))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("clock_file", type=Path)
    parser.add_argument("--tick", type=float, default=0.2)
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        if not stop.is_set():
            stop.set()
            log.info("signal %d: stopping", signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log_to(None, logging.INFO)
    settings = Settings.from_env()
    store = ScheduleStore(settings.database_url)
    clock = FileClock(args.clock_file.resolve(), stop)
    Scheduler(settings, store, clock, tick=args.tick).serve(stop.is_set)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

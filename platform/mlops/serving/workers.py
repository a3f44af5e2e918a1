"""`mlops serve --workers N`: N processes answering on one port.

The parent checks the options and the target (one line, exit 2, before anything starts),
takes the port, and starts N worker processes (`python -m mlops.serving.workers`), each
listening on it with its own socket (`SO_REUSEPORT`): the kernel spreads the connections
over them by address (one socket shared by all would let whichever worker wakes first
take nearly every connection). The parent's socket only holds the port. Each
worker loads and verifies the version itself, watches the stage with its own hot swap,
and writes to the same sink (SQLite, WAL). The parent loads no model: it waits until
every worker is ready, restarts a worker that dies (at most `MAX_RESTARTS` a minute),
passes SIGTERM/SIGINT on, and removes what they leave.

Metrics use Prometheus's multiprocess mode: each worker's counters and histograms live
in files in one folder, and any worker's `/metrics` sums them over all workers (those of
a worker that died included); a gauge shows the live workers' value (the served version:
the highest; the live window: the most recent). So `/metrics` answers the same whichever
worker takes the scrape.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client import multiprocess

from mlops.errors import MlopsError, UserError
from mlops.live import default_sink
from mlops.serving import service
from mlops.serving.app import WORKER_ENV
from mlops.serving.sink import Sink
from mlops.settings import Settings
from registry.loading import parse_target

log = logging.getLogger("mlops.serve")
OPTIONS_ENV = "MLOPS_SERVE_OPTIONS"
READY_ENV = "MLOPS_SERVE_READY_FD"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
START_S = 600.0
MAX_RESTARTS = 5


@dataclass
class Pool:
    """The worker processes behind one socket."""

    options: service.ServeOptions
    sock: socket.socket
    metrics_dir: Path
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)
    stopping: bool = False

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"


def _env(pool: Pool, index: int, ready: int) -> dict[str, str]:
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(pool.options).items()}
    return {
        **os.environ,
        OPTIONS_ENV: json.dumps({**options, "port": pool.sock.getsockname()[1]}),
        READY_ENV: str(ready),
        METRICS_ENV: str(pool.metrics_dir),
        WORKER_ENV: str(index),
    }


def _spawn(pool: Pool, index: int, ready: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mlops.serving.workers"], env=_env(pool, index, ready),
        pass_fds=(ready,), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    pool.processes[index] = process


def start(settings: Settings, options: service.ServeOptions, workers: int) -> Pool:
    """Bind the port and start `workers` processes; returns once every one is ready (one
    line, and nothing left running, if one fails to start)."""
    if options.log_inputs > 0 or options.feedback:  # one line here, not one per worker
        path = options.sink or default_sink(settings, parse_target(options.target)[0])
        try:
            Sink(path, 0.0, answers=options.feedback).close()
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"--sink {path}: cannot write there ({exc})") from None
    sock = service.bind(options.host, options.port, reuse_port=True, listen=False)
    metrics_dir = Path(tempfile.mkdtemp(prefix="mlops-metrics-"))
    pool = Pool(options, sock, metrics_dir)
    read, write = os.pipe()
    try:
        for index in range(workers):
            _spawn(pool, index, write)
        os.close(write)
        write = -1
        _await_ready(pool, read, workers)
    except BaseException:
        stop(pool)
        raise
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    return pool


def _await_ready(pool: Pool, read: int, workers: int) -> None:
    ready, deadline = 0, time.monotonic() + START_S
    while ready < workers:
        for index, process in pool.processes.items():
            if process.poll() is not None:
                failed = MlopsError(
                    f"worker {index} exited with code {process.returncode} while starting"
                )
                failed.exit_code = process.returncode if process.returncode > 0 else 1
                raise failed
        if time.monotonic() > deadline:
            raise MlopsError(f"{workers - ready} worker(s) not ready after {START_S:g} s")
        readable, _, _ = select.select([read], [], [], 0.2)
        if readable:
            got = os.read(read, 64)
            if not got:  # every writer closed: a worker died before saying it was ready
                continue
            ready += len(got)


def supervise(pool: Pool, should_stop: list[int]) -> None:
    """Until a signal arrives (`should_stop` gets it): restart workers that die."""
    while not should_stop:
        for index, process in list(pool.processes.items()):
            code = process.poll()
            if code is None:
                continue
            multiprocess.mark_process_dead(process.pid, str(pool.metrics_dir))
            now = time.monotonic()
            pool.restarts = [t for t in pool.restarts if now - t < 60.0]
            if len(pool.restarts) >= MAX_RESTARTS:
                raise MlopsError(
                    f"worker {index} exited with code {code}; {MAX_RESTARTS} restarts in a "
                    "minute already: stopping"
                )
            pool.restarts.append(now)
            log.warning("worker %d (pid %d) exited with code %s: starting another", index,
                        process.pid, code)  # fmt: skip
            read, write = os.pipe()
            try:
                _spawn(pool, index, write)
            finally:
                os.close(write)
                os.close(read)
        time.sleep(0.2)


def stop(pool: Pool, graceful: float = service.GRACEFUL_S + 5.0) -> None:
    """SIGTERM every worker (in-flight requests finish), kill what is left, clean up."""
    pool.stopping = True
    for process in pool.processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + graceful
    for process in pool.processes.values():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    pool.sock.close()
    shutil.rmtree(pool.metrics_dir, ignore_errors=True)


def _options() -> service.ServeOptions:
    raw = json.loads(os.environ[OPTIONS_ENV])
    if raw.get("sink") is not None:
        raw["sink"] = Path(raw["sink"])
    return service.ServeOptions(**raw)


def main() -> int:
    """A worker: listen on the port beside the others, say ready, serve until SIGTERM."""
    options = _options()
    ready = int(os.environ[READY_ENV])
    settings = Settings.from_env()
    try:
        # listening only once loaded: no connection waits on a worker that is starting
        sock = service.bind(options.host, options.port, reuse_port=True, listen=False)
        prepared = service.prepare(settings, options, sock=sock)
        sock.listen(2048)
    except MlopsError as exc:
        print(f"error: worker {os.environ.get(WORKER_ENV)}: {exc}", file=sys.stderr)
        return exc.exit_code
    with contextlib.suppress(OSError):  # a restarted worker: nobody waits for it
        os.write(ready, b"r")
    os.close(ready)
    service.run(prepared)
    return 0


if __name__ == "__main__":
    sys.exit(main())

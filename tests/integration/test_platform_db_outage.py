"""The platform database (`MLOPS_DATABASE_URL`: the registry's and the schedules' tables)
rides out a short outage like the MLflow and Optuna stores: each transaction is retried
on a connection failure within `MLOPS_STORE_RETRY_S`, with one warning line per outage
and one error line when the budget is spent. Real outages of a throwaway PostgreSQL
cluster (`tests.integration.test_store_outage.Cluster`)."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.scheduling.store import Schedule, ScheduleStore
from mlops.settings import redact
from registry.db.store import Entry, RegistryStore
from tests.integration.test_store_outage import PASSWORD, PG_BIN, WAIT_S, Cluster, _free_port

pytestmark = pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL server binaries not found")
MLOPS = [sys.executable, "-c", "from mlops.cli import main; main()"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    c = Cluster(base, _free_port())
    try:
        if c.as_user:
            user = pwd.getpwnam("postgres")
            os.chown(base, user.pw_uid, user.pw_gid)
        c.init()
        c.sock.mkdir()
        if c.as_user:
            os.chown(c.sock, user.pw_uid, user.pw_gid)
        c.start()
        yield c
    finally:
        if (c.data / "postmaster.pid").exists():
            c.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def running(cluster: Cluster) -> Cluster:
    """The cluster, started if a test left it stopped."""
    if not (cluster.data / "postmaster.pid").exists():
        cluster.start()
    return cluster


class _Warnings(logging.Handler):
    """Collects the retry module's log lines; an event once the first one arrives."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.first = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")
        self.first.set()


@pytest.fixture
def retry_log() -> Iterator[_Warnings]:
    handler = _Warnings()
    logger = logging.getLogger("mlops.retry")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _restart_after_first_warning(cluster: Cluster, log: _Warnings) -> threading.Thread:
    def restart() -> None:
        if log.first.wait(WAIT_S):
            cluster.start()

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    return thread


def _entry(n: int) -> Entry:
    return Entry("note", "digits", None, "none", "none", "tester", reason=f"entry {n}")


def test_registry_and_schedule_stores_retry_a_short_outage(
    running: Cluster, retry_log: _Warnings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_STORE_RETRY_S", "60")
    url = running.create("platform_short")
    registry, schedules = RegistryStore(url), ScheduleStore(url)
    registry.append(_entry(0))

    # A write while the database is down: retried as a whole, applied once.
    running.stop()
    restarter = _restart_after_first_warning(running, retry_log)
    registry.append(_entry(1))
    restarter.join(WAIT_S)
    assert [e.reason for e in registry.history("digits")] == ["entry 0", "entry 1"]
    warnings = [line for line in retry_log.lines if line.startswith("WARNING")]
    assert len(warnings) == 1, retry_log.lines  # one line per outage
    assert f"platform database {redact(url)}: unreachable" in warnings[0]
    assert PASSWORD not in "".join(retry_log.lines)

    # The schedules' tables, on the same database, the same.
    retry_log.lines.clear()
    retry_log.first.clear()
    running.stop()
    restarter = _restart_after_first_warning(running, retry_log)
    schedules.add(Schedule("nightly", "digits", "0 3 * * *", "UTC", trials=4))
    restarter.join(WAIT_S)
    assert [s.name for s in schedules.schedules()] == ["nightly"]
    assert len([line for line in retry_log.lines if line.startswith("WARNING")]) == 1


def test_a_command_started_during_an_outage_waits_for_the_database(
    running: Cluster, tmp_path: Path
) -> None:
    url = running.create("platform_cli")
    RegistryStore(url)  # the schema exists: the command only reads
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))},
        "MLOPS_DATABASE_URL": url,
        "MLOPS_STORE_RETRY_S": "60",
    }
    running.stop()
    err = tmp_path / "err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*MLOPS, "registry", "list", "--json"], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    end = time.monotonic() + WAIT_S
    while "retrying" not in err.read_text(errors="replace"):
        assert proc.poll() is None, err.read_text()
        assert time.monotonic() < end, "no retry line"
        time.sleep(0.05)
    running.start()
    out, _ = proc.communicate(timeout=WAIT_S)
    stderr_text = err.read_text()
    assert proc.returncode == 0, stderr_text
    assert out.decode().strip() == "[]"
    lines = stderr_text.strip().splitlines()
    assert len(lines) == 1 and "platform database" in lines[0], stderr_text
    assert ":***@" in lines[0] and PASSWORD not in stderr_text


def test_a_long_outage_is_one_error_line(running: Cluster, tmp_path: Path) -> None:
    budget = 2
    url = running.create("platform_long")
    RegistryStore(url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))},
        "MLOPS_DATABASE_URL": url,
        "MLOPS_STORE_RETRY_S": str(budget),
    }
    running.stop()
    done = subprocess.run(
        [*MLOPS, "registry", "list"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=WAIT_S,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr + done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: platform database {redact(url)}: unreachable for {budget} s: "
    ), done.stderr
    warnings = [line for line in done.stderr.splitlines() if "retrying for up to" in line]
    assert len(warnings) == 1, done.stderr

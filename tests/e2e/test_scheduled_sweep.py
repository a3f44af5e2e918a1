"""A scheduled sweep end to end, as a user runs it: `mlops schedule add` every minute,
`mlops scheduler start` on the real clock, one real run (2 trials) that registers its
best trial as a challenger version (never promoted), SIGTERM stops the scheduler
cleanly. Bad input to `mlops schedule …` is one line, exit 2, and writes nothing."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mlops.params import NO_STAGE
from mlops.scheduling.store import ScheduleStore
from registry.registration import version_info
from tests.e2e.project import clean_env, run
from tests.integration import sweep_project as sp

pytestmark = pytest.mark.e2e

WAIT_S = 150.0  # the first minute boundary (≤ 60 s), then a 2-trial run and a registration
STOP_S = 120.0  # a stopping scheduler waits up to 60 s for its runs
REGISTER_BEST = "schedule:\n  register_best: true\n"


def _project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    sp.write_project(root, sp.params_yaml(epochs=1) + REGISTER_BEST)
    return root


def _mlops(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["mlops", *args], project, timeout=180)


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


@contextlib.contextmanager
def _scheduler(project: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`mlops scheduler start --tick 1`; killed with its run processes if still alive."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["mlops", "scheduler", "start", "--tick", "1"],
            cwd=project,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        family: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            family = psutil.Process(proc.pid).children(recursive=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()


def _logs(project: Path, log: Path) -> str:
    parts = [f"--- scheduler:\n{log.read_text(errors='replace')[-4000:]}"]
    runs = project / ".mlops" / "scheduler" / "runs"
    for path in sorted(runs.glob("*.log")) if runs.is_dir() else []:
        parts.append(f"--- {path.name}:\n{path.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts)


def _registered_run(project: Path) -> dict[str, Any] | None:
    history = _json(_mlops(project, "schedule", "history", "nightly", "--json"))
    for entry in history:
        if entry["status"] == "succeeded" and entry["mlflow_run_id"]:
            return entry
    return None


def test_scheduler_on_the_real_clock_registers_a_challenger(
    tmp_path: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = _project(tmp_path / "project")
    added = _json(
        _mlops(project, "schedule", "add", "nightly", "--pipeline", "digits",
               "--cron", "*/1 * * * *", "--trials", "2", "--json")
    )  # fmt: skip
    assert added["schedule"]["name"] == "nightly"
    assert len(added["upcoming"]) == 5
    log = tmp_path / "scheduler.log"

    with _scheduler(project, log) as scheduler:
        deadline = time.monotonic() + WAIT_S
        entry = None
        while entry is None:
            assert scheduler.poll() is None, _logs(project, log)
            assert time.monotonic() < deadline, "no succeeded run in time\n" + _logs(project, log)
            entry = _registered_run(project)
            if entry is None:
                time.sleep(3)
        scheduler.send_signal(signal.SIGTERM)
        try:
            code = scheduler.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            raise AssertionError("the scheduler ignored SIGTERM\n" + _logs(project, log)) from None
        assert code == 0, _logs(project, log)

    detail = json.dumps(entry, indent=1) + "\n" + _logs(project, log)
    assert entry["kind"] == "scheduled", detail
    assert entry["trials_added"] == 2, detail
    assert entry["trials_requested"] == 2, detail
    assert entry["registered_version"], detail
    assert entry["data_version"]["train"], detail

    client = mlflow_client(project)
    version = client.get_model_version("digits", entry["registered_version"])
    assert version.tags["mlops.role"] == "challenger"
    assert version.tags["mlops.stage"] == NO_STAGE
    assert version.tags["mlops.challenger_of"] == f"schedule nightly run {entry['id']}"
    assert version_info(version.tags)["mlops.data.train.md5"] == entry["data_version"]["train"]
    assert not version.aliases  # never promoted
    assert not client.get_registered_model("digits").aliases
    sweep = client.get_run(entry["mlflow_run_id"])
    assert sweep.data.tags["mlops.stage"] == "sweep"
    assert sweep.data.tags["mlops.schedule"] == "nightly"
    assert sweep.info.status == "FINISHED"

    status = _json(_mlops(project, "scheduler", "status", "--json"))
    assert status == {"schedulers": [], "running": []}, status
    history = _json(_mlops(project, "schedule", "history", "nightly", "--json"))
    assert all(r["status"] != "running" for r in history), history


# -- bad input ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep project with one schedule, `nightly`, for the bad-input cases."""
    root = _project(tmp_path_factory.mktemp("bad-input") / "project")
    _json(_mlops(root, "schedule", "add", "nightly", "--pipeline", "digits",
                 "--cron", "0 2 * * *", "--json"))  # fmt: skip
    return root


def _one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _schedule_names(project: Path) -> list[str]:
    return [s["name"] for s in _json(_mlops(project, "schedule", "list", "--json"))["schedules"]]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--cron", "0 0 * * 8"], ["day-of-week", "8"]),
        (["--cron", "0 0 * * *", "--timezone", "Mars/Olympus"], ["timezone", "Mars/Olympus"]),
    ],
    ids=["day-of-week-8", "unknown-timezone"],
)
def test_add_rejects_bad_input_and_writes_nothing(
    project: Path, extra: list[str], words: list[str]
) -> None:
    done = _mlops(project, "schedule", "add", "x", "--pipeline", "digits", *extra)
    _one_line_error(done, *words)
    assert _schedule_names(project) == ["nightly"]
    assert ScheduleStore(sp.settings(project).database_url).runs("x") == []


@pytest.mark.parametrize("command", ["pause", "resume", "run-now", "remove"])
def test_unknown_schedule_is_one_line(project: Path, command: str) -> None:
    done = _mlops(project, "schedule", command, "nope")
    _one_line_error(done, "'nope'", "not found", "nightly")
    assert _schedule_names(project) == ["nightly"]


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_history_of_unknown_schedule_is_one_line(project: Path, as_json: bool) -> None:
    done = _mlops(project, "schedule", "history", "nope", *(["--json"] if as_json else []))
    _one_line_error(done, "'nope'", "not found")


def test_pause_resume_and_remove_report_json(tmp_path: Path) -> None:
    project = _project(tmp_path / "json")
    _json(_mlops(project, "schedule", "add", "hourly", "--cron", "@hourly", "--json"))
    paused = _json(_mlops(project, "schedule", "pause", "hourly", "--json"))
    assert paused["name"] == "hourly" and paused["paused"] is True
    resumed = _json(_mlops(project, "schedule", "resume", "hourly", "--json"))
    assert resumed["paused"] is False and resumed["next_fire_at"] > time.time()
    removed = _json(_mlops(project, "schedule", "remove", "hourly", "--json"))
    assert removed == {"schedule": "hourly", "removed": True}
    assert _schedule_names(project) == []

"""Sweeps under load and failure, on the embedded SQLite Optuna storage and on
PostgreSQL: four real worker processes sharing one study, a worker SIGKILLed in the
middle of a trial (its trial failed by heartbeat and retried with the same params),
`mlops sweep run` end to end (study, parent MLflow run, child runs, plots), and Ctrl-C.

MLflow stays on the embedded SQLite store in every case: these tests are about the
Optuna storage and the worker loop.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy

from mlops import tracking
from mlops.tuning.objective import RUN_ATTR, TAG_STUDY, TAG_TRIAL, study_name
from mlops.tuning.storage import GRACE_S, HEARTBEAT_S, worker_seed
from tests.integration import sweep_project as sp

# The `backend` fixture (conftest.py) puts these stores on PostgreSQL in its second run.
pytestmark = pytest.mark.stores("optuna")

WORKERS = 4
WAIT_S = 240.0  # a hang fails the test instead of blocking the run


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project written once (digits splits and params.yaml); each test copies it."""
    root = tmp_path_factory.mktemp("sweep-template")
    sp.write_project(root)
    # MLflow's schema, made once (`_tracking_ready` copies it; the CLI tests do not).
    (root / ".mlops").mkdir()
    sp.mlflow_client(root).search_experiments()
    assert (root / ".mlops" / "mlflow.db").is_file()
    return root


@pytest.fixture
def root(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the sweep project."""

    dest = tmp_path / "project"
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns(".mlops"))
    return dest


def _tracking_ready(root: Path, env: dict[str, str], template: Path) -> None:
    """Create the MLflow store (a copy of the template's empty one) and the pipeline's
    experiment, as `run_sweep` does before it starts workers: workers joining a store
    that does not exist yet all run MLflow's schema migrations at once, and fail."""

    s = sp.settings(root, env)
    s.home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template / ".mlops" / "mlflow.db", s.home / "mlflow.db")
    tracking.connect(s)
    tracking.ensure_experiment(sp.PIPELINE, s)


def _wait_until(
    check: Callable[[], bool], timeout: float, procs: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    """Poll `check` until it holds; fail on the timeout, or when every process ended."""
    end = time.monotonic() + timeout
    while not check():
        if procs and all(p.poll() is not None for p in procs):
            if check():
                return
            raise AssertionError(f"workers ended first: exit codes {[p.returncode for p in procs]}")
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout:.0f} s")
        time.sleep(0.2)


@contextmanager
def workers(
    root: Path, study: str, n_trials: int, env: dict[str, str], n: int = WORKERS
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`n` sweep worker processes (logs in `<root>/worker-I.log`); any still running
    when the block is left are killed."""
    procs = [
        sp.start_worker(
            root, study, n_trials, env, log=root / f"worker-{i}.log", seed=worker_seed(0, str(i), 0)
        )
        for i in range(n)
    ]  # each with its own sampler seed, as `mlops sweep run` starts them
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def _join(procs: list[subprocess.Popen[bytes]], timeout: float = WAIT_S) -> None:
    end = time.monotonic() + timeout
    for p in procs:
        p.wait(timeout=max(1.0, end - time.monotonic()))


def _log(root: Path, i: int) -> str:
    return (root / f"worker-{i}.log").read_text(errors="replace")


def _assert_clean_exit(root: Path, procs: list[subprocess.Popen[bytes]], skip: int = -1) -> None:
    """Every worker (but `skip`) exited 0 with no lock error or traceback in its output."""
    for i, p in enumerate(procs):
        if i == skip:
            continue
        out = _log(root, i)
        assert p.returncode == 0, f"worker {i} exit {p.returncode}:\n{out[-3000:]}"
        assert "locked" not in out.lower(), f"worker {i}:\n{out[-3000:]}"
        assert "Traceback" not in out, f"worker {i}:\n{out[-3000:]}"


def _assert_numbers_contiguous(study: Any) -> None:
    numbers = [t.number for t in sp.trials(study)]
    assert len(numbers) == len(set(numbers)), "duplicate trial numbers"
    assert numbers == list(range(len(numbers))), f"trial numbers not contiguous: {numbers}"


def _runs_by_id(root: Path, env: dict[str, str]) -> dict[str, Any]:
    return {r.info.run_id: r for r in sp.runs(root, env)}


def _finished_trials_have_runs(study: Any, runs: dict[str, Any]) -> None:
    """Each complete or pruned trial names its own FINISHED MLflow run of this study."""
    seen: set[str] = set()
    for t in sp.trials(study, ("COMPLETE", "PRUNED")):
        run_id = t.user_attrs.get(RUN_ATTR)
        assert run_id, f"trial {t.number}: no {RUN_ATTR} user attr"
        assert run_id not in seen, f"trial {t.number}: run {run_id} shared with another trial"
        seen.add(run_id)
        assert run_id in runs, f"trial {t.number}: MLflow run {run_id} not found"
        run = runs[run_id]
        assert run.data.tags.get(TAG_TRIAL) == str(t.number), (t.number, run.data.tags)
        assert run.data.tags.get(TAG_STUDY) == study.study_name
        assert run.data.tags.get("mlops.trial_state") == t.state.name
        assert run.info.status == "FINISHED", (t.number, run.info.status)


# a. Four workers, one study ---------------------------------------------------------


def test_four_workers_share_one_study(root: Path, backend: dict[str, str], template: Path) -> None:
    """4 workers x a global target of 100: the study ends with 100 finished trials (the
    loop reads the count before it asks for a trial, so it may overshoot by at most
    workers - 1), nothing failed, numbers contiguous, each trial with its MLflow run."""
    target = 100
    study = sp.open_study(root, backend)
    _tracking_ready(root, backend, template)
    with workers(root, study.study_name, target, backend) as procs:
        _join(procs)
    _assert_clean_exit(root, procs)

    all_trials = sp.trials(study)
    states = [t.state.name for t in all_trials]
    finished = sp.finished(study)
    print(f"finished trials: {finished} (target {target}, {WORKERS} workers)")
    assert target <= finished <= target + WORKERS - 1, finished
    assert states.count("FAIL") == 0, [t.number for t in all_trials if t.state.name == "FAIL"]
    assert states.count("RUNNING") == states.count("WAITING") == 0, states
    _assert_numbers_contiguous(study)
    for t in sp.trials(study, ("COMPLETE",)):
        assert t.value is not None and 0.0 <= t.value <= 1.0
        assert set(t.params) == {"learning_rate", "model.mlp.dropout"}
    _finished_trials_have_runs(study, _runs_by_id(root, backend))
    # The workers shared the work (one that starts late on a busy CPU may find little).
    pids = [
        r.data.tags.get(tracking.TAG_PID)
        for r in sp.runs(root, backend)
        if TAG_TRIAL in r.data.tags
    ]
    per_worker = [pids.count(str(p.pid)) for p in procs]
    print(f"trials per worker: {per_worker}")
    assert sum(per_worker) == len(all_trials)
    assert sum(n > 0 for n in per_worker) >= WORKERS - 1, per_worker


# b. A worker SIGKILLed mid-trial ----------------------------------------------------


def _victim_trials(root: Path, env: dict[str, str], pid: int) -> list[tuple[int, str]]:
    """(trial number, run id) of the RUNNING MLflow trial runs of process `pid`."""
    return [
        (int(r.data.tags[TAG_TRIAL]), r.info.run_id)
        for r in sp.runs(root, env)
        if r.info.status == "RUNNING"
        and r.data.tags.get(tracking.TAG_PID) == str(pid)
        and TAG_TRIAL in r.data.tags
    ]


def _describe(trials: Any) -> str:
    return "\n".join(
        f"{t.number} {t.state.name} {t.datetime_start} {t.datetime_complete} {t.system_attrs}"
        for t in trials
    )


def _freeze_inside_trial(
    root: Path, env: dict[str, str], study: Any, victim: subprocess.Popen[bytes]
) -> tuple[Any, dict[int, tuple[float | None, dict[str, Any]]]]:
    """SIGSTOP `victim` at a moment it is inside a trial (its MLflow run open, the trial
    still RUNNING), else let it go on and look again; return that trial and a snapshot
    of the complete trials. While it is frozen only the Optuna storage is read, briefly:
    the victim may hold the MLflow SQLite lock, which others wait on for 5 s at most."""
    deadline = time.monotonic() + 60
    while True:
        assert victim.poll() is None, f"worker 0 ended first:\n{_log(root, 0)[-3000:]}"
        assert time.monotonic() < deadline, "worker 0 never seen inside a trial"
        for number, run_id in _victim_trials(root, env, victim.pid):
            victim.send_signal(signal.SIGSTOP)
            running = {t.number: t for t in sp.trials(study, ("RUNNING",))}
            t = running.get(number)
            if t is not None and t.user_attrs.get(RUN_ATTR) == run_id:
                before = {c.number: (c.value, c.params) for c in sp.trials(study, ("COMPLETE",))}
                return t, before
            victim.send_signal(signal.SIGCONT)
        time.sleep(0.05)


def test_killed_worker_trial_is_failed_and_retried(
    root: Path, backend: dict[str, str], template: Path
) -> None:
    """SIGKILL a worker while it trains: its trial turns FAIL once its heartbeat is
    stale, comes back as a retry with the same params that finishes, the other workers
    reach the target, and the trials completed before the kill are untouched."""
    # The survivors must still be busy when the killed trial goes stale (GRACE_S after
    # its last heartbeat): if two workers race past the target first (the count and the
    # new trial are not atomic), they stop and the dead trial stays RUNNING, never
    # retried. So trials here train longer (~0.6 s) and ~50 run after the kill.
    target = 55
    (root / "params.yaml").write_text(sp.params_yaml(epochs=30))
    study = sp.open_study(root, backend)
    _tracking_ready(root, backend, template)
    with workers(root, study.study_name, target, backend) as procs:
        victim = procs[0]
        _wait_until(lambda: sp.finished(study) >= 3, WAIT_S, procs)

        killed, before = _freeze_inside_trial(root, backend, study, victim)
        victim.kill()
        victim.wait()
        killed_at = time.monotonic()
        _join(procs[1:])
    _assert_clean_exit(root, procs, skip=0)
    assert victim.returncode == -signal.SIGKILL

    by_number = {t.number: t for t in sp.trials(study)}
    # The killed trial failed by heartbeat (not by anyone else) and was retried once.
    lost = by_number[killed.number]
    assert lost.state.name == "FAIL", (
        f"killed trial {lost.number} is {lost.state.name}: the survivors reached the target "
        "before it went stale, so it was never failed nor retried\n" + _describe(by_number.values())
    )
    stale_for = (lost.datetime_complete - killed.datetime_start).total_seconds()
    assert stale_for >= GRACE_S - HEARTBEAT_S, stale_for
    retries = [t for t in by_number.values() if t.system_attrs.get("failed_trial") == lost.number]
    assert len(retries) == 1, [(t.number, t.system_attrs) for t in retries]
    retry = retries[0]
    assert retry.number > lost.number
    assert retry.params == lost.params
    assert retry.state.name == "COMPLETE", retry.state
    assert retry.user_attrs[RUN_ATTR] != lost.user_attrs[RUN_ATTR]
    print(
        f"killed trial {lost.number} failed {stale_for:.1f} s after it started; "
        f"retry {retry.number}; sweep done {time.monotonic() - killed_at:.1f} s after the kill"
    )

    # The target was reached; no other trial failed; nothing left running or waiting.
    finished = sp.finished(study)
    assert target <= finished <= target + WORKERS - 2, finished
    states = [t.state.name for t in by_number.values()]
    assert states.count("FAIL") == 1, states
    assert states.count("RUNNING") == states.count("WAITING") == 0, states
    _assert_numbers_contiguous(study)

    # Trials completed before the kill: same state, value and params.
    assert before
    for number, (value, params) in before.items():
        t = by_number[number]
        assert t.state.name == "COMPLETE" and t.value == value and t.params == params, number

    # The killed trial's MLflow run was closed as KILLED by a surviving worker.
    runs = _runs_by_id(root, backend)
    # (FINISHED when the kill landed after the run ended but before Optuna recorded the
    # trial: the trial is still failed by heartbeat and retried.)
    dead = runs[lost.user_attrs[RUN_ATTR]]
    assert dead.info.status in ("KILLED", "FINISHED"), dead.info.status
    if dead.info.status == "KILLED":
        assert dead.data.tags.get(tracking.TAG_CLOSED_BY) == "stale-run-recovery"
    _finished_trials_have_runs(study, runs)
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]


def test_retry_queued_after_the_target_is_still_run(
    root: Path, backend: dict[str, str], template: Path
) -> None:
    """The race the kill test can lose: the survivors reach the target while a dead
    worker's trial is still RUNNING. The worker that fails it by heartbeat (here on its
    way out) queues the retry and runs it itself, so no trial is left WAITING."""

    target = 2
    study = sp.open_study(root, backend)
    _tracking_ready(root, backend, template)
    with workers(root, study.study_name, target, backend, n=1) as procs:
        _join(procs)
    _assert_clean_exit(root, procs)
    assert sp.finished(study) == target

    # A dead worker's trial: RUNNING, its last heartbeat long ago.
    dead = study.ask()
    storage = study._storage._backend  # the RDBStorage behind Optuna's trial cache
    storage.record_heartbeat(dead._trial_id)
    with storage.engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t WHERE trial_id = :i"),
            {"t": datetime.datetime(2000, 1, 1), "i": dead._trial_id},
        )

    with workers(root, study.study_name, target, backend, n=1) as procs:
        _join(procs)
    _assert_clean_exit(root, procs)
    by_number = {t.number: t for t in sp.trials(study)}
    assert by_number[dead.number].state.name == "FAIL"
    retries = [t for t in by_number.values() if t.system_attrs.get("failed_trial") == dead.number]
    assert [t.state.name for t in retries] == ["COMPLETE"], _describe(by_number.values())
    assert sp.finished(study) == target + 1
    assert sp.count(study, "RUNNING", "WAITING") == 0, _describe(by_number.values())


# c. `mlops sweep run` end to end ----------------------------------------------------


def _cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from mlops.cli import main; main()", *args]


def _cli(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cli_cmd(*args),
        cwd=root,
        env=sp.clean_env(env),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )


def test_sweep_run_cli(root: Path, backend: dict[str, str]) -> None:
    """`mlops sweep run digits --trials 6 --workers 2`: exit 0, the study and its best
    trial printed, `status --json` agrees with the storage, and MLflow holds the sweep's
    parent run (best params and value, Optuna's plots) with one child run per trial."""
    n_trials = 6
    name = study_name(sp.params(root))
    done = _cli(
        root, backend, "sweep", "run", "digits", "--trials", str(n_trials), "--workers", "2"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "locked" not in (done.stdout + done.stderr).lower()
    assert f"study {name}:" in done.stdout, done.stdout[-3000:]
    assert "Best trials" in done.stdout, done.stdout[-3000:]

    study = sp.open_study(root, backend)
    best = study.best_trial
    finished = sp.finished(study)
    assert n_trials <= finished <= n_trials + 1, finished
    assert sp.count(study, "FAIL", "RUNNING", "WAITING") == 0
    _assert_numbers_contiguous(study)

    status = _cli(root, backend, "sweep", "status", name, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["study"] == name
    assert report["counts"] == {
        "complete": sp.count(study, "COMPLETE"),
        "pruned": sp.count(study, "PRUNED"),
        "fail": 0,
        "running": 0,
        "waiting": 0,
        "best": best.value,
    }
    assert report["best"][0]["number"] == best.number
    assert report["best"][0]["params"] == best.params
    assert report["best"][0]["mlflow_run_id"] == best.user_attrs[RUN_ATTR]
    default = _cli(root, backend, "sweep", "status", "--json")  # the study of params.yaml
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout) == report

    runs = _runs_by_id(root, backend)
    parents = [r for r in runs.values() if r.data.tags.get(tracking.TAG_STAGE) == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in parents]
    parent = parents[0]
    pid = parent.info.run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_STUDY] == name
    assert done.stdout.replace("\n", "").count(pid) >= 1
    assert parent.data.tags["mlops.best_trial"] == str(best.number)
    assert {k: v for k, v in parent.data.params.items() if k.startswith("best.")} == {
        f"best.{k}": str(v) for k, v in best.params.items()
    }
    assert math.isclose(parent.data.metrics["best_value"], best.value)
    assert parent.data.metrics["trials_complete"] == sp.count(study, "COMPLETE")
    assert parent.data.metrics["trials_failed"] == 0
    assert parent.data.params["tune.n_trials"] == "0"  # the tune section, logged as is
    client = sp.mlflow_client(root, backend)
    plots = {a.path for a in client.list_artifacts(pid, "optuna")}
    assert {
        "optuna/optimization_history.png",
        "optuna/param_importances.png",
        "optuna/parallel_coordinate.png",
    } <= plots, plots

    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == pid]
    assert len(children) == finished, len(children)
    for child in children:
        assert child.data.tags.get("mlops.trial_state") in ("COMPLETE", "PRUNED")
        assert child.info.status == "FINISHED"
    assert {c.info.run_id for c in children} == {
        t.user_attrs[RUN_ATTR] for t in sp.trials(study, ("COMPLETE", "PRUNED"))
    }
    _finished_trials_have_runs(study, runs)


# d. Ctrl-C --------------------------------------------------------------------------


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_sweep(root: Path, env: dict[str, str], group: bool) -> None:
    """Start `mlops sweep run digits --trials 200 --workers 2`, send SIGINT once a few
    trials finished (to the CLI process, or to its whole process group as a terminal's
    Ctrl-C does), and check that everything stopped cleanly."""
    study = sp.open_study(root, env)  # the sweep resumes it
    with (root / "sweep.log").open("wb") as log:
        cli = subprocess.Popen(
            _cli_cmd("sweep", "run", "digits", "--trials", "200", "--workers", "2"),
            cwd=root,
            env=sp.clean_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=group,  # its own group, so killpg reaches only the sweep
            # As from a terminal, whatever this test runs under (a shell's background job
            # ignores SIGINT, and its children inherit that).
            preexec_fn=_sigint_default,  # noqa: PLW1509
        )
    children: list[psutil.Process] = []
    try:
        _wait_until(lambda: sp.finished(study) >= 3, WAIT_S, [cli])
        children = [
            c for c in psutil.Process(cli.pid).children() if "sweep worker" in " ".join(c.cmdline())
        ]
        assert len(children) == 2, children
        if group:
            os.killpg(cli.pid, signal.SIGINT)
        else:
            cli.send_signal(signal.SIGINT)
        sent = time.monotonic()
        rc = cli.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        for child in children:
            if child.is_running():
                os.kill(child.pid, signal.SIGKILL)
    out = (root / "sweep.log").read_text(errors="replace")
    print(f"exit {rc} {took:.1f} s after SIGINT")
    assert rc == 130, out[-3000:]
    assert "locked" not in out.lower(), out[-3000:]
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive

    # No trial left RUNNING: an interrupted one is FAIL at once, not after the grace
    # period (and then retried) as if its worker had died.
    left = [(t.number, t.user_attrs) for t in sp.trials(study, ("RUNNING", "WAITING"))]
    assert not left, f"trials left RUNNING/WAITING after Ctrl-C: {left}\n{out[-3000:]}"
    assert 3 <= sp.finished(study) < 200
    for t in sp.trials(study, ("FAIL",)):
        assert (t.datetime_complete - t.datetime_start).total_seconds() < GRACE_S
    _assert_numbers_contiguous(study)

    runs = sp.runs(root, env)
    running = [
        (r.info.run_name, r.data.tags.get(TAG_TRIAL)) for r in runs if r.info.status == "RUNNING"
    ]
    assert not running, f"MLflow runs left RUNNING after Ctrl-C: {running}\n{out[-3000:]}"
    parent = [r for r in runs if r.data.tags.get(tracking.TAG_STAGE) == "sweep"]
    assert [r.info.status for r in parent] == ["KILLED"]
    ids = {t.user_attrs.get(RUN_ATTR) for t in sp.trials(study, ("FAIL",))}
    for r in runs:
        if r.info.run_id in ids:
            assert r.info.status == "KILLED", (r.info.run_name, r.info.status)


def test_sweep_run_sigint(root: Path, backend: dict[str, str]) -> None:
    """SIGINT to `mlops sweep run` mid-sweep: it passes it on to its workers and exits
    130 within seconds; the workers are gone, no trial is left RUNNING (an interrupted
    one is FAIL) and no MLflow run is left RUNNING (the sweep's run ends KILLED)."""
    _interrupt_sweep(root, backend, group=False)


def test_sweep_run_terminal_ctrl_c(root: Path) -> None:
    """Ctrl-C in a terminal: SIGINT reaches the CLI and its workers at once (the CLI
    then forwards a second one); the same clean stop is expected."""
    _interrupt_sweep(root, {}, group=True)

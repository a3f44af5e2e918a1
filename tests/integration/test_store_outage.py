"""Database outages on a throwaway PostgreSQL cluster this module starts itself (`initdb`
and `pg_ctl` on a free port), so stopping it harms nothing else.

a. Stopped for 4 s while a sweep (`mlops sweep run`, one worker) and a training run
   (`python -m pipelines.train`) log to it: both retry and exit 0, every complete trial
   has its FINISHED MLflow run with every epoch, the training run has every epoch.
b. Stopped for longer than `MLOPS_STORE_RETRY_S` during a training run, and started
   again once the run has given up: exit 1, one last line on stderr naming the store with
   its password hidden, no traceback, and the run ended FAILED.
c. The same during `mlops sweep run`: the sweep gives up, stops its worker before it
   exits (the worker ends its trial FAIL itself, or, frozen, is killed and the sweep ends
   its trial FAIL and its MLflow run KILLED), and nothing is left RUNNING.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from mlops import tracking
from mlops.db import driver_url
from mlops.settings import redact
from mlops.tuning.objective import RUN_ATTR
from tests.integration import sweep_project as sp

WAIT_S = 180.0  # a hang fails the test instead of blocking the run
PASSWORD = "s3cret"  # trust auth accepts any password: this one must never be printed
TRAIN = [sys.executable, "-m", "pipelines.train", "--checkpoint-every", "0"]
SWEEP_TRIALS = 30
TRIAL_EPOCHS = 3
TRAIN_EPOCHS = 80
# Epochs long enough (~0.1-0.2 s each) that the run is still logging when the DB stops.
TRAIN_PARAMS = f"""
pipeline:
  name: outage
train:
  seed: 42
  epochs: {TRAIN_EPOCHS}
  batch_size: 32
  threads: 1
  device: cpu
  early_stopping: {{patience: 0}}
  model:
    family: mlp
    mlp: {{hidden_sizes: [512, 512], dropout: 0.1}}
"""


def _pg_bin() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(re.sub(r"\D", "", Path(p).parts[-3]) or 0),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


PG_BIN = _pg_bin()
pytestmark = pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL server binaries not found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A PostgreSQL cluster of our own in a temporary folder (as the `postgres` OS user
    when we are root: initdb refuses to run as root)."""

    def __init__(self, base: Path, port: int) -> None:
        assert PG_BIN is not None
        self.base, self.port, self.bin = base, port, PG_BIN
        self.data, self.sock, self.log = base / "data", base / "sock", base / "server.log"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _pg(self, tool: str, *args: str) -> None:
        cmd = [*self.as_user, str(self.bin / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.base)
        assert done.returncode == 0, f"{tool} {args}: {done.stdout}{done.stderr}"

    def init(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create(self, database: str, template: str | None = None) -> str:
        """A new database (copied from `template`); its URL."""
        like = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"{like}')
        return self.url(database)


SCHEMAS = """
import sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from optuna.storages import RDBStorage
SqlAlchemyStore(sys.argv[1], sys.argv[3])
RDBStorage(sys.argv[2])
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The throwaway cluster, with template databases holding MLflow's and Optuna's
    schemas (each test copies them: creating MLflow's schema takes seconds)."""

    base = Path(tempfile.mkdtemp(prefix="mlops-pg-"))  # pytest's folders are root-only
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
        artifacts = tmp_path_factory.mktemp("template-artifacts")
        mlflow_tpl, optuna_tpl = c.create("mlflow_tpl"), c.create("optuna_tpl")
        done = subprocess.run(
            [sys.executable, "-c", SCHEMAS, driver_url(mlflow_tpl), driver_url(optuna_tpl),
             str(artifacts)],
            capture_output=True, text=True, timeout=WAIT_S,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        yield c
    finally:
        if (c.data / "postmaster.pid").exists():
            c.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sweep project (digits splits, fast trials) and the training project, written
    once; each test copies them."""
    sweep = tmp_path_factory.mktemp("sweep-project")
    sp.write_project(sweep, sp.params_yaml(epochs=TRIAL_EPOCHS))
    train = tmp_path_factory.mktemp("train-project")
    sp.write_project(train, TRAIN_PARAMS)
    return {"sweep": sweep, "train": train}


def _copy(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def _start(
    cmd: list[str], cwd: Path, env: dict[str, str], out: Path, err: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd`; stdout to `out`, stderr to `err` (or `out` too)."""
    with out.open("wb") as stdout, open(err or os.devnull, "wb") as stderr:
        return subprocess.Popen(
            cmd, cwd=cwd, env=sp.clean_env(env), stdout=stdout,
            stderr=subprocess.STDOUT if err is None else stderr,
        )  # fmt: skip


def _wait_until(
    check: Callable[[], bool], what: str, procs: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    end = time.monotonic() + WAIT_S
    while not check():
        for p in procs:
            assert p.poll() is None, f"{what}: a process ended first (exit {p.returncode})"
        assert time.monotonic() < end, f"{what}: not within {WAIT_S:.0f} s"
        time.sleep(0.1)


def _epoch(stdout: Path) -> int:
    """The last epoch the training job printed."""
    found = re.findall(r"train: epoch +(\d+)/", stdout.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def _join(*procs: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + WAIT_S
    try:
        for p in procs:
            p.wait(timeout=max(1.0, end - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _steps(client: Any, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _train_run(root: Path, env: dict[str, str]) -> Any:
    runs = sp.runs(root, env, "outage")
    runs = [r for r in runs if r.data.tags.get(tracking.TAG_STAGE) == "train"]
    assert len(runs) == 1, [(r.info.run_name, r.info.status) for r in runs]
    return runs[0]


def test_short_outage_loses_nothing(
    cluster: Cluster, templates: dict[str, Path], tmp_path: Path
) -> None:
    env = {
        "MLOPS_TRACKING_URI": cluster.create("mlflow_a", "mlflow_tpl"),
        "MLOPS_OPTUNA_STORAGE": cluster.create("optuna_a", "optuna_tpl"),
        "MLOPS_STORE_RETRY_S": "60",
    }
    sweep_root = _copy(templates["sweep"], tmp_path / "sweep")
    train_root = _copy(templates["train"], tmp_path / "train")
    study = sp.open_study(sweep_root, env)  # the sweep resumes it
    sweep_cmd = [sys.executable, "-c", "from mlops.cli import main; main()", "sweep", "run",
                 "digits", "--trials", str(SWEEP_TRIALS), "--workers", "1"]  # fmt: skip
    sweep_log, train_out, train_err = tmp_path / "sweep.log", tmp_path / "out", tmp_path / "err"
    sweep = _start(sweep_cmd, sweep_root, env, sweep_log)
    train = _start(TRAIN, train_root, env, train_out, train_err)
    try:
        _wait_until(lambda: _epoch(train_out) >= 3, "training epoch 3", [sweep, train])
        _wait_until(lambda: sp.finished(study) >= 2, "two trials", [sweep, train])
        assert sweep.poll() is None and train.poll() is None, "ended before the outage"
        cluster.stop()
        stopped_at = _epoch(train_out)
        time.sleep(4)
        cluster.start()
    finally:
        _join(sweep, train)
    logs = {"sweep": sweep_log.read_text(errors="replace")}
    logs["train"] = train_out.read_text(errors="replace") + train_err.read_text(errors="replace")
    print(f"outage from epoch {stopped_at} of {TRAIN_EPOCHS}; retries:")
    for name, text in logs.items():
        print("\n".join(f"  {name}: {line}" for line in text.splitlines() if "unreachable" in line))
    assert sweep.returncode == 0, logs["sweep"][-3000:]
    assert train.returncode == 0, logs["train"][-3000:]
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"
        assert PASSWORD not in text, name
    # The outage really met the logging of both.
    assert re.search(r"tracking store .*:\*\*\*@.*: unreachable .*; retrying for up to 60 s",
                     train_err.read_text()), logs["train"][-3000:]  # fmt: skip
    assert re.search(r"optuna storage .*: unreachable .*; retrying", logs["sweep"]), logs["sweep"]
    assert stopped_at < TRAIN_EPOCHS

    # Every trial the sweep completed is in Optuna, with its FINISHED run and all epochs.
    client = sp.mlflow_client(sweep_root, env)
    trials = sp.trials(study)
    assert [t.number for t in trials] == list(range(len(trials)))
    assert sp.count(study, "FAIL", "RUNNING", "WAITING") == 0, [t.state.name for t in trials]
    assert sp.finished(study) >= SWEEP_TRIALS
    runs = {r.info.run_id: r for r in sp.runs(sweep_root, env)}
    for t in sp.trials(study, ("COMPLETE",)):
        run = runs[t.user_attrs[RUN_ATTR]]
        assert run.info.status == "FINISHED", (t.number, run.info.status)
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(t.value)
        steps = _steps(client, run.info.run_id, "val_accuracy")
        assert steps == list(range(1, TRIAL_EPOCHS + 1)), (t.number, steps)
    parents = [r for r in runs.values() if r.data.tags.get(tracking.TAG_STAGE) == "sweep"]
    assert [r.info.status for r in parents] == ["FINISHED"]

    # The training run has every epoch of every metric.
    run = _train_run(train_root, env)
    assert run.info.status == "FINISHED"
    history = json.loads((train_root / "reports" / "train_history.json").read_text())
    assert len(history) == TRAIN_EPOCHS
    for key in history[0]:
        if key != "epoch":
            assert _steps(client, run.info.run_id, key) == list(range(1, TRAIN_EPOCHS + 1)), key
    assert run.data.tags.get(tracking.TAG_MODEL_SHA)


def test_long_outage_fails_the_run_with_one_line(
    cluster: Cluster, templates: dict[str, Path], tmp_path: Path
) -> None:
    budget = 6
    url = cluster.create("mlflow_b", "mlflow_tpl")
    env = {"MLOPS_TRACKING_URI": url, "MLOPS_STORE_RETRY_S": str(budget)}
    root = _copy(templates["train"], tmp_path / "train")
    out, err = tmp_path / "out", tmp_path / "err"
    train = _start(TRAIN, root, env, out, err)
    try:
        _wait_until(lambda: _epoch(out) >= 3, "training epoch 3", [train])
        cluster.stop()
        stopped = time.monotonic()
        # Logging gives up after the budget; ending the run FAILED then retries afresh.
        _wait_until(lambda: "giving up" in err.read_text(errors="replace"), "give up", [train])
        gave_up_after = time.monotonic() - stopped
        cluster.start()
    finally:
        _join(train)
    stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
    print(f"gave up {gave_up_after:.1f} s after the stop; stderr:\n{stderr}")
    assert gave_up_after >= budget
    assert train.returncode == 1, stderr[-3000:]
    assert PASSWORD not in stdout + stderr
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith(
        f"train: error: tracking store {redact(url)}: unreachable for {budget} s: "
    ), last
    assert ":***@" in last
    run = _train_run(root, env)
    assert run.info.status == "FAILED"
    assert _epoch(out) < TRAIN_EPOCHS


def _frozen_inside_a_trial(study: Any, worker: psutil.Process) -> Any:
    """SIGSTOP the worker while it is inside a trial (the trial RUNNING, its MLflow run
    made); return that trial."""
    deadline = time.monotonic() + WAIT_S
    while True:
        assert worker.is_running(), "the worker ended first"
        assert time.monotonic() < deadline, "the worker was never seen inside a trial"
        if [t for t in sp.trials(study, ("RUNNING",)) if t.user_attrs.get(RUN_ATTR)]:
            worker.suspend()
            running = [t for t in sp.trials(study, ("RUNNING",)) if t.user_attrs.get(RUN_ATTR)]
            if running:
                return running[0]
            worker.resume()
        time.sleep(0.05)


@pytest.mark.parametrize("worker_state", ["responsive", "frozen"])
def test_long_outage_stops_the_sweep_and_its_workers(
    cluster: Cluster, templates: dict[str, Path], tmp_path: Path, worker_state: str
) -> None:
    """The store stays down past the retry budget while `mlops sweep run` polls it: the
    sweep exits 1 with one line, never while its worker still runs, and the trial and
    MLflow runs the worker had open end FAIL and KILLED (or FAILED), not RUNNING.
    `frozen`: the worker cannot stop itself (SIGSTOP), so the sweep kills it and ends what
    it left; `responsive`: it is let go once the sweep says it stops its workers."""
    budget = 5
    suffix = worker_state[0]
    env = {
        "MLOPS_TRACKING_URI": cluster.create(f"mlflow_c{suffix}", "mlflow_tpl"),
        "MLOPS_OPTUNA_STORAGE": cluster.create(f"optuna_c{suffix}", "optuna_tpl"),
        "MLOPS_STORE_RETRY_S": str(budget),
    }
    root = _copy(templates["sweep"], tmp_path / "sweep")
    (root / "params.yaml").write_text(sp.params_yaml(epochs=100))  # trials of ~1 s
    study = sp.open_study(root, env)
    cmd = [sys.executable, "-c", "from mlops.cli import main; main()", "sweep", "run",
           "--trials", "50", "--workers", "1"]  # fmt: skip
    log = tmp_path / "sweep.log"
    sweep = _start(cmd, root, env, log)
    workers: list[psutil.Process] = []
    try:
        _wait_until(lambda: sp.finished(study) >= 1, "a first trial", [sweep])
        workers = [
            c for c in psutil.Process(sweep.pid).children()
            if "sweep worker" in " ".join(c.cmdline())
        ]  # fmt: skip
        assert len(workers) == 1, workers
        trial = _frozen_inside_a_trial(study, workers[0])
        cluster.stop()
        # Only the sweep touches the store now (its worker is frozen): it gives up.
        _wait_until(lambda: "giving up" in log.read_text(errors="replace"), "give up", [sweep])
        cluster.start()
        if worker_state == "responsive":
            said = lambda: "sweep: stopping 1 worker(s)" in log.read_text(errors="replace")  # noqa: E731
            _wait_until(said, "the sweep stopping its workers", [sweep])
            workers[0].resume()
        sweep.wait(timeout=WAIT_S)
        alive = [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
        assert not alive, "the sweep exited while its worker still ran:\n" + log.read_text()
    finally:
        for w in workers:
            if w.is_running():
                w.kill()
        _join(sweep)
    out = log.read_text(errors="replace")
    print(out[-3000:])
    assert sweep.returncode == 1, out[-3000:]
    assert "Traceback" not in out and PASSWORD not in out
    last = [line for line in out.splitlines() if line.strip()][-1]
    url = redact(env["MLOPS_OPTUNA_STORAGE"])
    assert last.startswith(f"error: optuna storage {url}: unreachable for {budget} s: "), last

    # Nothing the sweep or its worker started is left RUNNING.
    states = {t.number: t.state.name for t in sp.trials(study)}
    assert states[trial.number] == "FAIL", states
    assert "RUNNING" not in states.values() and "WAITING" not in states.values(), states
    runs = {r.info.run_id: r for r in sp.runs(root, env)}
    assert not [r.info.run_name for r in runs.values() if r.info.status == "RUNNING"]
    assert runs[trial.user_attrs[RUN_ATTR]].info.status in ("KILLED", "FAILED")
    parent = [r for r in runs.values() if r.data.tags.get(tracking.TAG_STAGE) == "sweep"]
    assert [r.info.status for r in parent] == ["FAILED"]
    if worker_state == "frozen":
        assert workers[0].pid not in [p.pid for p in psutil.process_iter()]
        assert "ended what the workers left: trial(s) [" in out

"""Team mode on one machine: PostgreSQL for every store, a tracking server started by
`mlops server start`, and three "hosts" (separate processes, each with its own working
directory, data copy and environment) running `mlops sweep worker` on one study."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops import tracking
from mlops.errors import UserError
from mlops.exposure import free_port
from mlops.settings import Settings
from mlops.tuning.objective import RUN_ATTR, TAG_STUDY, TAG_TRIAL
from tests.integration import sweep_project as sp

MLOPS = str(Path(sys.executable).parent / "mlops")
HOSTS = 3
TARGET = 9


def _mlops(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MLOPS, *args], cwd=root, env=sp.clean_env(env), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_three_hosts_share_postgresql_and_a_tracking_server(
    tmp_path: Path, pg_databases: Callable[[], str]
) -> None:
    mlflow_db, optuna_db, mlops_db = pg_databases(), pg_databases(), pg_databases()
    server = tmp_path / "server"
    (server / ".dvc").mkdir(parents=True)
    server_env = {
        "MLOPS_TRACKING_URI": mlflow_db,
        "MLOPS_ARTIFACT_ROOT": str(tmp_path / "server-artifacts"),
    }
    started = _mlops(server, server_env, "server", "start", "--port", str(free_port()))
    assert started.returncode == 0, started.stderr
    try:
        url = started.stdout.split("MLflow server: ", 1)[1].split()[0]
        team = {
            "MLOPS_TRACKING_URI": url,
            "MLOPS_OPTUNA_STORAGE": optuna_db,
            "MLOPS_DATABASE_URL": mlops_db,
        }
        hosts = [tmp_path / f"host{i}" for i in range(HOSTS)]
        for host in hosts:
            sp.write_project(host)
        upgraded = _mlops(hosts[0], team, "db", "upgrade", "--json")
        assert upgraded.returncode == 0, upgraded.stderr
        doctor = _mlops(hosts[1], team, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr

        study = sp.open_study(hosts[0], team)  # created once, before workers join
        logs = [tmp_path / f"worker{i}.log" for i in range(HOSTS)]
        procs = []
        for host, log in zip(hosts, logs, strict=True):
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(
                    [MLOPS, "sweep", "worker", study.study_name, "--trials", str(TARGET)],
                    cwd=host, env=sp.clean_env(team), stdout=out, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]

        trials = sp.trials(study)
        finished = sp.trials(study, ("COMPLETE", "PRUNED"))
        assert TARGET <= len(finished) <= TARGET + HOSTS - 1, [t.state.name for t in trials]
        assert [t.number for t in trials] == list(range(len(trials)))
        assert not [t for t in trials if t.state.name in ("FAIL", "RUNNING", "WAITING")]

        client = MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name(sp.PIPELINE)
        assert experiment is not None and experiment.artifact_location.startswith(
            "mlflow-artifacts:"
        )
        runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
        pids = set()
        for t in finished:
            run = runs[t.user_attrs[RUN_ATTR]]
            assert run.info.status == "FINISHED", (t.number, run.info.status)
            assert run.data.tags[TAG_TRIAL] == str(t.number)
            assert run.data.tags[TAG_STUDY] == study.study_name
            assert run.data.metrics, f"trial {t.number}: no metrics in MLflow"
            assert run.data.params["learning_rate"] == str(t.params["learning_rate"])
            pids.add(run.data.tags["mlops.pid"])
        assert pids <= {str(p.pid) for p in procs}
        assert len(pids) >= 2, f"one host did all the work: {pids}"
        # Nothing went to the hosts' own embedded stores.
        for host in hosts:
            assert not (host / ".mlops" / "mlflow.db").exists()
            assert not (host / ".mlops" / "optuna.db").exists()
    finally:
        stopped = _mlops(server, server_env, "server", "stop")
        assert stopped.returncode == 0, stopped.stderr


def test_worker_cli_refuses_an_unknown_study_and_stops_on_sigterm(tmp_path: Path) -> None:
    """What the systemd unit relies on: a typo'd study is refused (a worker never starts
    a sweep of its own), and SIGTERM ends the current trial as FAIL and exits 130."""

    root = tmp_path / "host"
    sp.write_project(root, sp.params_yaml(epochs=200))
    unknown = _mlops(root, {}, "sweep", "worker", "no-such-study", "--trials", "2")
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.strip().splitlines() == [
        f"error: study 'no-such-study': not found in sqlite:///{root}/.mlops/optuna.db; "
        "start it with `mlops sweep run` (or the tune stage) first"
    ]
    study = sp.open_study(root)
    proc = subprocess.Popen(
        [MLOPS, "sweep", "worker", study.study_name, "--trials", "50", "--threads", "1"],
        cwd=root, env=sp.clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not sp.trials(study, ("RUNNING",)):
            assert proc.poll() is None and time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert out.strip().splitlines()[-1] == "error: worker: stopped by a signal", out
    states = [t.state.name for t in sp.trials(study)]
    assert "RUNNING" not in states and states.count("FAIL") == 1, states


def _doctor(root: Path, url: str) -> tuple[int, dict[str, dict[str, object]]]:
    done = _mlops(root, {"MLOPS_TRACKING_URI": url}, "doctor", "--json")
    return done.returncode, {c["name"]: c for c in json.loads(done.stdout)}


def _files(top: Path) -> set[str]:
    return {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()}


def test_an_embedded_experiment_is_moved_before_runs_go_through_a_server(tmp_path: Path) -> None:
    """An experiment made in embedded mode keeps a `file://` artifact location: through
    the team's server its runs would write to the client's own disk. They are refused
    with the move to make, `mlops doctor` names the experiment, and after the move runs
    store their files on the server."""

    client_root = tmp_path / "client"
    (client_root / ".dvc").mkdir(parents=True)
    (client_root / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    (client_root / "params.yaml").write_text("{}\n")
    note = tmp_path / "note.txt"
    note.write_text("hello")
    embedded = Settings.from_env(env={}, cwd=client_root)
    with tracking.stage_run(embedded, "digits", "train"):
        tracking.log_artifacts(note)
    local = client_root / ".mlops" / "artifacts"
    before = _files(local)
    assert [f for f in before if f.endswith("note.txt")], before

    # The team's server, on that very store, with its artifacts elsewhere.
    server, served = tmp_path / "server", tmp_path / "served"
    (server / ".dvc").mkdir(parents=True)
    server_env = {"MLOPS_TRACKING_URI": embedded.tracking_uri, "MLOPS_ARTIFACT_ROOT": str(served)}
    started = _mlops(server, server_env, "server", "start", "--port", str(free_port()))
    assert started.returncode == 0, started.stderr
    try:
        url = started.stdout.split("MLflow server: ", 1)[1].split()[0]
        team = Settings.from_env(env={"MLOPS_TRACKING_URI": url}, cwd=client_root)
        with pytest.raises(UserError) as refused, tracking.stage_run(team, "digits", "train"):
            pytest.fail("a run started that would write to the client's disk")
        message = str(refused.value)
        assert message.startswith(
            f"experiment digits: its artifacts are in {local.as_uri()}/digits, on this "
            "machine's disk"
        ), message
        move = f"MLFLOW_TRACKING_URI={url} mlflow experiments rename -x 1 --new-name "
        move += "digits-embedded"
        assert move in message and "\n" not in message
        assert _files(local) == before

        code, checks = _doctor(client_root, url)
        assert code == 1 and not checks["experiment digits"]["ok"]
        assert move in checks["experiment digits"]["detail"]

        # The move, as the message gives it (MLflow's own command).
        bin_dir = str(Path(sys.executable).parent)
        moved = subprocess.run(
            move, shell=True, cwd=client_root, capture_output=True, text=True, timeout=120,
            env=sp.clean_env({"PATH": f"{bin_dir}:{sp.clean_env()['PATH']}"}),
        )  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        with tracking.stage_run(team, "digits", "train"):
            tracking.log_artifacts(note)
        assert _files(local) == before  # nothing more on the client's disk
        assert len(list(served.rglob("note.txt"))) == 1  # on the server's store
        new = MlflowClient(tracking_uri=url).get_experiment_by_name("digits")
        assert new is not None and new.artifact_location.startswith("mlflow-artifacts:")

        code, checks = _doctor(client_root, url)
        assert code == 0, [c for c in checks.values() if not c["ok"]]
        assert checks["experiment digits-embedded"]["ok"]
        assert checks["experiments"]["ok"]
    finally:
        stopped = _mlops(server, server_env, "server", "stop")
        assert stopped.returncode == 0, stopped.stderr

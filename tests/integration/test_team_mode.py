"""Team mode on one machine: PostgreSQL for every store, a tracking server started by
`mlops server start`, and three "hosts" (separate processes, each with its own working
directory, data copy and environment) running `mlops sweep worker` on one study."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mlops.tuning import RUN_ATTR, TAG_STUDY, TAG_TRIAL
from mlops.ui import free_port
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
    from mlflow.tracking import MlflowClient

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
    import signal
    import time

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

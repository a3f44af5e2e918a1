"""Team mode end to end: every store on PostgreSQL, a tracking server started by
`mlops server start`, and — with only `MLOPS_*` settings changed — `dvc repro`, a
3-worker sweep, a promotion and a rollback, all visible through the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from mlflow.tracking import MlflowClient

from mlops.exposure import free_port
from tests.e2e.project import SLICE, clean_env, copy_repo

pytestmark = pytest.mark.e2e
PG = "postgresql://postgres@127.0.0.1:5432"
MLOPS = str(Path(sys.executable).parent / "mlops")


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    """Three fresh databases (MLflow and Optuna each keep an `alembic_version` table)."""
    names = {k: f"mlops_team_{k}_{uuid.uuid4().hex[:8]}" for k in ("mlflow", "optuna", "mlops")}
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {k: f"{PG}/{name}" for k, name in names.items()}
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            for name in names.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(cwd: Path, env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(cmd), cwd=cwd, env={**clean_env(), **env}, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_pipeline_sweep_promotion_and_rollback_through_a_server(
    tmp_path: Path, databases: dict[str, str]
) -> None:
    server_dir = tmp_path / "server"
    (server_dir / ".dvc").mkdir(parents=True)
    server_env = {"MLOPS_TRACKING_URI": databases["mlflow"]}
    started = _run(server_dir, server_env, MLOPS, "server", "start", "--port", str(free_port()))
    url = started.stdout.split("MLflow server: ", 1)[1].split()[0]
    try:
        # The slice of digits trains a weaker model than the production gate's 0.95.
        gates = {"production": {"thresholds": {"accuracy": 0.5}, "beat_holder_by": None}}
        project = copy_repo(tmp_path / "project", SLICE | {"registry": {"gates": gates}})
        team = {
            "MLOPS_TRACKING_URI": url,
            "MLOPS_OPTUNA_STORAGE": databases["optuna"],
            "MLOPS_DATABASE_URL": databases["mlops"],
        }
        _run(project, team, MLOPS, "db", "upgrade")
        _run(project, team, "dvc", "repro")
        assert not (project / ".mlops" / "mlflow.db").exists(), "logged to the embedded store"

        client = MlflowClient(tracking_uri=url, registry_uri=url)
        experiment = client.get_experiment_by_name("digits")
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id])
        stages = {r.data.tags.get("mlops.stage") for r in runs}
        assert {"ingest", "validate", "split", "train", "evaluate", "register"} <= stages
        assert all(r.info.status == "FINISHED" for r in runs)
        # The model's artifacts went through the server into its destination folder.
        served = server_dir / ".mlops" / "artifacts"
        assert any(served.rglob("*.safetensors")) or any(served.rglob("MLmodel")), served

        _run(project, team, "dvc", "exp", "run", "-S", "train.seed=7")  # trains version 2
        for version, stage in (("1", "staging"), ("1", "production"), ("2", "staging"),
                               ("2", "production")):  # fmt: skip
            _run(project, team, MLOPS, "registry", "promote", "digits", version, "--to", stage)
        assert client.get_registered_model("digits").aliases["production"] == "2"
        _run(project, team, MLOPS, "registry", "rollback", "digits", "--reason", "team test")
        assert client.get_registered_model("digits").aliases["production"] == "1"
        history = _run(project, team, MLOPS, "registry", "history", "digits", "--json").stdout
        assert '"rollback"' in history and "team test" in history

        sweep = _run(project, team, MLOPS, "sweep", "run", "digits", "--trials", "3",
                     "--workers", "3", "--json")  # fmt: skip
        counts = json.loads(sweep.stdout)["counts"]
        assert counts["complete"] + counts["pruned"] == 3 and counts["fail"] == 0, counts
        trial_runs = client.search_runs(
            [experiment.experiment_id], filter_string="tags.`mlops.optuna.trial` != ''"
        )
        assert len({r.data.tags["mlops.pid"] for r in trial_runs}) >= 2
        assert os.environ.get("MLOPS_TRACKING_URI") is None  # nothing leaked into the test
    finally:
        _run(server_dir, server_env, MLOPS, "server", "stop")

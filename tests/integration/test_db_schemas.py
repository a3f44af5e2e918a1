"""`mlops db status|upgrade` and the doctor's schema checks on real stores: a fresh
project, an MLflow database left at an older revision, and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from mlflow.store.db.utils import _get_alembic_config
from mlflow.store.tracking.dbmodels.initial_models import Base
from mlflow.tracking import MlflowClient
from sqlalchemy import create_engine, inspect, text

from mlops import tracking
from mlops.db import driver_url
from mlops.doctor import check_schemas
from mlops.errors import StoreError
from mlops.migrations import drop_leftovers
from mlops.schemas import status, upgrade
from mlops.settings import Settings

STORES = ["MLflow tracking", "Optuna storage", "registry tables", "schedule tables"]


def _cli(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))}
    return subprocess.run(
        [sys.executable, "-c", "from mlops.cli import main; main()", *args],
        cwd=project, env={**clean, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_fresh_project_is_created_by_upgrade_then_upgrade_is_a_no_op(project: Path) -> None:
    settings = Settings.from_env(env={}, cwd=project)
    before = status(settings)
    assert [s.name for s in before] == STORES
    assert all(s.current is None and s.ok for s in before)  # nothing made by looking
    assert not (project / ".mlops" / "mlflow.db").exists()

    pairs = upgrade(settings)
    assert all(a.current == a.head and b.current is None for b, a in pairs), pairs
    again = upgrade(settings)
    assert all(b.current == a.current == a.head for b, a in again), again
    checks = check_schemas(settings)
    assert [c.name for c in checks] == [f"schema: {n}" for n in STORES]
    assert all(c.ok and "(current)" in c.detail for c in checks), checks


def _old_mlflow_db(project: Path, revision: str) -> str:
    # As MLflow makes a database (its initial tables, then its migrations), stopped early.
    url = f"sqlite:///{project / '.mlops' / 'mlflow.db'}"
    (project / ".mlops").mkdir(exist_ok=True)
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    command.upgrade(_get_alembic_config(url), revision)
    return url


def _older_revision() -> str:
    revisions = list(ScriptDirectory.from_config(_get_alembic_config("")).walk_revisions())
    return str(revisions[5].revision)  # a few migrations behind the head


def test_an_old_mlflow_schema_is_reported_and_upgraded(project: Path) -> None:
    (project / "params.yaml").write_text("{}\n")
    old = _older_revision()
    _old_mlflow_db(project, old)

    report = _cli(project, "db", "status", "--json")
    assert report.returncode == 1, report.stderr
    assert report.stderr.strip().count("\n") == 0 and "mlops db upgrade" in report.stderr
    mlflow = {s["name"]: s for s in json.loads(report.stdout)}["MLflow tracking"]
    assert mlflow["current"] == old and not mlflow["ok"]

    doctor = _cli(project, "doctor", "--json")
    assert doctor.returncode == 1
    found = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert not found["schema: MLflow tracking"]["ok"]
    assert old in found["schema: MLflow tracking"]["detail"]
    assert "mlops db upgrade" in found["schema: MLflow tracking"]["detail"]

    done = _cli(project, "db", "upgrade", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["store"]: r for r in json.loads(done.stdout)}
    assert rows["MLflow tracking"]["before"] == old
    assert rows["MLflow tracking"]["after"] == rows["MLflow tracking"]["head"]
    assert all(r["ok"] for r in rows.values())
    assert _cli(project, "db", "status").returncode == 0


@pytest.mark.parametrize(
    "store", ["MLOPS_DATABASE_URL", "MLOPS_OPTUNA_STORAGE", "MLOPS_TRACKING_URI"]
)
def test_upgrade_on_postgresql(project: Path, pg_database: str, store: str) -> None:
    settings = Settings.from_env(env={store: pg_database}, cwd=project)
    upgrade(settings)
    on_pg = [s for s in status(settings) if s.url == pg_database]
    assert on_pg and all(s.current == s.head for s in on_pg), on_pg
    password_free = _cli(project, "db", "status", "--json", **{store: pg_database})
    assert password_free.returncode == 0, password_free.stderr


def test_mlflow_logs_into_postgresql_through_a_plain_url(project: Path, pg_database: str) -> None:
    """`MLOPS_TRACKING_URI=postgresql://…` works with the psycopg 3 driver we ship."""

    settings = Settings.from_env(env={"MLOPS_TRACKING_URI": pg_database}, cwd=project)
    with tracking.stage_run(settings, "pg", "train") as run_id:
        tracking.log_metrics({"val_accuracy": 0.5})
    run = MlflowClient(tracking_uri=driver_url(pg_database)).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"val_accuracy": 0.5}


def _tables(url: str) -> set[str]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_leftovers_are_dropped_only_when_their_table_exists(
    project: Path, pg_database: str, backend: str
) -> None:
    url = f"sqlite:///{project / 'x.db'}" if backend == "sqlite" else pg_database
    _execute(url, "CREATE TABLE kept (id INTEGER)", "INSERT INTO kept VALUES (1)")
    assert drop_leftovers(url) == []  # the usual case: nothing to do
    _execute(url, "CREATE TABLE _alembic_tmp_kept (id INTEGER)")
    assert drop_leftovers(url) == ["_alembic_tmp_kept"]
    assert _tables(url) == {"kept"}

    # A copy whose table is gone may hold its only rows: kept, and named.
    _execute(url, "CREATE TABLE _alembic_tmp_gone (id INTEGER)")
    _execute(url, "INSERT INTO _alembic_tmp_gone VALUES (7)")
    with pytest.raises(StoreError, match=r"_alembic_tmp_gone .* table gone is missing"):
        drop_leftovers(url)
    assert _tables(url) == {"kept", "_alembic_tmp_gone"}


def test_upgrade_repairs_an_mlflow_store_left_mid_migration(project: Path) -> None:
    # What a full disk leaves (see tests/e2e/test_full_disk.py for the real one): MLflow's
    # tables at an older revision and the copy of a batch rebuild that never finished.
    url = _old_mlflow_db(project, "c8d9e0f1a2b3")
    _execute(url, "CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
    done = _cli(project, "db", "upgrade")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "_alembic_tmp_experiments" not in _tables(url)
    assert all(s.current == s.head for s in status(Settings.from_env(env={}, cwd=project)))

"""Fixtures for integration tests: a throwaway project with real SQLite stores."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import psycopg
import pytest

from mlops import tracking
from mlops.settings import Settings


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder that looks like a DVC repo (so stores resolve under it)."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    return tmp_path


@pytest.fixture
def settings(project: Path) -> Iterator[Settings]:
    """Settings of the embedded default under `project`, with MLflow pointed at them."""

    s = Settings.from_env(env={}, cwd=project)
    tracking.connect(s)
    yield s
    while mlflow.active_run() is not None:
        mlflow.end_run()


PG = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def pg_databases() -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases on the local server, all dropped afterwards
    (MLflow and Optuna each need their own: both keep an `alembic_version` table)."""
    made: list[str] = []

    def make() -> str:
        name = f"mlops_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{PG}/{name}"

    try:
        yield make
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            for name in made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database(pg_databases: Callable[[], str]) -> str:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    return pg_databases()


STORES = {
    "database": "MLOPS_DATABASE_URL",
    "optuna": "MLOPS_OPTUNA_STORAGE",
    "tracking": "MLOPS_TRACKING_URI",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """MLOPS_* settings, once per backend: none (the embedded SQLite stores under the
    project), then the stores the module names with `pytest.mark.stores("database",
    "optuna", "tracking")` on one fresh PostgreSQL database (the others stay embedded)."""
    if request.param == "sqlite":
        return {}
    marker = request.node.get_closest_marker("stores")
    if marker is None or not set(marker.args) <= set(STORES):
        pytest.fail(
            f"{request.node.nodeid}: name its stores with pytest.mark.stores({', '.join(STORES)})"
        )
    url: str = request.getfixturevalue("pg_database")
    return {
        STORES[s]: url.replace("postgresql://", "postgresql+psycopg://", 1)
        if s == "tracking"
        else url
        for s in marker.args
    }

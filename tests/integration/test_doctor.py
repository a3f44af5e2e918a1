"""`mlops doctor` against real stores: SQLite files, a real PostgreSQL database (created
and dropped here), an unreachable server, and the CLI's exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlops.doctor import check_store, run_checks
from mlops.settings import Settings


def _cli(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))}
    return subprocess.run(
        [sys.executable, "-c", "from mlops.cli import main; main()", *args],
        cwd=project,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_all_checks_pass_on_a_fresh_project(project: Path) -> None:
    (project / "params.yaml").write_text("train:\n  epochs: 3\n")
    checks = run_checks(Settings.from_env(env={}, cwd=project))
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    names = {c.name for c in checks}
    assert {"platform module", "dvc repository", "tracking store", "package torch"} <= names


def test_bad_params_and_missing_dvc_fail(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  epochs: -1\n")
    checks = {c.name: c for c in run_checks(Settings.from_env(env={}, cwd=tmp_path))}
    assert not checks["params.yaml"].ok
    assert "train.epochs" in checks["params.yaml"].detail
    assert not checks["dvc repository"].ok


def test_postgres_store_is_reachable(pg_database: str) -> None:
    check = check_store("platform database", pg_database)
    assert check.ok, check.detail


def test_unreachable_postgres_names_the_store_and_hides_the_password() -> None:
    check = check_store("optuna storage", "postgresql://postgres:s3cret@127.0.0.1:1/nope")
    assert not check.ok
    assert "s3cret" not in check.detail
    assert "127.0.0.1:1" in check.detail


def test_cli_doctor_exit_codes(project: Path, pg_database: str) -> None:
    (project / "params.yaml").write_text("{}\n")
    ok = _cli(project, "doctor", "--json", MLOPS_DATABASE_URL=pg_database)
    assert ok.returncode == 0, ok.stderr
    report = {c["name"]: c for c in json.loads(ok.stdout)}
    assert report["platform database"]["ok"]

    bad = _cli(project, "doctor", MLOPS_OPTUNA_STORAGE="postgresql://u:pw@127.0.0.1:1/x")
    assert bad.returncode == 1
    errors = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "optuna storage" in errors[0]
    assert "pw@" not in bad.stderr

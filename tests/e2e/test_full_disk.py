"""A real full disk under the stores (a small tmpfs holding MLOPS_HOME): every command
fails with one line, and once space is freed the stores work again, even when MLflow's
first use stopped halfway through a batch migration and left an `_alembic_tmp_*` table."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.small_disk import SmallDisk

pytestmark = pytest.mark.e2e

# Free space left when a command starts: with these MLflow's store stops inside its
# migrations (on this MLflow both stop in a batch migration and leave an `_alembic_tmp_*`
# table behind); the test adds 90% of what a whole first registration takes.
LEAVE_KB = (150, 600)
REGISTER = [sys.executable, "-m", "pipelines.register"]
MLOPS = [sys.executable, "-c", "from mlops.cli import main; main()"]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path / "disk", "32m")
    try:
        yield small
    finally:
        small.close()


@pytest.fixture
def project(pipeline: Path, tmp_path: Path) -> Path:
    """A copy of the pipeline's project (models, splits, reports), without its stores."""
    copy = tmp_path / "project"
    shutil.copytree(pipeline, copy, ignore=shutil.ignore_patterns(".mlops"))
    return copy


def _one_line(done: subprocess.CompletedProcess[str], prefix: str) -> None:
    """Exit 1 with one error line, the last one: before it only progress lines and
    MLflow's INFO lines of a first use ("Creating initial MLflow database tables...")."""
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "warning" in line.lower()]
    assert errors == lines[-1:], done.stderr[-3000:]
    assert lines[-1].startswith(prefix), lines[-1]
    assert "no space left on the device" in lines[-1], lines[-1]


def test_register_on_a_full_disk_is_one_line_and_works_once_freed(
    disk: SmallDisk, project: Path
) -> None:
    home = disk.where / "home"
    env = {"MLOPS_HOME": str(home)}
    before = disk.available()
    assert disk.run(REGISTER, project, env).returncode == 0
    need = before - disk.available()
    leftovers = []
    for leave in [kb * 1024 for kb in LEAVE_KB] + [need * 9 // 10]:
        disk.clear()
        disk.fill(leave)
        _one_line(disk.run(REGISTER, project, env), "register: error: ")
        leftovers += [t for t in disk.tables(home / "mlflow.db") if t.startswith("_alembic_tmp_")]
        disk.free()
        done = disk.run(REGISTER, project, env)
        assert done.returncode == 0, f"{leave} bytes: {done.stderr[-3000:]}"
        assert "registered digits version 1" in done.stdout
        assert not [t for t in disk.tables(home / "mlflow.db") if t.startswith("_alembic_tmp_")]
    assert leftovers, "no case stopped inside a batch migration: choose other LEAVE_KB"


def test_db_upgrade_cleans_a_leftover_of_a_full_disk(disk: SmallDisk, project: Path) -> None:
    home = disk.where / "home"
    env = {"MLOPS_HOME": str(home)}
    for leave in (600, 150, 750, 300, 450, 900, 1050):  # until one stops in a batch rebuild
        disk.clear()
        disk.fill(leave * 1024)
        _one_line(disk.run([*MLOPS, "db", "upgrade"], project, env), "error: ")
        tables = disk.tables(home / "mlflow.db")
        if [t for t in tables if t.startswith("_alembic_tmp_")]:
            break
    else:
        pytest.fail("no case stopped inside a batch migration: choose other sizes")
    again = disk.run([*MLOPS, "db", "upgrade"], project, env)  # still full: one line again
    _one_line(again, "error: ")
    disk.free()
    done = disk.run([*MLOPS, "db", "upgrade"], project, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not [t for t in disk.tables(home / "mlflow.db") if t.startswith("_alembic_tmp_")]
    status = disk.run([*MLOPS, "db", "status", "--json"], project, env)
    assert status.returncode == 0, status.stderr[-3000:]


def test_export_on_a_full_disk_is_one_line(disk: SmallDisk, project: Path) -> None:
    env = {"MLOPS_HOME": str(disk.where / "home")}
    done = disk.run(REGISTER, project, env)
    assert done.returncode == 0, done.stderr[-3000:]
    disk.fill(0)
    export = [*MLOPS, "export", "digits@1", "--format", "onnx"]
    _one_line(disk.run(export, project, env), "error: ")
    disk.free()
    done = disk.run(export, project, env)
    assert done.returncode == 0, done.stderr[-3000:]

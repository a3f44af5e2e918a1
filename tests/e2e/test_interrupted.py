"""`dvc repro` killed with SIGKILL in the middle of the train stage, then run again: the
outputs are identical to an uninterrupted run and no MLflow run stays RUNNING."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.project import SLICE, clean_env, copy_repo, dvc_outs, run

pytestmark = pytest.mark.e2e


def _running_train_run(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            rows = conn.execute(
                "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
                "where r.status = 'RUNNING' and t.key = 'mlops.stage' and t.value = 'train'"
            ).fetchone()
    except sqlite3.Error:
        return False
    return bool(rows and rows[0])


def test_sigkill_mid_stage_then_rerun_matches_uninterrupted(
    tmp_path: Path, pipeline: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = copy_repo(tmp_path, SLICE)
    log = (tmp_path / "repro.log").open("w")
    proc = subprocess.Popen(
        ["dvc", "repro"], cwd=project, env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    db = project / ".mlops" / "mlflow.db"
    deadline = time.monotonic() + 300
    while not _running_train_run(db):
        assert proc.poll() is None, "dvc repro ended before the train stage was caught running"
        assert time.monotonic() < deadline, "the train stage never started"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage process, as a crash would
    proc.wait(timeout=30)
    log.close()

    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("digits").experiment_id
    stale = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert [r.data.tags["mlops.stage"] for r in stale] == ["train"]

    again = run(["dvc", "repro"], project)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert dvc_outs(project) == dvc_outs(pipeline)
    for rel in ("models/model.safetensors", "data/split/train.parquet", "reports/metrics.json"):
        assert (project / rel).read_bytes() == (pipeline / rel).read_bytes(), rel

    runs = client.search_runs([experiment])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed = client.get_run(stale[0].info.run_id)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["mlops.closed_by"] == "stale-run-recovery"

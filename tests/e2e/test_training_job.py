"""The training job as a user runs it: SIGKILL mid-epoch then `--resume` gives the same
model as an uninterrupted run; torchrun with 2 processes logs one MLflow run; every
family trains, evaluates and registers through `dvc exp run`; bad input is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from registry.registration import version_info
from tests.e2e.project import clean_env, copy_repo, point_at_file, run

pytestmark = pytest.mark.e2e

JOB = {"data": {"max_rows": 900}, "train": {"epochs": 30, "early_stopping": {"patience": 0}}}
TRAIN = [sys.executable, "-m", "pipelines.train"]


@pytest.fixture(scope="module")
def split_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repo whose data stages have run (train not yet)."""
    project = copy_repo(tmp_path_factory.mktemp("job"), JOB)
    done = run(["dvc", "repro", "split"], project)
    assert done.returncode == 0, done.stderr[-3000:]
    return project


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(
    split_project: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = split_project
    straight = run([*TRAIN, "--checkpoint-every", "0"], project)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = {
        rel: (project / rel).read_bytes()
        for rel in ("models/model.safetensors", "reports/train_history.json")
    }
    checkpoint = project / "checkpoints" / "train.pt"
    assert not checkpoint.exists()

    proc = subprocess.Popen(
        [*TRAIN, "--checkpoint-every", "0"], cwd=project, env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for a few epochs, so a checkpoint exists
        if "epoch  10/" in line:
            break
    assert checkpoint.exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    resumed = run([*TRAIN, "--resume", "--checkpoint-every", "0"], project)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for rel, data in expected.items():
        assert (project / rel).read_bytes() == data, rel
    assert not checkpoint.exists()

    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("digits").experiment_id
    runs = client.search_runs([experiment], "tags.`mlops.stage` = 'train'")
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FINISHED", "FINISHED", "KILLED"]
    latest = max(runs, key=lambda r: r.info.start_time)
    assert int(latest.data.tags["mlops.resumed_from_epoch"]) >= 9  # epoch 10 printed, 9 saved
    assert len(client.get_metric_history(latest.info.run_id, "val_loss")) == 30


def test_resume_refuses_a_foreign_checkpoint(
    split_project: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = split_project
    checkpoint = project / "checkpoints" / "train.pt"
    checkpoint.parent.mkdir(exist_ok=True)

    torch.save({"fingerprint": "another job", "epoch": 3}, checkpoint)
    try:
        refused = run([*TRAIN, "--resume"], project)
    finally:
        checkpoint.unlink()
    assert refused.returncode == 2
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "written for another model" in lines[0]
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("digits").experiment_id
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")


def test_torchrun_two_processes_log_one_run(
    split_project: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = split_project
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("digits").experiment_id
    before = {r.info.run_id for r in client.search_runs([experiment])}
    env = clean_env() | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "pipelines.train"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    new = [r for r in client.search_runs([experiment]) if r.info.run_id not in before]
    assert [r.data.tags["mlops.stage"] for r in new] == ["train"]
    assert new[0].data.tags["mlops.world_size"] == "2"
    assert new[0].data.metrics["best_val_accuracy"] > 0.85


@pytest.mark.parametrize("family", ["cnn", "rnn", "transformer"])
def test_family_through_dvc_exp_run(
    family: str, split_project: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = split_project
    done = run(["dvc", "exp", "run", "--temp", "-S", f"train.model.family={family}"], project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = mlflow_client(project)
    versions = client.search_model_versions("name = 'digits'")
    mine = [v for v in versions if version_info(v.tags).get("mlops.family") == family]
    assert len(mine) == 1
    assert float(version_info(mine[0].tags)["mlops.metric.test_accuracy"]) > 0.8


def test_cnn_on_tabular_data_is_refused_with_one_line(
    tmp_path: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = copy_repo(tmp_path, {"train": {"model": {"family": "cnn"}}})
    csv = project / "data" / "external" / "tab.csv"
    csv.write_text("a,b,c,label\n" + "".join(f"{i},{i % 7},{i % 5},{i % 2}\n" for i in range(80)))
    point_at_file(project, "tab.csv", "label")
    done = run(["dvc", "repro"], project)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("train: error:")]
    assert len(lines) == 1 and "cnn" in lines[0] and "shape 3" in lines[0]
    assert not (project / "models" / "model.safetensors").exists()
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("digits").experiment_id
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")

"""`dvc repro` end to end on a slice of digits: outputs, DVC metrics and plots, every stage
in MLflow, the registered version with its lineage, and a second repro that is a no-op."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.registration import version_info
from tests.e2e.project import assert_plots, copy_repo, dvc_outs, run

pytestmark = pytest.mark.e2e

STAGES = ["ingest", "validate", "split", "train", "evaluate", "register"]


def test_outputs_and_dvc_metrics(pipeline: Path) -> None:
    metrics = json.loads((pipeline / "reports" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.85
    assert metrics["test"]["n_samples"] == 90
    for rel in [
        "data/raw/dataset.parquet", "data/raw/schema.json", "data/split/test.parquet",
        "models/model.safetensors", "models/model.json", "reports/validation.json",
        "reports/plots/test_predictions.png", "reports/plots/learning_curves.png",
    ]:  # fmt: skip
        assert (pipeline / rel).is_file(), rel
    assert (pipeline / "reports/plots/test_predictions.png").read_bytes()[:4] == b"\x89PNG"

    shown = run(["dvc", "metrics", "show", "--json"], pipeline)
    assert shown.returncode == 0, shown.stderr
    assert "test.accuracy" in json.dumps(shown.stdout) or '"accuracy"' in shown.stdout
    plots = run(["dvc", "plots", "show", "--json"], pipeline)
    assert plots.returncode == 0, plots.stderr
    assert "WARNING" not in plots.stderr, plots.stderr
    shown = json.loads(plots.stdout)
    assert not shown.get("errors"), shown.get("errors")
    assert_plots(shown["data"], epochs=40, score="val_accuracy")


def test_every_stage_logged_and_linked(
    pipeline: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    client = mlflow_client(pipeline)
    experiment = client.get_experiment_by_name("digits")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.data.tags["mlops.stage"]: r for r in runs}
    assert sorted(by_stage) == sorted(STAGES)
    assert all(r.info.status == "FINISHED" for r in runs)
    train = by_stage["train"]
    assert by_stage["evaluate"].data.tags["mlflow.parentRunId"] == train.info.run_id
    assert by_stage["register"].data.tags["mlflow.parentRunId"] == train.info.run_id
    assert train.data.params["train.epochs"] == "40"
    assert len(client.get_metric_history(train.info.run_id, "val_accuracy")) == 40
    assert "test_accuracy" in train.data.metrics
    artifacts = {
        a.path for a in client.list_artifacts(by_stage["evaluate"].info.run_id, "evaluation")
    }
    assert "evaluation/test_predictions.png" in artifacts


def test_registered_version_carries_lineage(
    pipeline: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    client = mlflow_client(pipeline)
    registered = json.loads((pipeline / "reports" / "registered.json").read_text())
    assert registered["name"] == "digits" and registered["version"] == "1"
    mv = client.get_model_version("digits", "1")
    # few tags on the version: the lineage is one JSON tag, its card the description
    assert set(mv.tags) == {"mlops.stage", "mlops.model_sha256", "mlops.artifact_sha256",
                            "mlops.manifest", "mlops.lineage"}  # fmt: skip
    assert mv.description.startswith("**digits version 1**: PyTorch mlp classification")
    tags = version_info(mv.tags)
    head = run(["git", "rev-parse", "HEAD"], pipeline).stdout.strip()
    assert tags["mlops.git_commit"] == head
    assert tags["mlops.git_dirty"] == "false"
    assert not [k for k in tags if k.startswith("mlops.dvc_exp.")]  # not an experiment
    outs = dvc_outs(pipeline)
    for part in ("train", "val", "test"):
        assert tags[f"mlops.data.{part}.md5"] == outs[f"data/split/{part}.parquet"]
    assert tags["mlops.data.raw.md5"] == outs["data/raw/dataset.parquet"]
    assert mv.tags["mlops.model_sha256"] == registered["sha256"]
    assert len(tags["mlops.params_hash"]) == 64
    assert float(tags["mlops.metric.test_accuracy"]) > 0.85
    train = client.get_run(tags["mlops.train_run_id"])
    assert train.data.tags["mlops.stage"] == "train"
    assert mv.run_id and client.get_run(mv.run_id).data.tags["mlops.stage"] == "register"


def test_runs_read_well_in_the_mlflow_ui(
    pipeline: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    """Each run is named with what it did and the commit it ran at; train and register
    runs carry a Markdown description (the register run's is the version's card)."""

    client = mlflow_client(pipeline)
    experiment = client.get_experiment_by_name("digits")
    runs = {r.data.tags["mlops.stage"]: r for r in client.search_runs([experiment.experiment_id])}
    head = run(["git", "rev-parse", "HEAD"], pipeline).stdout.strip()[:7]
    names = {stage: r.info.run_name for stage, r in runs.items()}
    assert all(name.endswith(f" · {head}") for name in names.values()), names
    assert re.fullmatch(rf"train mlp · test accuracy 0\.\d{{4}} · {head}", names["train"]), names
    assert names["evaluate"] == names["train"].replace("train", "evaluate", 1)
    assert re.fullmatch(rf"ingest 600 rows · 64 features · 10 classes · {head}", names["ingest"])
    assert names["validate"] == f"validate passed · 600 rows · {head}"
    assert re.fullmatch(rf"split \d+/\d+/90 rows \(train/val/test\) · {head}", names["split"])
    assert names["register"] == f"register digits v1 · {head}"
    assert len(set(names.values())) == len(names)
    train_note = runs["train"].data.tags["mlflow.note.content"]
    assert "**mlp** classification" in train_note and "| val_accuracy |" in train_note
    card = runs["register"].data.tags["mlflow.note.content"]
    assert card == client.get_model_version("digits", "1").description


def test_second_repro_is_a_no_op(pipeline: Path, mlflow_client: Callable[[Path], Any]) -> None:
    before = (pipeline / "dvc.lock").read_text()
    runs_before = len(
        mlflow_client(pipeline).search_runs(
            [mlflow_client(pipeline).get_experiment_by_name("digits").experiment_id]
        )
    )
    again = run(["dvc", "repro"], pipeline)
    assert again.returncode == 0, again.stderr
    assert "Running stage" not in again.stdout
    assert (pipeline / "dvc.lock").read_text() == before
    status = run(["dvc", "status", "--json"], pipeline)
    assert status.returncode == 0 and json.loads(status.stdout) == {}
    client = mlflow_client(pipeline)
    assert (
        len(client.search_runs([client.get_experiment_by_name("digits").experiment_id]))
        == runs_before
    )


def test_lock_records_params_per_stage(pipeline: Path) -> None:
    lock = yaml.safe_load((pipeline / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 40
    assert "data" in lock["stages"]["ingest"]["params"]["params.yaml"]


def test_bad_params_stop_repro_before_any_stage_computes(tmp_path: Path, pipeline: Path) -> None:
    project = copy_repo(tmp_path, {"train": {"learning_rate": -1.0}})
    done = run(["dvc", "repro"], project)
    assert done.returncode != 0
    assert "train.learning_rate = -1.0" in done.stderr
    assert not (project / "data" / "raw" / "dataset.parquet").exists()
    assert not (project / ".mlops" / "mlflow.db").exists()
    check = run(["mlops", "params", "check"], project)
    assert check.returncode == 2
    assert check.stderr.strip().count("\n") == 0 and "train.learning_rate" in check.stderr


def test_temp_experiment_logs_into_the_workspace_store(
    pipeline: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    done = run(["dvc", "exp", "run", "--temp", "-S", "train.seed=7"], pipeline)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = mlflow_client(pipeline)
    experiment = client.get_experiment_by_name("digits").experiment_id
    seeded = client.search_runs([experiment], "params.`train.seed` = '7'")
    assert [r.data.tags["mlops.stage"] for r in seeded] == ["train"]
    assert seeded[0].info.status == "FINISHED"
    assert not list((pipeline / ".dvc" / "tmp").glob("exps/**/.mlops"))
    # The version it registered names the experiment, which ran in a copy of the workspace.
    tags = version_info(client.get_model_version("digits", "2").tags)
    assert tags["mlops.dvc_exp.name"] and tags["mlops.dvc_exp.ref"].endswith(
        "/" + tags["mlops.dvc_exp.name"]
    )
    assert json.loads(tags["mlops.dvc_exp.params"]) == {"train.seed": 7}
    assert tags["mlops.git_dirty"] == "false"
    listed = run(["dvc", "exp", "list", "--name-only"], pipeline).stdout.split()
    assert tags["mlops.dvc_exp.name"] in listed

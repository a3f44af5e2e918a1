"""The `tune` stage end to end: an Optuna study inside `dvc repro` (one MLflow child run
per trial, the study in .mlops/optuna.db), its best values applied by `train` and carried
to the registered version's lineage; `tune.n_trials: 0` changes nothing; bad `tune:`
input is one line (exit 2) and an empty space stops `dvc repro` at the tune stage."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from registry.registration import version_info
from tests.e2e.project import REPO, SLICE, copy_repo, run

pytestmark = pytest.mark.e2e

N_TRIALS = 4
TUNE_EPOCHS = 3
TUNED = {**SLICE, "tune": {"n_trials": N_TRIALS, "epochs": TUNE_EPOCHS}}
# The searched params of the default space (family mlp: every one of them is searched).
SPACE = ["batch_size", "learning_rate", "model.mlp.activation", "model.mlp.dropout", "weight_decay"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repo on the digits slice with 4 trials of 3 epochs, after `dvc repro`."""
    project = copy_repo(tmp_path_factory.mktemp("tuned"), TUNED)
    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Running stage 'tune'" in done.stdout
    return project


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _study(project: Path, name: str) -> Any:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(
        study_name=name, storage=f"sqlite:///{project / '.mlops' / 'optuna.db'}"
    )


def _runs(client: Any, experiment: str = "digits") -> list[Any]:
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def _lineage(project: Path) -> dict[str, Any]:
    shown = run(["mlops", "registry", "lineage", "digits", "1", "--json"], project)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_best_params_and_tune_metrics(tuned: Path) -> None:
    best = _json(tuned / "reports" / "best_params.json")
    assert best["tuned"] is True
    assert best["study"].startswith("digits-")
    assert isinstance(best["trial"], int) and 0 <= best["trial"] < N_TRIALS
    assert sorted(best["values"]) == SPACE
    values = best["values"]
    assert 1e-4 <= values["learning_rate"] <= 1e-2
    assert 1e-6 <= values["weight_decay"] <= 1e-2
    assert values["batch_size"] in (32, 64, 128)
    assert 0.0 <= values["model.mlp.dropout"] <= 0.5
    assert values["model.mlp.activation"] in ("relu", "gelu", "silu")

    metrics = _json(tuned / "reports" / "tune.json")
    assert metrics["complete"] + metrics["pruned"] == N_TRIALS
    assert metrics["failed"] == 0
    assert metrics["complete"] >= 1
    assert metrics["best_value"] == pytest.approx(best["value"])
    assert 0.0 < metrics["best_value"] <= 1.0

    study = _study(tuned, best["study"])
    assert len(study.trials) == metrics["complete"] + metrics["pruned"] + metrics["failed"]
    assert study.best_trial.number == best["trial"]
    assert study.best_trial.params == values
    assert study.best_value == pytest.approx(metrics["best_value"])

    shown = run(["dvc", "metrics", "show", "--json"], tuned)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)[""]["data"]
    assert data["reports/tune.json"]["data"] == metrics
    assert "reports/metrics.json" in data


def test_trials_are_child_runs_of_the_tune_run(
    tuned: Path, mlflow_client: Callable[[Path], Any], tmp_path: Path
) -> None:
    best = _json(tuned / "reports" / "best_params.json")
    client = mlflow_client(tuned)
    runs = _runs(client)
    tune_runs = [r for r in runs if r.data.tags.get("mlops.stage") == "tune"]
    assert len(tune_runs) == 1
    tune = tune_runs[0]
    assert tune.info.status == "FINISHED"
    assert tune.data.tags["mlops.optuna.study"] == best["study"]
    assert tune.data.tags["mlops.best_trial"] == str(best["trial"])
    assert tune.data.metrics["best_value"] == pytest.approx(best["value"])
    assert tune.data.params["best.learning_rate"] == str(best["values"]["learning_rate"])

    children = {
        r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == tune.info.run_id
    }
    assert len(children) == N_TRIALS
    assert all(r.info.status == "FINISHED" for r in children.values())

    trials = _study(tuned, best["study"]).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == len(trials) == N_TRIALS
    assert sorted(t.user_attrs["mlflow_run_id"] for t in trials) == sorted(children)
    for trial in trials:
        child = children[trial.user_attrs["mlflow_run_id"]]
        tags = child.data.tags
        assert tags["mlops.optuna.trial"] == str(trial.number)
        assert tags["mlops.optuna.study"] == best["study"]
        assert tags["mlops.trial_state"] == trial.state.name
        assert child.data.params == {k: str(v) for k, v in trial.params.items()}
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        epochs = (
            TUNE_EPOCHS
            if trial.state == TrialState.COMPLETE
            else int(tags["mlops.pruned_at_epoch"])
        )
        assert sorted(m.step for m in history) == list(range(1, epochs + 1)), trial.number
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
        if trial.state == TrialState.COMPLETE:
            assert max(m.value for m in history) == pytest.approx(trial.value)

    plots = [a.path for a in client.list_artifacts(tune.info.run_id, "optuna")]
    assert "optuna/optimization_history.png" in plots
    assert all(p.endswith(".png") for p in plots)
    local = client.download_artifacts(
        tune.info.run_id, "optuna/optimization_history.png", str(tmp_path)
    )
    assert Path(local).read_bytes()[:4] == b"\x89PNG"


def test_train_applies_best_values_and_lineage_records_the_trial(
    tuned: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    best = _json(tuned / "reports" / "best_params.json")
    client = mlflow_client(tuned)
    trains = [r for r in _runs(client) if r.data.tags.get("mlops.stage") == "train"]
    assert len(trains) == 1
    train = trains[0]
    for path, value in best["values"].items():
        assert train.data.params[f"train.{path}"] == str(value), path
    assert train.data.params["train.epochs"] == "40"  # tune.epochs is for trials only
    assert len(client.get_metric_history(train.info.run_id, "val_accuracy")) == 40
    assert train.data.tags["mlops.optuna.study"] == best["study"]
    assert train.data.tags["mlops.optuna.trial"] == str(best["trial"])

    mv = client.get_model_version("digits", "1")
    lineage = version_info(mv.tags)
    assert lineage["mlops.optuna.study"] == best["study"]
    assert lineage["mlops.optuna.trial"] == str(best["trial"])
    lineage = _lineage(tuned)
    assert lineage["optuna_study"] == best["study"]
    assert str(lineage["optuna_trial"]) == str(best["trial"])
    assert lineage["train_run_id"] == train.info.run_id


def test_second_repro_is_a_no_op(tuned: Path, mlflow_client: Callable[[Path], Any]) -> None:
    best = _json(tuned / "reports" / "best_params.json")
    lock = (tuned / "dvc.lock").read_text()
    trials = len(_study(tuned, best["study"]).trials)
    runs = len(_runs(mlflow_client(tuned)))

    again = run(["dvc", "repro"], tuned)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Running stage" not in again.stdout
    assert "Stage 'tune' didn't change, skipping" in again.stdout
    assert (tuned / "dvc.lock").read_text() == lock
    assert len(_study(tuned, best["study"]).trials) == trials == N_TRIALS
    assert len(_runs(mlflow_client(tuned))) == runs


def test_empty_space_stops_repro_at_the_tune_stage(
    tuned: Path, tmp_path: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    project = tmp_path / "project"
    shutil.copytree(tuned, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"] |= {"n_trials": 2, "space": {}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    runs_before = {r.info.run_id for r in _runs(mlflow_client(project))}

    done = run(["dvc", "repro"], project)
    assert done.returncode != 0
    assert "Running stage 'tune'" in done.stdout
    assert "Running stage 'train'" not in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("tune:")]
    assert said == [
        "tune: error: params.yaml: tune: space: empty, but n_trials > 0 asks for tuning"
    ]

    client = mlflow_client(project)
    runs = _runs(client)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    new = [r for r in runs if r.info.run_id not in runs_before]
    assert all(r.info.status == "FAILED" for r in new)


def test_no_trials_means_train_uses_params_yaml(
    pipeline: Path, mlflow_client: Callable[[Path], Any]
) -> None:
    assert _json(pipeline / "reports" / "best_params.json") == {"tuned": False, "values": {}}
    # The keys of a tuned run, so `dvc metrics diff` pairs them up.
    assert _json(pipeline / "reports" / "tune.json") == {
        "best_value": None, "complete": 0, "pruned": 0, "failed": 0
    }  # fmt: skip
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    assert params["tune"]["n_trials"] == 0

    client = mlflow_client(pipeline)
    runs = _runs(client)
    assert not [r for r in runs if r.data.tags.get("mlops.stage") == "tune"]
    assert not [r for r in runs if "mlops.optuna.study" in r.data.tags]
    lineage = _lineage(pipeline)
    assert lineage["optuna_study"] == "not tuned"
    assert lineage["optuna_trial"] == "not tuned"
    train = client.get_run(lineage["train_run_id"])
    assert train.data.tags["mlops.stage"] == "train"
    assert "mlops.optuna.trial" not in train.data.tags
    for path in params["tune"]["space"]:
        value: Any = params["train"]
        for part in path.split("."):
            value = value[part]
        assert train.data.params[f"train.{path}"] == str(value), path
    assert train.data.params["train.epochs"] == str(params["train"]["epochs"])


BAD_TUNE = {
    "low > high": (
        {"space": {"learning_rate": {"type": "float", "low": 0.1, "high": 0.01}}},
        "tune.space.learning_rate",
    ),
    "low == high": (
        {"space": {"model.mlp.dropout": {"type": "float", "low": 0.2, "high": 0.2}}},
        "tune.space.model.mlp.dropout",
    ),
    "log with low <= 0": (
        {"space": {"weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
        "tune.space.weight_decay",
    ),
    "not a train param": (
        {"space": {"learning_rat": {"type": "float", "low": 0.1, "high": 0.2}}},
        "tune.space.learning_rat",
    ),
    "categorical without choices": (
        {"space": {"batch_size": {"type": "categorical"}}},
        "tune.space.batch_size",
    ),
    "unknown sampler": ({"sampler": "bogus"}, "tune.sampler"),
    "negative n_trials": ({"n_trials": -1}, "tune.n_trials"),
}


@pytest.mark.parametrize("case", list(BAD_TUNE))
def test_bad_tune_input_is_one_line(case: str, tmp_path: Path) -> None:
    change, key = BAD_TUNE[case]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tune"] |= change
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    done = run(["mlops", "params", "check", "-f", "params.yaml"], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    stderr = done.stderr.strip()
    assert stderr and "\n" not in stderr, stderr
    assert "Traceback" not in stderr
    assert key in stderr, stderr
    assert "valid" not in done.stdout


def test_the_default_and_a_tuning_tune_section_are_valid(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tuning = copy.deepcopy(params)
    tuning["tune"] |= TUNED["tune"]
    for name, data in (("default.yaml", params), ("tuning.yaml", tuning)):
        (tmp_path / name).write_text(yaml.safe_dump(data, sort_keys=False))
        ok = run(["mlops", "params", "check", "-f", name], tmp_path)
        assert ok.returncode == 0, ok.stderr
        assert f"{name}: valid" in ok.stdout

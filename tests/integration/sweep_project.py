"""A sweep project for tests: the digits splits on disk (as `dvc repro split` writes
them) and params.yaml with a `tune:` section made for speed (2 epochs of a 16-unit MLP
per trial), plus helpers to start sweep workers and read the study and MLflow runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlops.data import infer_schema, load_source, write_parquet
from mlops.params import Params, SplitParams, load_params
from mlops.settings import Settings
from mlops.splitting import stratified_split
from mlops.tuning.objective import study_name
from mlops.tuning.storage import open_study as open_

PIPELINE = "digits"

PARAMS_TEMPLATE = """
pipeline:
  name: digits
tune:
  metric: val_accuracy
  sampler: tpe
  pruner: none
  seed: 0
  epochs: {epochs}
  space:
    learning_rate: {{type: float, low: 1.0e-4, high: 1.0e-1, log: true}}
    model.mlp.dropout: {{type: float, low: 0.0, high: 0.5}}
train:
  seed: 42
  epochs: 2
  batch_size: 256
  threads: 1
  device: cpu
  early_stopping: {{patience: 0}}
  model:
    family: mlp
    mlp: {{hidden_sizes: [16], dropout: 0.1}}
"""


def params_yaml(epochs: int = 2) -> str:
    """params.yaml of the project, with `epochs` per trial."""
    return PARAMS_TEMPLATE.format(epochs=epochs)


PARAMS_YAML = params_yaml()


def write_project(root: Path, params_yaml: str = PARAMS_YAML) -> None:
    """Make `root` a project: `.dvc/`, params.yaml, the digits schema and the three
    splits."""

    (root / ".dvc").mkdir(parents=True, exist_ok=True)
    (root / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    (root / "params.yaml").write_text(params_yaml)
    frame = load_source("builtin:digits", "target", root)
    schema = infer_schema(frame, "builtin:digits", "target")
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (root / "data" / "split").mkdir(parents=True, exist_ok=True)
    schema.save(root / "data" / "raw" / "schema.json")
    schema.save(root / "data" / "split" / "schema.json")  # nothing to fit for digits
    train, val, test = stratified_split(frame, SplitParams())
    for name, part in (("train", train), ("val", val), ("test", test)):
        write_parquet(part, root / "data" / "split" / f"{name}.parquet")


def params(root: Path) -> Params:
    """The project's params.yaml."""
    return load_params(root / "params.yaml")


def settings(root: Path, env: dict[str, str] | None = None) -> Settings:
    """The project's settings under `env`'s MLOPS_* values (none: embedded SQLite)."""
    return Settings.from_env(env=env or {}, cwd=root)


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without MLOPS_*/DVC_* values, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))}
    return {**clean, "PYTHONUNBUFFERED": "1", **(env or {})}


def open_study(root: Path, env: dict[str, str] | None = None) -> Any:
    """Create or load the project's study (named as `mlops sweep` names it)."""

    p = params(root)
    return open_(settings(root, env).optuna_storage, study_name(p), p.tune)


def trials(study: Any, states: tuple[str, ...] | None = None) -> list[Any]:
    """Fresh trials of the study (optionally of the given state names), by number."""
    from optuna.trial import TrialState

    wanted = None if states is None else tuple(TrialState[s] for s in states)
    found = study.get_trials(deepcopy=False, states=wanted)
    return sorted(found, key=lambda t: t.number)


def count(study: Any, *states: str) -> int:
    """How many trials are in any of `states` (e.g. "COMPLETE", "PRUNED")."""
    return len(trials(study, states))


def finished(study: Any) -> int:
    """Trials that count toward a sweep's target: complete or pruned."""
    return count(study, "COMPLETE", "PRUNED")


def start_worker(
    root: Path,
    study: str,
    n_trials: int,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    parent: str | None = None,
    seed: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start `python -m mlops sweep worker` in `root` until the study has `n_trials`
    finished trials (with sampler seed `seed`, default tune.seed); its stdout and stderr
    go to `log`. Without `parent` the worker's trials are children of a run of its own."""
    cmd = [sys.executable, "-m", "mlops", "sweep", "worker", study, "--total", str(n_trials)]
    cmd += ["--threads", "1", "--seed", str(params(root).tune.seed if seed is None else seed)]
    if parent:
        cmd += ["--parent", parent]
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            cmd, cwd=root, env=clean_env(env), stdout=out, stderr=subprocess.STDOUT
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def mlflow_client(root: Path, env: dict[str, str] | None = None) -> Any:
    """An MLflow client on the project's tracking store."""
    from mlflow.tracking import MlflowClient

    s = settings(root, env)
    return MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)


def runs(root: Path, env: dict[str, str] | None = None, experiment: str = PIPELINE) -> list[Any]:
    """Every run of the pipeline's MLflow experiment (none if it does not exist)."""
    client = mlflow_client(root, env)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out

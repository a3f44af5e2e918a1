"""Tuning speed: pruning efficiency, parallel scaling, storage overhead per trial.

Goals (issue: tuning), all measured in one run on the same machine:
- pruning: MLP on digits, 30 trials x 20 epochs, sampler seeds 0-4, each pruner vs
  none: total epochs trained <= 0.5x at a best validation accuracy within 0.5 points
  (mean over the seeds);
- scaling: trials per minute with 2 worker processes vs 1 (goal >= 1.7x on 2 cores),
  the same trials' work in both (batch size fixed);
- storage: seconds per trial of a trivial objective on the embedded SQLite storage vs
  Optuna's in-memory storage (reported, no goal).

Writes benchmarks/results/sweep_speed.json. Usage: python benchmarks/sweep_speed.py
[pruning|scaling|storage ...] (default: all three).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import RESULTS, env, write_result

PARAMS = """
pipeline: {name: bench}
tune:
  n_trials: 30
  epochs: 20
  metric: val_accuracy
  sampler: tpe
  pruner: PRUNER
  seed: 0
  space:
    learning_rate: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
    weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
    model.mlp.dropout: {type: float, low: 0.0, high: 0.5}
    batch_size: {type: categorical, choices: [32, 64, 128]}
train:
  threads: 1
  early_stopping: {patience: 0}
  model: {mlp: {hidden_sizes: [128]}}
"""


def _project(root: Path, pruner: str, seed: int = 0) -> None:
    from mlops.config import SplitParams
    from mlops.data import infer_schema, load_source, write_parquet
    from mlops.splitting import stratified_split

    (root / ".dvc").mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(
        PARAMS.replace("PRUNER", pruner).replace("seed: 0", f"seed: {seed}")
    )
    frame = load_source("builtin:digits", "target", root)
    schema = infer_schema(frame, "builtin:digits", "target")
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "split").mkdir(parents=True)
    schema.save(root / "data" / "raw" / "schema.json")
    for name, part in zip(
        ("train", "val", "test"), stratified_split(frame, SplitParams()), strict=True
    ):
        write_parquet(part, root / "data" / "split" / f"{name}.parquet")


def _study(root: Path) -> Any:
    from mlops.optuna_store import open_study
    from mlops.params_file import load_params
    from mlops.settings import Settings
    from mlops.tuning import study_name

    settings = Settings.from_env(env={}, cwd=root)
    params = load_params(root / "params.yaml")
    return settings, params, open_study(settings.optuna_storage, study_name(params), params.tune)


SEEDS = (0, 1, 2, 3, 4)
PRUNERS = ("successive_halving", "median", "hyperband")


def _search(pruner: str, seed: int) -> dict[str, Any]:
    from optuna.trial import TrialState

    from mlops.tuning import Job, work

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _project(root, pruner, seed)
        settings, params, study = _study(root)
        start = time.perf_counter()
        work(Job(settings, params, study.study_name, threads=1), params.tune.n_trials)
        trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        return {
            "epochs": sum(len(t.intermediate_values) for t in trials),
            "best": study.best_value,
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "seconds": round(time.perf_counter() - start, 1),
        }


def pruning() -> dict[str, Any]:
    """30 trials x 20 epochs without pruning and with each pruner, for several sampler
    seeds (one seed's best value moves by a validation row or two: 0.37 points each)."""
    runs = {name: [_search(name, seed) for seed in SEEDS] for name in ("none", *PRUNERS)}
    base_epochs = sum(r["epochs"] for r in runs["none"])
    out: dict[str, Any] = {"seeds": list(SEEDS), "runs": runs}
    for name in PRUNERS:
        deltas = [
            (r["best"] - b["best"]) * 100 for r, b in zip(runs[name], runs["none"], strict=True)
        ]
        out[name] = {
            "epochs_ratio": round(sum(r["epochs"] for r in runs[name]) / base_epochs, 3),
            "mean_best_delta_points": round(sum(deltas) / len(deltas), 2),
        }
    return out


def _sweep_seconds(root: Path, workers: int, trials: int) -> float:
    cmd = [
        sys.executable,
        "-c",
        "from mlops.cli import main; main()",
        "sweep",
        "run",
        "bench",
        "--trials",
        str(trials),
        "--workers",
        str(workers),
        "--json",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=root, env=env(), check=True, capture_output=True)
    return time.perf_counter() - start


def _trial_phase_seconds(root: Path) -> float:
    """From the first trial's start to the last trial's end (Optuna's own timestamps):
    the time the workers spent running trials, without process start-up and the final
    plots, which do not grow with the number of trials."""
    _settings, _params, study = _study(root)
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    first = min(t.datetime_start for t in done if t.datetime_start is not None)
    return (max(t.datetime_complete for t in done) - first).total_seconds()


BATCH_LINE = "    batch_size: {type: categorical, choices: [32, 64, 128]}\n"


def _fixed_batch(root: Path) -> None:
    """Take the batch size out of the search (64): it sets a trial's cost (batch 32
    trains twice as long as 128), so with it the two sweeps, whose samplers see
    different histories, would not run the same amount of work."""
    path = root / "params.yaml"
    text = path.read_text()
    assert BATCH_LINE in text
    path.write_text(text.replace(BATCH_LINE, "").replace("train:\n", "train:\n  batch_size: 64\n"))


def scaling(trials: int = 48) -> dict[str, Any]:
    """The same sweep (no pruning, 20 epochs a trial, a fixed batch size) with 1 and
    with 2 worker processes: trials per minute end to end (`mlops sweep run`) and while
    trials run."""
    out: dict[str, Any] = {"trials": trials}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            _project(root, "none")
            _fixed_batch(root)
            seconds = _sweep_seconds(root, workers, trials)
            phase = _trial_phase_seconds(root)
            out[f"workers_{workers}"] = {
                "seconds": round(seconds, 1),
                "trials_per_minute": round(trials / seconds * 60, 1),
                "trial_phase_seconds": round(phase, 1),
                "trials_per_minute_running": round(trials / phase * 60, 1),
            }
    for key, name in (
        ("trials_per_minute", "speedup"),
        ("trials_per_minute_running", "speedup_running"),
    ):
        out[name] = round(out["workers_2"][key] / out["workers_1"][key], 2)
    return out


def storage(trials: int = 200) -> dict[str, Any]:
    """Seconds per trial of a trivial objective: embedded SQLite storage vs in memory."""
    import optuna

    from mlops.optuna_store import storage as rdb

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        y = trial.suggest_int("y", 0, 10)
        return x * x + y

    out: dict[str, Any] = {"trials": trials}
    with tempfile.TemporaryDirectory() as tmp:
        for label, store in (("in_memory", None), ("sqlite", rdb(f"sqlite:///{tmp}/optuna.db"))):
            study = optuna.create_study(storage=store, sampler=optuna.samplers.RandomSampler(0))
            start = time.perf_counter()
            study.optimize(objective, n_trials=trials)
            out[f"{label}_ms_per_trial"] = round((time.perf_counter() - start) / trials * 1000, 2)
    out["overhead_ms_per_trial"] = round(
        out["sqlite_ms_per_trial"] - out["in_memory_ms_per_trial"], 2
    )
    return out


def main() -> None:
    """Measure the chosen parts and merge them into the result file."""
    parts = sys.argv[1:] or ["pruning", "scaling", "storage"]
    previous = RESULTS / "sweep_speed.json"
    result: dict[str, Any] = {}
    if previous.is_file():
        old = json.loads(previous.read_text())
        result = {k: old[k] for k in ("pruning", "scaling", "storage") if k in old}
    os.environ.pop("MLOPS_HOME", None)
    for part in parts:
        result[part] = {"pruning": pruning, "scaling": scaling, "storage": storage}[part]()
        print(part, json.dumps(result[part]), flush=True)
    print(f"-> {write_result('sweep_speed', result)}")


if __name__ == "__main__":
    main()

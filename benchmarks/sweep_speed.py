"""Tuning speed: pruning efficiency, parallel scaling, storage overhead per trial.

Goals (issue: tuning), all measured in one run on the same machine:
- pruning: MLP on digits, 30 trials x 20 epochs, sampler seeds 0-4, each pruner vs
  none: total epochs trained <= 0.5x at a best validation accuracy within 0.5 points
  (mean over the seeds);
- scaling: what a second worker buys in search, not in raw trials (a trial that repeats
  another's params adds nothing): `mlops sweep run` with 1 and with 2 worker processes for
  the same wall-clock budget, each from a new study, for several sampler seeds; from
  Optuna's own timestamps, on one clock that starts at the sweep's first trial: distinct
  configurations per minute (goal: 2 workers >= 1.7x on 2 cores), the best value reached
  by each checkpoint T, and the time 2 workers take to reach the best value 1 worker
  reached in the whole budget (batch size fixed: it sets a trial's cost);
- storage: seconds per trial of a trivial objective on the embedded SQLite storage vs
  Optuna's in-memory storage (reported, no goal).

Writes benchmarks/results/sweep_speed.json (not with --no-write). Usage:
  python benchmarks/sweep_speed.py [pruning|scaling|storage ...] [--budget S] [--seeds N]
      [--epochs E] [--no-write]
(default: all three parts; scaling for 240 s per sweep, 3 seeds, 20 epochs a trial).
A quick check that the script works: scaling --budget 20 --seeds 1 --epochs 3 --no-write.
"""

from __future__ import annotations

import argparse
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
from mlops.data import infer_schema, load_source, write_parquet
from mlops.params import SplitParams, load_params
from mlops.settings import Settings
from mlops.splitting import stratified_split
from mlops.tuning.objective import Job, study_name, work
from mlops.tuning.storage import open_study
from mlops.tuning.storage import storage as rdb

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
    settings = Settings.from_env(env={}, cwd=root)
    params = load_params(root / "params.yaml")
    return settings, params, open_study(settings.optuna_storage, study_name(params), params.tune)


SEEDS = (0, 1, 2, 3, 4)
PRUNERS = ("successive_halving", "median", "hyperband")


def _search(pruner: str, seed: int) -> dict[str, Any]:
    from optuna.trial import TrialState

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


def _sweep(root: Path, workers: int, budget: float) -> None:
    """`mlops sweep run` with `workers` processes, one thread each, for `budget` seconds
    (no new trial starts after it; trials in flight finish)."""
    cmd = [sys.executable, "-c", "from mlops.cli import main; main()", "sweep", "run",
           "--trials", "100000", "--workers", str(workers), "--threads", "1",
           "--timeout", str(budget), "--json"]  # fmt: skip
    subprocess.run(cmd, cwd=root, env=env(), check=True, capture_output=True)


BATCH_LINE = "    batch_size: {type: categorical, choices: [32, 64, 128]}\n"


def _fixed_cost(root: Path, epochs: int) -> None:
    """Take the batch size out of the search (64): it sets a trial's cost (batch 32
    trains twice as long as 128), so sweeps that pick different mixes would not do the
    same work per trial. `epochs` per trial, no pruning."""
    path = root / "params.yaml"
    text = path.read_text()
    assert BATCH_LINE in text
    text = text.replace(BATCH_LINE, "").replace("train:\n", "train:\n  batch_size: 64\n")
    path.write_text(text.replace("  epochs: 20\n", f"  epochs: {epochs}\n", 1))


def _timeline(root: Path) -> dict[str, Any]:
    """The sweep's finished trials on one clock (seconds since its first trial started):
    when each ended, its value, and whether its params repeat an earlier trial's."""
    from optuna.trial import TrialState

    _settings, _params, study = _study(root)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    done.sort(key=lambda t: t.datetime_complete)
    start = min(t.datetime_start for t in done)
    seen: set[tuple[Any, ...]] = set()
    events = []
    for t in done:
        config = tuple(sorted(t.params.items()))
        events.append({
            "at": (t.datetime_complete - start).total_seconds(),
            "value": t.value,
            "repeat": config in seen,
        })  # fmt: skip
        seen.add(config)
    return {"events": events, "direction": study.direction.name}


def _best_by(events: list[dict[str, Any]], t: float, maximize: bool) -> float | None:
    values = [e["value"] for e in events if e["at"] <= t and e["value"] is not None]
    if not values:
        return None
    return max(values) if maximize else min(values)


def _reached(events: list[dict[str, Any]], target: float, maximize: bool) -> float | None:
    """Seconds until a trial at least as good as `target` ended (None: never)."""
    for e in events:
        v = e["value"]
        if v is not None and (v >= target if maximize else v <= target):
            return float(e["at"])
    return None


def _summary(events: list[dict[str, Any]], phase: float) -> dict[str, Any]:
    distinct = sum(not e["repeat"] for e in events)
    return {
        "trials": len(events),
        "distinct_configurations": distinct,
        "repeated_trials": len(events) - distinct,
        "trial_phase_seconds": round(phase, 1),
        "distinct_per_minute": round(distinct / phase * 60, 1) if phase else None,
        "trials_per_minute": round(len(events) / phase * 60, 1) if phase else None,
    }


def scaling(budget: float = 240.0, seeds: int = 3, epochs: int = 20) -> dict[str, Any]:
    """1 and 2 workers, the same wall-clock budget, a new study each, per sampler seed."""
    runs: dict[str, list[dict[str, Any]]] = {"workers_1": [], "workers_2": []}
    for seed in range(seeds):
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                _project(root, "none", seed)
                _fixed_cost(root, epochs)
                _sweep(root, workers, budget)
                runs[f"workers_{workers}"].append(_timeline(root))
    # One clock for both: checkpoints up to the shorter trial phase of the pair.
    out: dict[str, Any] = {"budget_s": budget, "seeds": seeds, "epochs": epochs, "runs": []}
    for one, two in zip(runs["workers_1"], runs["workers_2"], strict=True):
        maximize = one["direction"] == "MAXIMIZE"
        e1, e2 = one["events"], two["events"]
        phase = min(e1[-1]["at"], e2[-1]["at"])
        checkpoints = [round(phase * f, 1) for f in (0.25, 0.5, 0.75, 1.0)]
        best_1 = _best_by(e1, phase, maximize)
        assert best_1 is not None
        t1, t2 = _reached(e1, best_1, maximize), _reached(e2, best_1, maximize)
        out["runs"].append({
            "workers_1": _summary([e for e in e1 if e["at"] <= phase], phase),
            "workers_2": _summary([e for e in e2 if e["at"] <= phase], phase),
            "best_by": {
                str(t): {"workers_1": _best_by(e1, t, maximize),
                         "workers_2": _best_by(e2, t, maximize)}
                for t in checkpoints
            },
            "best_of_1_worker": best_1,
            "seconds_to_it": {"workers_1": t1, "workers_2": t2},
        })  # fmt: skip
    per_run = out["runs"]
    ratios = [
        r["workers_2"]["distinct_per_minute"] / r["workers_1"]["distinct_per_minute"]
        for r in per_run
        if r["workers_1"]["distinct_per_minute"]
    ]
    out["distinct_per_minute_speedup"] = round(sum(ratios) / len(ratios), 2) if ratios else None
    times = [
        r["seconds_to_it"]["workers_2"] / r["seconds_to_it"]["workers_1"]
        for r in per_run
        if r["seconds_to_it"]["workers_2"] is not None and r["seconds_to_it"]["workers_1"]
    ]
    out["time_to_1_worker_best_ratio"] = round(sum(times) / len(times), 2) if times else None
    out["reached_by_2_workers"] = f"{len(times)}/{len(per_run)}"
    out["repeated_trials_2_workers"] = sum(r["workers_2"]["repeated_trials"] for r in per_run)
    return out


def storage(trials: int = 200) -> dict[str, Any]:
    """Seconds per trial of a trivial objective: embedded SQLite storage vs in memory."""
    import optuna

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
    parser = argparse.ArgumentParser(prog="python benchmarks/sweep_speed.py")
    parser.add_argument("parts", nargs="*", help="pruning, scaling, storage (default: all)")
    parser.add_argument("--budget", type=float, default=240.0, help="scaling: s per sweep")
    parser.add_argument("--seeds", type=int, default=3, help="scaling: sampler seeds")
    parser.add_argument("--epochs", type=int, default=20, help="scaling: epochs a trial")
    parser.add_argument("--no-write", action="store_true", help="print only (a quick check)")
    args = parser.parse_args()
    parts = args.parts or ["pruning", "scaling", "storage"]
    unknown = set(parts) - {"pruning", "scaling", "storage"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    previous = RESULTS / "sweep_speed.json"
    result: dict[str, Any] = {}
    if previous.is_file():
        old = json.loads(previous.read_text())
        result = {k: old[k] for k in ("pruning", "scaling", "storage") if k in old}
    os.environ.pop("MLOPS_HOME", None)
    for part in parts:
        if part == "scaling":
            result[part] = scaling(args.budget, args.seeds, args.epochs)
        else:
            result[part] = {"pruning": pruning, "storage": storage}[part]()
        print(part, json.dumps(result[part]), flush=True)
    if not args.no_write:
        print(f"-> {write_result('sweep_speed', result)}")


if __name__ == "__main__":
    main()

"""Sweeps: K worker processes share one study; this process shows progress, and the
sweep's parent MLflow run gets the best params, the best value and Optuna's plots.

Each worker trains with `train.threads` torch threads (or `--threads`) and samples
with its own seed, derived from `tune.seed`, its index and the study's size when the
sweep began. Ctrl-C (or SIGTERM) is passed on to the workers, which fail their current
trial cleanly and stop. Whenever this process stops early (a signal, a store that stays
unreachable, an error), it stops its workers first and then ends what they left: their
RUNNING trials FAIL, their MLflow runs KILLED. No worker outlives the sweep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import console, retry, tracking
from mlops.errors import MlopsError
from mlops.owners import die_with_parent
from mlops.params import Params
from mlops.settings import Settings
from mlops.tracking import TAG_CLOSED_BY, describe_run, retried
from mlops.tuning.objective import PARENT_ATTR, TAG_STUDY, require_splits, study_name
from mlops.tuning.progress import log_line, watch
from mlops.tuning.storage import Counts, counts, open_study, total, worker_seed

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Summary:
    """What a sweep ended with."""

    study: str
    parent_run_id: str
    counts: Counts
    best: list[dict[str, Any]]


# How long workers get to stop on their own (their trial ends FAIL at its next epoch,
# and their store writes may ride out an outage) before they are killed.
STOP_GRACE_S = 30.0


def best_trials(study: optuna.Study, top: int = 5) -> list[dict[str, Any]]:
    """The best complete trials: number, value, params, MLflow run id."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    reverse = study.direction.name == "MAXIMIZE"
    done.sort(key=lambda t: t.value if t.value is not None else 0.0, reverse=reverse)
    return [
        {
            "number": t.number,
            "value": t.value,
            "params": t.params,
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
        }
        for t in done[:top]
    ]


def finalize(study: optuna.Study, parent_run_id: str) -> None:
    """Log the best params and value and Optuna's plots on the sweep's parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from optuna.visualization import matplotlib as ovm

    client = mlflow.tracking.MlflowClient()
    c = counts(study)
    metrics: dict[str, float] = {
        "trials_complete": c.complete,
        "trials_pruned": c.pruned,
        "trials_failed": c.fail,
    }
    if c.best is not None:
        metrics["best_value"] = c.best
        best = study.best_trial
        for k, v in best.params.items():
            retried(partial(client.log_param, parent_run_id, f"best.{k}", v))
        retried(partial(client.set_tag, parent_run_id, "mlops.best_trial", str(best.number)))
    for k, v in metrics.items():
        retried(partial(client.log_metric, parent_run_id, k, float(v)))
    run = retried(partial(client.get_run, parent_run_id))
    stage = run.data.tags.get("mlops.stage", "sweep")
    best_text = "no trial complete" if c.best is None else f"best {c.best:.4f}"
    describe_run(parent_run_id, f"{stage} {study.study_name} · {c.finished} trials · {best_text}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, plot in (
            ("optimization_history", ovm.plot_optimization_history),
            ("param_importances", ovm.plot_param_importances),
            ("parallel_coordinate", ovm.plot_parallel_coordinate),
        ):
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances need two complete trials and a varied param
            first: Any = ax if hasattr(ax, "figure") else ax.flat[0]  # type: ignore[attr-defined]
            fig: Any = first.figure
            path = Path(tmp, f"{name}.png")
            fig.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(fig)
            retried(partial(client.log_artifact, parent_run_id, str(path), artifact_path="optuna"))


def _worker_cmd(
    study: str, target: int, parent: str, threads: int, seed: int, deadline: float | None
) -> list[str]:
    """`mlops sweep worker`, the one worker people start too, with the sweep's choices."""
    cmd = [sys.executable, "-m", "mlops", "sweep", "worker", study, "--total", str(target)]
    cmd += ["--parent", parent, "--threads", str(threads), "--seed", str(seed), "--quiet"]
    if deadline is not None:
        cmd += ["--timeout", repr(max(1.0, deadline - time.time()))]
    return cmd


def _start_worker(cmd: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    preexec = die_with_parent()  # only calls prctl in the child: safe with threads
    return subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True, preexec_fn=preexec)  # noqa: PLW1509


def stop_workers(procs: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    """Ask the workers still running to stop (SIGINT: their trial ends FAIL at its next
    epoch); kill those that have not within `grace_s`; return once all have ended."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    until = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def end_leftovers(study: optuna.Study, parent_run_id: str) -> tuple[list[int], list[str]]:
    """Once a sweep's workers are gone: fail the trials they left RUNNING and end the
    MLflow runs they left RUNNING as KILLED. Returns (trial numbers, run ids)."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(PARENT_ATTR) == parent_run_id:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed.append(t.number)
    client = MlflowClient()
    experiment = retried(lambda: client.get_run(parent_run_id)).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"
    runs = retried(lambda: client.search_runs([experiment], filter_string=query))
    for run in runs:
        run_id = run.info.run_id
        retried(partial(client.set_tag, run_id, TAG_CLOSED_BY, "sweep-stopped"))
        retried(partial(client.set_terminated, run_id, status="KILLED"))
    return failed, [r.info.run_id for r in runs]


def _wind_down(study: optuna.Study, parent: str, procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the workers, then end what they left; a store still unreachable is one
    warning (the next sweep's heartbeat check and stale-run recovery end them)."""

    live = [p for p in procs if p.poll() is None]
    if live:
        log_line(f"sweep: stopping {len(live)} worker(s) (their trials end FAIL)")
    stop_workers(procs, retry.budget_s() + STOP_GRACE_S)
    try:
        trials, runs = end_leftovers(study, parent)
    except MlopsError as exc:
        console.warning(f"sweep: could not end the workers' trials and runs: {exc}")
        return
    if trials or runs:
        log_line(
            f"sweep: ended what the workers left: trial(s) {trials or '—'} FAIL, "
            f"{len(runs)} MLflow run(s) KILLED"
        )


def run_sweep(
    settings: Settings,
    params: Params,
    n_trials: int,
    workers: int,
    timeout: float | None = None,
    tags: dict[str, str] | None = None,
    on_start: Callable[[str, str], None] | None = None,
    threads: int | None = None,
) -> Summary:
    """Create the study once (or resume it), run `workers` processes with `threads`
    torch threads each (default `train.threads`) until it has `n_trials` more finished
    trials, and log the sweep's parent run (with `tags`). `on_start(study,
    parent_run_id)` is called once both exist."""

    require_splits(settings.root)  # before the study and the run: one line, nothing made
    name = study_name(params)
    study = open_study(settings.optuna_storage, name, params.tune)  # created once, here
    deadline = time.time() + timeout if timeout else None
    at_start = counts(study)
    before, target = at_start.finished, at_start.finished + n_trials
    threads = params.train.threads if threads is None else threads
    seeds = [worker_seed(params.tune.seed, str(i), total(at_start)) for i in range(workers)]
    # The workers are quiet: MLflow's "View run at" links stay out of the sweep's output.
    quiet = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    env = {**os.environ, "DVC_ROOT": str(settings.root), **quiet}
    with tracking.stage_run(
        settings, params.pipeline.name, "sweep", None, {TAG_STUDY: name, **(tags or {})}
    ) as parent:
        if on_start is not None:
            on_start(name, parent)
        tracking.log_params(params.tune.model_dump(mode="json", exclude={"space"}), "tune")
        tracking.log_params({"workers": workers, "threads": threads, "seeds": seeds}, "sweep")
        log_line(
            f"sweep: study {name}, {n_trials} new trial(s), {workers} worker(s) x "
            f"{threads or 'all'} thread(s); MLflow run {parent}"
        )
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for seed in seeds:
                # Own sessions: a terminal's Ctrl-C reaches the workers once, through us;
                # they stop (SIGTERM) if we die.
                cmd = _worker_cmd(name, target, parent, threads, seed, deadline)
                procs.append(_start_worker(cmd, settings.root, env))
            watch(study, before, n_trials, procs, params.tune.metric)
        except BaseException:
            for signum in (signal.SIGINT, signal.SIGTERM):  # one stop is enough
                signal.signal(signum, signal.SIG_IGN)
            _wind_down(study, parent, procs)
            raise
        failed = [p.returncode for p in procs if p.returncode not in (0, None)]
        if failed:
            _wind_down(study, parent, procs)
        finalize(study, parent)
        if failed and counts(study).finished < target:
            raise MlopsError(
                f"sweep {name}: {len(failed)} worker(s) failed "
                f"(exit {failed[0]}); see their output above"
            )
        return Summary(name, parent, counts(study), best_trials(study))

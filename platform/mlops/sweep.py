"""Sweeps: K worker processes share one study; this process shows progress, and the
sweep's parent MLflow run gets the best params, the best value and Optuna's plots.

Threads per worker are set so K workers do not oversubscribe the cores. Ctrl-C (or
SIGTERM) is passed on to the workers, which fail their current trial cleanly and stop.
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

from mlops.errors import Interrupted, MlopsError
from mlops.optuna_store import Counts, counts, open_study
from mlops.owners import die_with_parent
from mlops.params import Params
from mlops.settings import Settings

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Summary:
    """What a sweep ended with."""

    study: str
    parent_run_id: str
    counts: Counts
    best: list[dict[str, Any]]


def threads_per_worker(workers: int) -> int:
    """Cores divided among workers (at least one thread each)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


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

    from mlops.tracking import retried

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
    study: str, n_trials: int, parent: str, threads: int, deadline: float | None
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "mlops.sweep_worker",
        "--study",
        study,
        "--trials",
        str(n_trials),
        "--parent",
        parent,
        "--threads",
        str(threads),
    ]
    if deadline is not None:
        cmd += ["--deadline", repr(deadline)]
    return cmd


def _start_worker(cmd: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    preexec = die_with_parent()  # only calls prctl in the child: safe with threads
    return subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True, preexec_fn=preexec)  # noqa: PLW1509


def _progress(
    study: optuna.Study, before: int, n_trials: int, procs: list[subprocess.Popen[bytes]]
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mlops import console

    columns = (
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console.err, transient=False) as bar:
        task = bar.add_task("trials", total=n_trials, states="")
        while True:
            c = counts(study)
            best = "—" if c.best is None else f"{c.best:.4f}"
            states = (
                f"complete {c.complete} · pruned {c.pruned} · failed {c.fail} · "
                f"running {c.running} · best {best}"
            )
            bar.update(task, completed=min(c.finished - before, n_trials), states=states)
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.5)


def run_sweep(
    settings: Settings,
    params: Params,
    n_trials: int,
    workers: int,
    timeout: float | None = None,
    tags: dict[str, str] | None = None,
    on_start: Callable[[str, str], None] | None = None,
) -> Summary:
    """Create the study once (or resume it), run `workers` processes until it has
    `n_trials` more finished trials, and log the sweep's parent run (with `tags`).
    `on_start(study, parent_run_id)` is called once both exist."""
    from mlops import tracking
    from mlops.tuning import TAG_STUDY, study_name

    name = study_name(params)
    study = open_study(settings.optuna_storage, name, params.tune)  # created once, here
    deadline = time.time() + timeout if timeout else None
    before = counts(study).finished
    target = before + n_trials
    env = {**os.environ, "DVC_ROOT": str(settings.root)}
    with tracking.stage_run(
        settings, params.pipeline.name, "sweep", None, {TAG_STUDY: name, **(tags or {})}
    ) as parent:
        if on_start is not None:
            on_start(name, parent)
        tracking.log_params(params.tune.model_dump(mode="json", exclude={"space"}), "tune")
        cmd = _worker_cmd(name, target, parent, threads_per_worker(workers), deadline)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(workers):
                # Own sessions: a terminal's Ctrl-C reaches the workers once, through us;
                # they stop (SIGTERM) if we die.
                procs.append(_start_worker(cmd, settings.root, env))
            _progress(study, before, n_trials, procs)
        except (KeyboardInterrupt, Interrupted):
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # one stop is enough
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in procs:
                p.wait()
            raise
        failed = [p.returncode for p in procs if p.returncode not in (0, None)]
        finalize(study, parent)
        if failed and counts(study).finished < target:
            raise MlopsError(
                f"sweep {name}: {len(failed)} worker(s) failed "
                f"(exit {failed[0]}); see their output above"
            )
        return Summary(name, parent, counts(study), best_trials(study))

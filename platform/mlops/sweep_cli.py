"""`mlops sweep …`: hyperparameter sweeps over the search space of params.yaml.
Imports only typer and rich at import time."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlops import console

app = typer.Typer(help="Optuna sweeps: run, join, watch.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _load(pipeline: str | None = None) -> tuple[Any, Any]:
    from mlops.errors import UserError
    from mlops.params_file import load_params
    from mlops.settings import Settings

    settings = Settings.from_env()
    params = load_params(settings.root / "params.yaml")
    if pipeline is not None and pipeline != params.pipeline.name:
        raise UserError(f"pipeline {pipeline!r}: params.yaml defines {params.pipeline.name!r}")
    if not params.tune.space:
        raise UserError("params.yaml: tune.space is empty: nothing to search")
    return settings, params


def _best_table(rows: list[dict[str, Any]], title: str) -> None:
    console.table(
        title,
        ["trial", "value", "params", "MLflow run"],
        [
            (
                r["number"],
                f"{r['value']:.4f}",
                "  ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in r["params"].items()
                ),
                r["mlflow_run_id"][:12],
            )
            for r in rows
        ],
    )


@app.command("run")
def run_cmd(
    pipeline: Annotated[str, typer.Argument(help="The pipeline (params.yaml pipeline.name).")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="New finished trials.")] = 20,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Processes.")] = 1,
    timeout: Annotated[float | None, typer.Option(min=1, help="Stop after S seconds.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a sweep with K worker processes; resumes the study if it exists."""
    from dataclasses import asdict

    from mlops.sweep import run_sweep

    settings, params = _load(pipeline)
    summary = run_sweep(settings, params, trials, workers, timeout or params.tune.timeout)
    if as_json:
        console.emit_json(asdict(summary))
        return
    c = summary.counts
    console.out.print(
        f"study {summary.study}: {c.complete} complete, {c.pruned} pruned, "
        f"{c.fail} failed; MLflow run {summary.parent_run_id}"
    )
    _best_table(summary.best, "Best trials")


@app.command("worker")
def worker_cmd(
    study: Annotated[str, typer.Argument(help="The study to join.")],
    trials: Annotated[
        int, typer.Option("--trials", min=1, help="Stop when the study has this many in total.")
    ] = 20,
    parent: Annotated[str | None, typer.Option(help="The sweep's MLflow run id.")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Torch threads (default: the cores of this host).")
    ] = None,
) -> None:
    """Join a running study (e.g. from another host with the same MLOPS_* settings).

    SIGTERM or Ctrl-C stops it gracefully: the current trial ends at its next epoch (FAIL,
    retried by another worker with the same params), no new trial starts, exit 130."""
    import signal

    import mlops.tuning  # noqa: F401 - imported before the handlers, which import nothing
    from mlops.sweep import threads_per_worker
    from mlops.tuning import STOP, Job, work

    def _stop(_signum: int, _frame: object) -> None:
        STOP.set()

    settings, params = _load()
    _require_study(settings.optuna_storage, study)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        ran = work(Job(settings, params, study, parent, threads or threads_per_worker(1)), trials)
        console.out.print(f"worker: ran {ran} trial(s) of {study}")
    except KeyboardInterrupt:  # the trial's epoch callback saw STOP
        if not STOP.is_set():
            raise
    if STOP.is_set():
        console.error("worker: stopped by a signal")
        raise typer.Exit(130)


def _require_study(url: str, name: str) -> None:
    """A worker joins a study; it never creates one (a typo would start a new sweep)."""
    from mlops.errors import UserError
    from mlops.optuna_store import storage
    from mlops.settings import redact

    try:
        storage(url, heartbeat=False).get_study_id_from_name(name)
    except KeyError:
        raise UserError(
            f"study {name!r}: not found in {redact(url)}; start it with `mlops sweep run` "
            "(or the tune stage) first"
        ) from None


@app.command("status")
def status_cmd(
    study: Annotated[
        str | None, typer.Argument(help="The study (default: the one of params.yaml).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Trial counts by state and the best trials of a study."""
    from dataclasses import asdict

    import optuna

    from mlops.errors import UserError
    from mlops.optuna_store import counts, storage
    from mlops.settings import Settings
    from mlops.sweep import best_trials

    settings = Settings.from_env()
    if study is None:
        from mlops.params_file import load_params
        from mlops.tuning import study_name

        study = study_name(load_params(settings.root / "params.yaml"))
    try:
        found = optuna.load_study(study_name=study, storage=storage(settings.optuna_storage))
    except KeyError:
        raise UserError(f"study {study!r}: not found in the Optuna storage") from None
    c, best = counts(found), best_trials(found)
    if as_json:
        console.emit_json({"study": study, "counts": asdict(c), "best": best})
        return
    console.table(
        f"Study {study}",
        ["complete", "pruned", "failed", "running", "waiting", "best"],
        [
            (
                c.complete,
                c.pruned,
                c.fail,
                c.running,
                c.waiting,
                "—" if c.best is None else f"{c.best:.4f}",
            )
        ],
    )
    if best:
        _best_table(best, "Best trials")


@app.command("dashboard")
def dashboard_cmd(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 0,
) -> None:
    """optuna-dashboard on the configured storage, until Ctrl-C."""
    import subprocess
    import sys

    from mlops.settings import Settings, redact
    from mlops.ui import free_port

    settings = Settings.from_env()
    port = port or free_port(host)
    url = settings.optuna_storage
    console.out.print(f"optuna-dashboard on {redact(url)}: http://{host}:{port}  (Ctrl-C to stop)")
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "optuna_dashboard._cli",
                url,
                "--host",
                host,
                "--port",
                str(port),
            ],
            check=False,
        )
    except KeyboardInterrupt:
        console.out.print("dashboard stopped")

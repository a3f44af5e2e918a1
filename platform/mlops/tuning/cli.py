"""`mlops sweep …`: hyperparameter sweeps over the search space of params.yaml.
Imports only typer and rich at import time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from mlops import console, workspace
from mlops.limits import MAX_SECONDS, MAX_THREADS, MAX_TRIALS, MAX_WORKERS, finite

app = typer.Typer(help="Optuna sweeps: run, join, watch, apply.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
WORKER_ID = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}"


Trials = Annotated[
    int | None,
    typer.Option(
        "--trials", min=1, max=MAX_TRIALS,
        help="New finished trials to add to the study (default 20).",
    ),
]  # fmt: skip
Total = Annotated[
    int | None,
    typer.Option(
        "--total", min=1, max=MAX_TRIALS,
        help="Instead of --trials: stop once the study has this many finished trials in all "
        "(a restarted service adds none).",
    ),
]  # fmt: skip
Threads = Annotated[
    int | None,
    typer.Option(
        min=0, max=MAX_THREADS,
        help="Torch threads per worker (default: params.yaml train.threads; 0: every core).",
    ),
]  # fmt: skip

WorkerId = Annotated[
    str | None,
    typer.Option(
        "--worker",
        help="This worker's id, e.g. 3 or hostb-1: a sampler seed of its own, from the id and "
        "the study's size (the same id on a study of the same size gets it again; default: a "
        "random seed). Give each worker of a study its own; `sweep run` numbers its workers "
        "from 0.",
    ),
]
Seed = Annotated[
    int | None,
    typer.Option(min=0, max=2**32 - 1, help="The sampler seed (default: from --worker)."),
]
Parent = Annotated[
    str | None,
    typer.Option(
        help="The sweep's MLflow run: the trials become its children (as those of "
        "`sweep run`'s own workers) instead of children of a run of the worker's own."
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(min=1, max=MAX_SECONDS, callback=finite, help="Start no trial after S s."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No line per trial (errors only).")]


def _load(pipeline: str | None = None) -> tuple[Any, Any]:
    from mlops.errors import UserError
    from mlops.params import load_params, require_space
    from mlops.settings import Settings

    settings = Settings.from_env()
    params = load_params(settings.root / workspace.PARAMS)
    if pipeline is not None and pipeline != params.pipeline.name:
        raise UserError(f"pipeline {pipeline!r}: params.yaml defines {params.pipeline.name!r}")
    require_space(params.tune.space, "a sweep")
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
    pipeline: Annotated[
        str | None,
        typer.Argument(help="The pipeline (default: params.yaml pipeline.name, the only one)."),
    ] = None,
    trials: Trials = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=MAX_WORKERS, help="Processes.")
    ] = 1,
    threads: Threads = None,
    timeout: Annotated[
        float | None,
        typer.Option(min=1, max=MAX_SECONDS, callback=finite, help="Stop after S seconds."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a sweep with K worker processes; resumes the study if it exists.

    Each worker samples with its own seed (from tune.seed, its index and the study's size)
    and trains with train.threads torch threads unless --threads says otherwise."""
    import os
    from dataclasses import asdict

    from mlops.tuning.service import run_sweep

    settings, params = _load(pipeline)
    threads = params.train.threads if threads is None else threads
    cores = os.cpu_count() or 1
    if workers * (threads or cores) > cores:
        console.warning(
            f"{workers} worker(s) x {threads or cores} thread(s) on {cores} core(s): trials "
            "compete for the cores (see --threads)"
        )
    n_trials = 20 if trials is None else trials
    summary = run_sweep(
        settings, params, n_trials, workers, timeout or params.tune.timeout, threads=threads
    )
    if as_json:
        console.emit_json(asdict(summary))
        return
    c = summary.counts
    console.out.print(
        f"study {summary.study}: {c.complete} complete, {c.pruned} pruned, "
        f"{c.fail} failed; MLflow run {summary.parent_run_id}"
    )
    _best_table(summary.best, "Best trials")
    if summary.best:
        console.out.print(
            "write the best trial into params.yaml for `dvc repro`: `mlops sweep apply`"
        )


@app.command("worker")
def worker_cmd(
    study: Annotated[str, typer.Argument(help="The study to join.")],
    trials: Trials = None,
    total: Total = None,
    worker: WorkerId = None,
    seed: Seed = None,
    parent: Parent = None,
    threads: Threads = None,
    timeout: Timeout = None,
    quiet: Quiet = False,
    as_json: JsonFlag = False,
) -> None:
    """Join a running study (e.g. from another host with the same MLOPS_* settings).

    The worker's trials are child runs of an MLflow run of its own (stage `sweep worker`),
    or of --parent. It prints one line per trial; `sweep run` starts its workers with this
    command. SIGTERM or Ctrl-C stops it gracefully: the current trial ends at its next
    epoch (FAIL), no new trial starts, exit 130."""
    import signal

    from mlops.errors import UserError
    from mlops.tuning.objective import STOP, require_splits

    def _stop(_signum: int, _frame: object) -> None:
        STOP.set()

    if trials is not None and total is not None:
        raise UserError("--trials and --total: give one of them (new trials, or a total)")
    if worker is not None and seed is not None:
        raise UserError("--worker and --seed: give one of them (an id derives the seed)")
    if worker is not None and not re.fullmatch(WORKER_ID, worker):
        raise UserError(
            f"--worker {worker!r}: use letters, digits, '_', '.', '@', '-' (at most 128)"
        )
    settings, params = _load()
    _require_study(settings.optuna_storage, study)
    _require_same_params(study, params)
    if parent is not None:
        _require_parent(settings, params, parent)
    require_splits(settings.root)  # before the worker's run: one line, nothing made
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    ask = _Ask(study, trials, total, worker, seed, parent, threads, timeout, quiet)
    try:
        ran = _work(settings, params, ask)
        if as_json:
            console.emit_json({"study": study, "trials_run": ran})
        elif not quiet:
            console.out.print(f"worker: ran {ran} trial(s) of {study}")
    except KeyboardInterrupt:  # a trial's epoch callback saw STOP, or the loop ended on it
        if not STOP.is_set():
            raise
    if STOP.is_set():
        if not quiet:  # `sweep run`'s workers are quiet: the sweep says it stopped
            console.error("worker: stopped by a signal")
        raise typer.Exit(130)


@dataclass(frozen=True)
class _Ask:
    """What `sweep worker` was asked to do."""

    study: str
    trials: int | None
    total: int | None
    worker: str | None
    seed: int | None
    parent: str | None
    threads: int | None
    timeout: float | None
    quiet: bool


def _work(settings: Any, params: Any, ask: _Ask) -> int:
    """Run the worker's trials (in an MLflow run of its own unless it has a parent); the
    number of trials it ran."""
    import secrets
    import time

    from mlops import tracking
    from mlops.tuning.objective import STOP, TAG_STUDY, Job, work
    from mlops.tuning.progress import log_line, reporter
    from mlops.tuning.storage import counts, open_study, worker_seed
    from mlops.tuning.storage import total as all_trials

    deadline = None if ask.timeout is None else time.time() + ask.timeout
    c = counts(open_study(settings.optuna_storage, ask.study, params.tune, heartbeat=False))
    added = 20 if ask.trials is None else ask.trials
    target = ask.total if ask.total is not None else c.finished + added
    if ask.seed is not None:
        seed, how = ask.seed, "given"
    elif ask.worker is None:
        seed, how = secrets.randbits(32), "random; --worker ID for a reproducible one"
    else:
        seed, how = worker_seed(params.tune.seed, ask.worker, all_trials(c)), f"worker {ask.worker}"
    threads = params.train.threads if ask.threads is None else ask.threads
    say = (lambda _line: None) if ask.quiet else log_line
    on_trial = None if ask.quiet else reporter("worker: ", params.tune.metric, log_line)
    line = (
        f"worker: study {ask.study}, until it has {target} finished trial(s) (now {c.finished}); "
        f"sampler seed {seed} ({how}); {threads or 'all'} thread(s)"
    )
    if ask.parent is not None:
        say(f"{line}; trials under MLflow run {ask.parent}")
        job = Job(settings, params, ask.study, ask.parent, threads, seed)
        return work(job, target, deadline, on_trial)
    tags = {
        TAG_STUDY: ask.study,
        "mlops.worker": ask.worker or "unnamed",
        "mlops.sampler_seed": str(seed),
    }
    with tracking.stage_run(settings, params.pipeline.name, "sweep worker", None, tags) as run:
        say(f"{line}; MLflow run {run}")
        ran = work(Job(settings, params, ask.study, run, threads, seed), target, deadline, on_trial)
        tracking.log_metrics({"trials_run": ran})
        if STOP.is_set():
            raise KeyboardInterrupt  # the worker's run ends KILLED
    return ran


def _require_same_params(study: str, params: Any) -> None:
    """A worker trains with params.yaml: it joins only the study those params make, so a
    stale checkout never adds trials of other epochs or another space to a shared study."""
    from mlops.errors import UserError
    from mlops.tuning.objective import study_name

    expected = study_name(params)
    if study != expected:
        raise UserError(
            f"study {study!r}: params.yaml makes study {expected!r} (its tune section or train "
            "params differ); join with the params.yaml the study was made from"
        )


def _require_parent(settings: Any, params: Any, parent: str) -> None:
    """`--parent` names a run of the pipeline's experiment (the sweep's)."""
    from mlops import tracking
    from mlops.errors import UserError

    if not re.fullmatch(r"[0-9a-f]{32}", parent):
        raise UserError(f"--parent {parent!r}: not an MLflow run id (32 hexadecimal digits)")
    if not tracking.run_in_experiment(settings, parent, params.pipeline.name):
        raise UserError(
            f"--parent {parent}: no such run in experiment {params.pipeline.name!r} "
            "(give the run id `sweep run` printed)"
        )


def _require_study(url: str, name: str) -> None:
    """A worker joins a study; it never creates one (a typo would start a new sweep)."""
    from mlops.errors import UserError
    from mlops.settings import redact
    from mlops.tuning.storage import storage

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
    from mlops.settings import Settings
    from mlops.tuning.service import best_trials
    from mlops.tuning.storage import counts, storage

    settings = Settings.from_env()
    if study is None:
        from mlops.params import load_params
        from mlops.tuning.objective import study_name

        study = study_name(load_params(settings.root / workspace.PARAMS))
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


@app.command("apply")
def apply_cmd(
    study: Annotated[
        str | None, typer.Argument(help="The study (default: the one of params.yaml).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the change to params.yaml; write nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write the study's best trial into params.yaml, for `dvc repro`.

    Train params go to the train section, searched data params (`data.tokenizer.*`)
    to the data section.

    Comments and layout are kept; a comment above `train:` names the study and trial.
    `git diff` and `dvc params diff` show the change. The study's name hashes only the
    train params the search does not set, so params.yaml stays on the same study."""
    from dataclasses import asdict

    from mlops.settings import Settings
    from mlops.tuning.apply import apply

    done = apply(Settings.from_env(), study, dry_run)
    if as_json:
        console.emit_json(asdict(done))
        return
    head = f"study {done.study}, trial {done.trial} ({done.metric} {done.value:.4f})"
    if not done.changes:
        console.out.print(f"{head}: params.yaml already holds its values; nothing to write")
        return
    if dry_run:
        console.out.print(done.diff, markup=False, highlight=False, end="")
        console.out.print(f"{head}: dry run, nothing written")
    else:
        console.out.print(f"{head}: written to {done.params_file}")
    for c in done.changes:
        console.out.print(f"  train.{c.param}: {c.old!r} -> {c.new!r}", markup=False)
    if done.study_of_params == done.study:
        console.out.print(
            f"params.yaml's study is still {done.study} (its name hashes only the train params "
            "the search does not set): `mlops sweep run` goes on adding to it"
        )
    else:
        console.out.print(f"params.yaml's study is {done.study_of_params}")
    if done.tune_overrides:
        console.warning(
            f"tune.n_trials > 0: the tune stage tunes study {done.study_of_params} and train "
            "takes its best trial, not these values; set tune.n_trials: 0 to train exactly these"
        )
    if done.written:
        console.out.print("next: `dvc repro` trains with them; `dvc params diff` shows them")


@app.command("dashboard")
def dashboard_cmd(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 0,
) -> None:
    """optuna-dashboard on the configured storage, until Ctrl-C or SIGTERM (which stop
    the dashboard too)."""
    import signal
    import subprocess
    import sys

    from mlops.errors import Interrupted
    from mlops.exposure import free_port, open_ui_warning
    from mlops.owners import die_with_parent
    from mlops.settings import Settings, redact

    def _stop(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    settings = Settings.from_env()
    port = port or free_port(host)
    url = settings.optuna_storage
    cmd = [sys.executable, "-m", "optuna_dashboard._cli", url, "--host", host, "--port", str(port)]
    signal.signal(signal.SIGTERM, _stop)
    exposed = open_ui_warning("optuna-dashboard", host, port, "read and delete every study")
    if exposed is not None:
        console.warning(exposed)
    console.out.print(f"optuna-dashboard on {redact(url)}: http://{host}:{port}  (Ctrl-C to stop)")
    # It dies with us even when we are killed outright (SIGKILL).
    child = subprocess.Popen(cmd, preexec_fn=die_with_parent())  # noqa: PLW1509
    try:
        code = child.wait()
    except (KeyboardInterrupt, Interrupted):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        console.out.print("dashboard stopped")
        return
    if code != 0:
        from mlops.errors import MlopsError

        raise MlopsError(f"optuna-dashboard exited with code {code}")

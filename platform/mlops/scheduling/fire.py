"""One scheduled run: resume the schedule's study with N more trials on the data in
the workspace now, record the outcome in the run's history entry, and (with
`schedule.register_best: true`) register the best trial's model as a challenger. A
monitor schedule's run checks its model instead (`mlops.scheduling.watch`).

`python -m mlops.scheduling.fire RUN_ID` is what the scheduler starts; `mlops schedule
run-now` calls `execute` in its own process. SIGTERM stops the sweep cleanly (the
workers fail their current trial) and the run ends `interrupted`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

from mlops import console, workspace
from mlops.errors import Interrupted, MlopsError, UserError
from mlops.lineage import data_hashes
from mlops.params import load_params, require_space
from mlops.scheduling.challenger import register_best_trial
from mlops.scheduling.store import Run, Schedule, ScheduleStore
from mlops.scheduling.watch import watch
from mlops.settings import Settings
from mlops.tuning.objective import study_name
from mlops.tuning.service import run_sweep
from mlops.tuning.storage import counts, open_study
from registry.hooks import delivery as hooks


def data_version(settings: Settings) -> dict[str, str]:
    """DVC md5 of the workspace's splits: the data this run tunes on."""

    splits = {n: settings.root / path for n, path in workspace.SPLITS.items()}
    found = {n: path for n, path in splits.items() if path.is_file()}
    return data_hashes(found)


def ensure_splits(settings: Settings) -> None:
    """A fresh clone has no splits yet: make them with `dvc repro split` (the data stages
    only). Splits already in the workspace are used as they are, never refreshed."""

    if all((settings.root / path).is_file() for path in workspace.SPLITS.values()):
        return
    print("no data splits in the workspace yet: running `dvc repro split`", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "DVC_ROOT"}
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "split"], cwd=settings.root, env=env, check=False
    )
    if done.returncode != 0:
        raise MlopsError(f"`dvc repro split` failed (exit {done.returncode}); see the run's log")


def _study_state(settings: Settings, params: Any) -> tuple[str, int, float | None]:
    name = study_name(params)
    c = counts(open_study(settings.optuna_storage, name, params.tune, heartbeat=False))
    return name, c.finished, c.best


def execute(settings: Settings, store: ScheduleStore, run_id: int) -> Run:
    """Carry out run `run_id` (recorded as running) and record how it ended."""
    run = store.run(run_id)
    if run is None:
        raise UserError(f"scheduled run {run_id}: not found")
    try:
        outcome = _carry_out(settings, store, run)
    except (KeyboardInterrupt, Interrupted):
        store.finish_run(run_id, "interrupted", time.time(), error="stopped by a signal")
        raise
    except MlopsError as exc:
        store.finish_run(run_id, "failed", time.time(), error=str(exc))
    except Exception as exc:  # a run must end recorded, whatever happened
        traceback.print_exc()
        store.finish_run(run_id, "failed", time.time(), error=f"{type(exc).__name__}: {exc}")
    else:
        status = outcome.pop("status", "succeeded")
        store.finish_run(run_id, status, time.time(), **outcome)
    ended = store.run(run_id)
    assert ended is not None
    if ended.registered_version:  # its `register` event, to any webhook, now
        hooks.flush(settings.database_url)
    return ended


def _carry_out(settings: Settings, store: ScheduleStore, run: Run) -> dict[str, Any]:
    schedule = store.get(run.schedule)
    if schedule is None:
        raise UserError(f"schedule {run.schedule!r}: removed before its run started")
    if schedule.monitor:
        return watch(settings, store, run, schedule)
    return _sweep(settings, store, run, schedule)


def _sweep(
    settings: Settings, store: ScheduleStore, run: Run, schedule: Schedule
) -> dict[str, Any]:
    params = load_params(settings.root / workspace.PARAMS)
    if params.pipeline.name != schedule.pipeline:
        raise UserError(
            f"schedule {schedule.name}: pipeline {schedule.pipeline!r}, but params.yaml "
            f"defines {params.pipeline.name!r}"
        )
    require_space(params.tune.space, f"schedule {schedule.name}")
    ensure_splits(settings)
    hashes = data_version(settings)
    study, before, best_before = _study_state(settings, params)
    store.update_run(run.id, study=study, data_version=hashes, best_before=best_before)
    tags = {
        "mlops.schedule": schedule.name,
        "mlops.schedule.run": str(run.id),
        "mlops.schedule.kind": run.kind,
        **{f"mlops.data.{k}.md5": v for k, v in hashes.items()},
    }
    summary = run_sweep(
        settings, params, schedule.trials, schedule.workers,
        schedule.timeout or params.tune.timeout, tags,
        on_start=lambda _study, parent: store.update_run(run.id, mlflow_run_id=parent),
    )  # fmt: skip
    outcome: dict[str, Any] = {
        "mlflow_run_id": summary.parent_run_id,
        "trials_added": summary.counts.finished - before,
        "best_after": summary.counts.best,
    }
    if params.schedule.register_best and summary.counts.best is not None:
        reason = f"schedule {schedule.name} run {run.id}"
        outcome["registered_version"] = register_best_trial(
            settings, params, study, summary.parent_run_id, reason, hashes
        )
    return outcome


def main(argv: list[str] | None = None) -> int:
    """Entry point of the run process the scheduler starts."""

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        console.error("usage: python -m mlops.scheduling.fire RUN_ID")
        return 2

    def _stop(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, _stop)
    settings = Settings.from_env()
    try:
        run = execute(settings, ScheduleStore(settings.database_url), int(args[0]))
    except (KeyboardInterrupt, Interrupted):
        console.error("interrupted")
        return 130
    except MlopsError as exc:
        console.error(str(exc))
        return exc.exit_code
    print(f"run {run.id} of {run.schedule}: {run.status}" + (f": {run.error}" if run.error else ""))
    return 0 if run.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())

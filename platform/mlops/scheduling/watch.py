"""A monitor schedule's run (`mlops schedule add NAME --monitor MODEL@STAGE`): check the
version the stage holds for drift and for its live performance; when either crosses its
threshold (`monitor:` in params.yaml), retrain on the training data plus production's
labelled rows and register the result as a challenger. It never promotes: people compare
it (`mlops registry compare … --live`) and promote it through the gates.

After a run that registered a challenger, a trigger within `monitor.cooldown` is recorded
as `skipped`; a trigger while a run of the schedule is going is `skipped` by the
schedule's lock, as for sweeps.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops import live, workspace
from mlops.errors import UserError
from mlops.monitoring.service import check_drift, parse_model
from mlops.params import MonitorParams, Params, load_params
from mlops.scheduling.retrain import retrain
from mlops.scheduling.snapshot import take_snapshot
from mlops.scheduling.store import Run, Schedule, ScheduleStore
from mlops.settings import Settings
from registry.context import Context
from registry.loading import resolve


@dataclass(frozen=True)
class Signals:
    """What the checks found: each check's figures, or why it could not run."""

    model: str
    version: int
    drift: dict[str, Any] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)

    @property
    def crossed(self) -> list[str]:
        """The thresholds crossed, one phrase each (empty: nothing to do)."""
        found = []
        if self.drift.get("drift"):
            found.append("drift: " + "; ".join(self.drift.get("reasons", [])))
        if self.live.get("crossed"):
            found.append(self.live["crossed"])
        return found


def live_check(monitor: MonitorParams, task: str, n: int, value: float) -> dict[str, Any]:
    """The live-performance figures and, when a threshold is set and crossed with at
    least `min_labelled` labels, the phrase that says so."""
    metric = "rmse" if task == "regression" else "accuracy"
    found: dict[str, Any] = {"metric": metric, "labelled": n,
                             "value": None if math.isnan(value) else value}  # fmt: skip
    bound = monitor.max_live_rmse if metric == "rmse" else monitor.min_live_accuracy
    key = "max_live_rmse" if metric == "rmse" else "min_live_accuracy"
    if bound is None:
        found["skipped"] = f"monitor.{key} is not set"
    elif n < monitor.min_labelled:
        found["skipped"] = f"{n} labelled answers, fewer than monitor.min_labelled"
    elif (value > bound) if metric == "rmse" else (value < bound):
        found["crossed"] = (
            f"live {metric} {value:.4f} over the last {n} labelled answers "
            f"{'above' if metric == 'rmse' else 'below'} {bound:g} (monitor.{key})"
        )
    return found


def cooling(runs: list[Run], now: float, cooldown: float) -> Run | None:
    """The run within `cooldown` seconds of `now` that registered a challenger, if any."""
    for run in reversed(runs):
        if run.registered_version and run.ended_at is not None and now - run.ended_at < cooldown:
            return run
    return None


def signals(settings: Settings, params: Params, target: str) -> Signals:
    """Run both checks on the version `target` names."""
    name, ref = parse_model(target)
    ctx = Context(settings, params.registry, params.evaluate.primary_metric)
    version = resolve(ctx, name, ref)
    try:
        check = check_drift(settings, target)
        drift: dict[str, Any] = {
            "drift": check.report.drift, "reasons": check.report.reasons,
            "drifted_features": check.report.drifted_features,
            "rows": check.current["rows"], "plot": check.plot,
        }  # fmt: skip
    except UserError as exc:  # no sink yet, too few rows: the live check may still fire
        drift = {"skipped": str(exc)}
    sink = live.default_sink(settings, name)
    try:
        task, n, value = live.live(sink, name, version.version, params.monitor.live_window)
        found = live_check(params.monitor, task, n, value)
    except (OSError, sqlite3.Error) as exc:
        found = {"skipped": f"{sink}: {exc}"}
    return Signals(name, version.version, drift, found)


def watch(settings: Settings, store: ScheduleStore, run: Run, schedule: Schedule) -> dict[str, Any]:
    """Carry out a monitor run; the run's outcome fields (`status` when not succeeded)."""
    params = load_params(settings.root / workspace.PARAMS)
    found = signals(settings, params, schedule.monitor)
    trigger: dict[str, Any] = {"watched": f"{found.model} v{found.version}", **asdict(found)}
    crossed = found.crossed
    trigger["crossed"] = crossed
    store.update_run(run.id, trigger=json.dumps(trigger, sort_keys=True))
    if not crossed:
        return {"trigger": json.dumps(trigger, sort_keys=True)}
    now = time.time()
    recent = cooling(store.runs(schedule.name), now, params.monitor.cooldown)
    if recent is not None:
        cooldown = params.monitor.cooldown
        wait = cooldown - (now - (recent.ended_at or now))
        why = (f"cooldown: run {recent.id} registered v{recent.registered_version}; "
               f"no retrain for {wait:.0f} s more (monitor.cooldown {cooldown:g} s)")  # fmt: skip
        return {"status": "skipped", "error": why, "trigger": json.dumps(trigger, sort_keys=True)}
    snapshot = take_snapshot(settings, found.model)
    trigger["snapshot"] = asdict(snapshot)
    store.update_run(run.id, trigger=json.dumps(trigger, sort_keys=True),
                     data_version={"feedback": snapshot.md5})  # fmt: skip
    reason = f"schedule {schedule.name} run {run.id}"
    made = retrain(settings, params, snapshot, reason, "; ".join(crossed),
                   f"{found.model}@{found.version}")  # fmt: skip
    return {
        "trigger": json.dumps(trigger, sort_keys=True),
        "registered_version": made.version,
        "mlflow_run_id": made.run_id,
        "data_version": made.hashes,
    }

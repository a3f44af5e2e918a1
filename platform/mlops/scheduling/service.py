"""What `mlops schedule …` does: add (checked, with a preview), pause, resume, remove,
run now. The CLI parses and prints; this module decides."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

from mlops import workspace
from mlops.errors import MlopsError, UserError
from mlops.limits import MAX_SECONDS, MAX_TRIALS, MAX_WORKERS
from mlops.monitoring.service import parse_model
from mlops.owners import current_actor
from mlops.params import load_params, require_space
from mlops.scheduling.cron import Timetable
from mlops.scheduling.fire import execute
from mlops.scheduling.scheduler import LOCK_TTL_S
from mlops.scheduling.store import Run, Schedule, ScheduleStore
from mlops.settings import Settings
from registry.db.store import RegistryStore

NAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"
DEFAULT_GRACE_S = 3600.0


def check_name(name: str) -> str:
    """A schedule name: lower case letters, digits, `_ . -`, at most 64."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise UserError(
            f"schedule name {name!r}: use lower-case letters, digits, '_', '.', '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


_EVERY = re.compile(r"(\d{1,4})\s*(m|min|h|d)")


def every_cron(text: str) -> str:
    """`--every 15m|1h|6h|1d` as the cron expression that fires at that interval (one line
    for an interval cron cannot keep: minutes dividing 60, hours dividing 24, or 1d)."""
    found = _EVERY.fullmatch(text.strip().lower())
    n, unit = (int(found.group(1)), found.group(2)) if found else (0, "")
    if unit in ("m", "min") and n and 60 % n == 0:
        return "0 * * * *" if n == 60 else f"*/{n} * * * *"
    if unit == "h" and n and 24 % n == 0:
        return {1: "0 * * * *", 24: "0 0 * * *"}.get(n, f"0 */{n} * * *")
    if unit == "d" and n == 1:
        return "0 0 * * *"
    raise UserError(
        f"--every {text!r}: use minutes that divide an hour (5m, 15m, 30m), hours that "
        "divide a day (1h, 6h, 12h) or 1d; anything else with --cron"
    )


def check_monitor(settings: Settings, target: str) -> str:
    """`MODEL@STAGE` of a registered model (one line if not)."""
    name, ref = parse_model(target)
    store = RegistryStore(settings.database_url)
    if not store.has_model(name):
        known = ", ".join(store.models()) or "none yet"
        raise UserError(f"--monitor {target}: no model {name!r} is registered (models: {known})")
    if ref.stage is None:
        raise UserError(f"--monitor {target}: name a stage (MODEL@STAGE), not a version")
    return target


@dataclass(frozen=True)
class Added:
    """A new schedule and its next fire times."""

    schedule: Schedule
    upcoming: list[str]


def _pipeline_of(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The pipeline's name and the search space in params.yaml."""

    params = load_params(settings.root / workspace.PARAMS)
    return params.pipeline.name, dict(params.tune.space)


def check_numbers(draft: Schedule) -> None:
    """Trials, workers, timeout and grace within their bounds (one line otherwise)."""
    checks = (
        ("--trials", draft.trials, 1, MAX_TRIALS),
        ("--workers", draft.workers, 1, MAX_WORKERS),
        ("--timeout", draft.timeout, 1, MAX_SECONDS),
        ("--grace", draft.grace, 0, MAX_SECONDS),
    )
    for option, value, low, high in checks:
        if value is None:
            continue
        if not (math.isfinite(value) and low <= value <= high):
            raise UserError(f"{option} {value}: expected a number from {low:g} to {high:g}")


def add(
    store: ScheduleStore,
    settings: Settings,
    draft: Schedule,
    now: float | None = None,
) -> Added:
    """Check and store a schedule; its first fire time is the first one after now. An
    empty `draft.pipeline` is the pipeline of params.yaml."""

    now = time.time() if now is None else now
    check_name(draft.name)
    check_numbers(draft)
    timetable = Timetable.of(draft.cron, draft.timezone)
    upcoming = timetable.upcoming(now, 5)
    if not upcoming:
        raise UserError(f"cron {draft.cron!r}: never fires (no such date)")
    pipeline, space = _pipeline_of(settings)
    if draft.pipeline and draft.pipeline != pipeline:
        raise UserError(
            f"pipeline {draft.pipeline!r}: params.yaml defines {pipeline!r} "
            "(schedules sweep this project's pipeline)"
        )
    if draft.monitor:
        check_monitor(settings, draft.monitor)
    else:
        require_space(space, "a scheduled sweep")
    schedule = Schedule(
        draft.name, pipeline, timetable.cron.expression, draft.timezone, draft.trials,
        draft.workers, draft.timeout, draft.grace, False, now, current_actor(), upcoming[0],
        draft.monitor,
    )  # fmt: skip
    store.add(schedule)
    return Added(schedule, [timetable.format(t) for t in upcoming])


def existing(store: ScheduleStore, name: str) -> Schedule:
    """The schedule `name`; a `UserError` naming it if there is none."""
    found = store.get(check_name(name))
    if found is None:
        known = ", ".join(s.name for s in store.schedules()) or "none yet"
        raise UserError(f"schedule {name!r}: not found (schedules: {known})")
    return found


def pause(store: ScheduleStore, name: str) -> Schedule:
    """Stop firing (a run in progress goes on)."""
    schedule = existing(store, name)
    store.set_paused(name, True, schedule.next_fire_at)
    return existing(store, name)


def resume(store: ScheduleStore, name: str, now: float | None = None) -> Schedule:
    """Fire again from the next fire time after now (paused time is not caught up)."""
    schedule = existing(store, name)
    now = time.time() if now is None else now
    following = Timetable.of(schedule.cron, schedule.timezone).next_after(now)
    store.set_paused(name, False, following)
    return existing(store, name)


def remove(store: ScheduleStore, name: str) -> None:
    """Forget a schedule; its history stays. Refused while one of its runs is going."""
    existing(store, name)
    holder = store.holder(name)
    if holder is not None and holder.owner.alive() is not False:
        raise MlopsError(
            f"schedule {name}: run {holder.run_id} is going ({holder.owner}); "
            "pause the schedule, wait for the run, then remove it"
        )
    store.remove(name)


def run_now(settings: Settings, store: ScheduleStore, name: str, kind: str = "manual") -> Run:
    """Run the schedule here, now, holding its lock like a scheduled run; `kind` is
    recorded in the history (`manual`, or `cron` from a crontab line)."""

    schedule = existing(store, name)
    now = time.time()
    # The lock's expiry covers a long foreground run: this process is its holder and
    # is checked for life on this host; other hosts wait for the expiry.
    ttl = max(24 * 3600.0, (schedule.timeout or 0) + LOCK_TTL_S)
    run_id = store.start_run(schedule, kind, None, now, 0, now + ttl)
    if run_id is None:
        holder = store.holder(name)
        who = f"run {holder.run_id} ({holder.owner})" if holder else "another run"
        if schedule.monitor:  # a trigger while a retrain is going: recorded, as the scheduler does
            store.record(schedule, kind, "skipped", None, now, 0, f"{who} is still going")
        raise MlopsError(f"schedule {name}: {who} is going; try again when it ends")
    try:
        return execute(settings, store, run_id)
    finally:
        store.release(name, run_id)

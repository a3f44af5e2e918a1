"""`mlops schedule …` (manage schedules, read their history) and `mlops scheduler …`
(the long-running scheduler). Imports only typer and rich at import time."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from mlops import console
from mlops.limits import MAX_SECONDS, MAX_TRIALS, MAX_WORKERS, finite

schedule_app = typer.Typer(
    help="Scheduled sweeps: add, list, pause, history.", no_args_is_help=True
)
scheduler_app = typer.Typer(help="The scheduler that fires scheduled sweeps.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NameArg = Annotated[str, typer.Argument(help="The schedule's name.", show_default=False)]


def _open() -> tuple[Any, Any]:
    from mlops.scheduling.store import ScheduleStore
    from mlops.settings import Settings

    settings = Settings.from_env()
    return settings, ScheduleStore(settings.database_url)


def _when(ts: float | None, timezone: str | None = None) -> str:
    if ts is None:
        return "—"
    if timezone is None:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    from mlops.scheduling.cron import format_time

    return format_time(ts, timezone)


def _value(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


@schedule_app.command("add")
def add_cmd(
    name: NameArg,
    cron: Annotated[
        str | None, typer.Option("--cron", help='5 fields, e.g. "0 2 * * *", or @daily.')
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", help="Instead of --cron: 15m, 1h, 6h, 1d, ...")
    ] = None,
    monitor: Annotated[
        str | None,
        typer.Option(
            "--monitor",
            help="Watch MODEL@STAGE (drift, live performance) and retrain when it slips, "
            "instead of sweeping.",
        ),
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option("--pipeline", help="params.yaml pipeline.name (the default; the only one)."),
    ] = None,
    trials: Annotated[
        int, typer.Option("--trials", min=1, max=MAX_TRIALS, help="New trials per run.")
    ] = 20,
    timeout: Annotated[
        float | None,
        typer.Option(min=1, max=MAX_SECONDS, callback=finite, help="Stop a run after S s."),
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA zone (default: local).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help="Worker processes.")] = 1,
    grace: Annotated[
        float,
        typer.Option(
            min=0, max=MAX_SECONDS, callback=finite, help="Catch up a missed run up to S s late."
        ),
    ] = 3600.0,
    as_json: JsonFlag = False,
) -> None:
    """Add a schedule (a sweep, or with --monitor a watch); shows its next fire times."""
    from mlops.errors import UserError
    from mlops.scheduling import service
    from mlops.scheduling.cron import local_timezone
    from mlops.scheduling.store import Schedule

    if (cron is None) == (every is None):
        raise UserError("give one of --cron EXPRESSION or --every INTERVAL")
    expression = cron if cron is not None else service.every_cron(every or "")
    settings, store = _open()
    draft = Schedule(
        name, pipeline or "", expression, timezone or local_timezone(), trials, workers,
        timeout, grace, monitor=(monitor or "").strip(),
    )  # fmt: skip
    added = service.add(store, settings, draft)
    if as_json:
        console.emit_json({"schedule": asdict(added.schedule), "upcoming": added.upcoming})
        return
    s = added.schedule
    what = f"watch {s.monitor}" if s.monitor else f"sweep {s.pipeline} with {s.trials} trial(s)"
    console.out.print(
        f"schedule [bold]{s.name}[/]: {what} on {s.cron!r} ({s.timezone}); next fire times:"
    )
    for when in added.upcoming:
        console.out.print(f"  {when}")
    console.out.print("runs when a scheduler is running: `mlops scheduler start`")


@schedule_app.command("list")
def list_cmd(as_json: JsonFlag = False) -> None:
    """Schedules, their next fire time and last status, and whether a scheduler runs."""
    from mlops.scheduling.scheduler import live_schedulers

    _settings, store = _open()
    schedules, last = store.schedules(), store.last_runs()
    live = live_schedulers(store, time.time())
    if as_json:
        console.emit_json({
            "schedules": [asdict(s) for s in schedules],
            "last_runs": {k: asdict(v) for k, v in last.items()},
            "schedulers": live,
        })  # fmt: skip
        return
    if not schedules:
        console.out.print("no schedules; add one with `mlops schedule add`")
    else:
        rows = []
        for s in schedules:
            run = last.get(s.name)
            rows.append((
                s.name, s.what, s.cron, s.timezone, "—" if s.monitor else s.trials,
                "paused" if s.paused else "active",
                "—" if s.paused else _when(s.next_fire_at, s.timezone),
                f"{run.status} ({_when(run.started_at)})" if run else "never ran",
            ))  # fmt: skip
        console.table(
            "Schedules",
            ["name", "what", "cron", "timezone", "trials", "state", "next fire", "last run"],
            rows,
        )
    if live:
        console.out.print("scheduler running: " + ", ".join(live))
    else:
        console.out.print("no scheduler is running: start one with `mlops scheduler start`")


@schedule_app.command("pause")
def pause_cmd(name: NameArg, as_json: JsonFlag = False) -> None:
    """Stop firing a schedule (a run in progress goes on)."""
    from mlops.scheduling import service

    _settings, store = _open()
    s = service.pause(store, name)
    if as_json:
        console.emit_json(asdict(s))
        return
    console.out.print(f"schedule {name}: paused")


@schedule_app.command("resume")
def resume_cmd(name: NameArg, as_json: JsonFlag = False) -> None:
    """Fire a paused schedule again, from its next fire time after now."""
    from mlops.scheduling import service

    _settings, store = _open()
    s = service.resume(store, name)
    if as_json:
        console.emit_json(asdict(s))
        return
    console.out.print(f"schedule {name}: active; next fire {_when(s.next_fire_at, s.timezone)}")


@schedule_app.command("remove")
def remove_cmd(name: NameArg, as_json: JsonFlag = False) -> None:
    """Remove a schedule (its history stays readable)."""
    from mlops.scheduling import service

    _settings, store = _open()
    service.remove(store, name)
    if as_json:
        console.emit_json({"schedule": name, "removed": True})
        return
    console.out.print(f"schedule {name}: removed")


@schedule_app.command("history")
def history_cmd(
    name: NameArg,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100_000, help="The last N runs.")
    ] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Every run of a schedule: times, trials added, best value before/after, status."""
    from mlops.scheduling.service import check_name

    _settings, store = _open()
    runs = store.runs(check_name(name), limit)
    if not runs and store.get(name) is None:
        from mlops.scheduling.service import existing

        existing(store, name)  # one line: not found, and the schedules there are
    if as_json:
        console.emit_json([asdict(r) for r in runs])
        return
    if not runs:
        console.out.print(f"schedule {name}: no runs yet")
        return
    console.table(
        f"History of {name} (local times; --json for every field)",
        ["run", "kind", "status", "fire time", "started", "took", "trials", "best before → after",
         "MLflow run", "data md5", "note"],
        [_history_row(r) for r in runs],
    )  # fmt: skip


def _trigger(text: str) -> str:
    """A monitor run's checks in a few words: what crossed, or the figures."""
    if not text:
        return ""
    found = json.loads(text)
    if found.get("crossed"):
        return "triggered by " + "; ".join(found["crossed"])
    drift, live = found.get("drift", {}), found.get("live", {})
    seen = [
        "no drift"
        if drift.get("drift") is False
        else f"drift not checked ({drift.get('skipped', '')})"
    ]
    if live.get("value") is not None:
        seen.append(f"live {live['metric']} {live['value']:.4f} on {live['labelled']} labels")
    if live.get("skipped"):
        seen.append(f"live check off ({live['skipped']})")
    return f"{found.get('watched', '')}: " + ", ".join(seen)


def _history_row(r: Any) -> tuple[Any, ...]:
    short = "%m-%d %H:%M"
    took = "—" if r.ended_at is None else f"{r.ended_at - r.started_at:.0f} s"
    notes = [n for n in (_trigger(r.trigger), r.error) if n]
    if r.registered_version:
        notes.append(f"registered version {r.registered_version} (challenger)")
    if r.coalesced:
        notes.append(f"{r.coalesced} earlier fire time(s) coalesced")
    return (
        r.id, r.kind, r.status,
        "—" if r.fire_time is None else time.strftime(short, time.localtime(r.fire_time)),
        time.strftime(short, time.localtime(r.started_at)), took,
        "—" if r.trials_added is None else r.trials_added,
        f"{_value(r.best_before)} → {_value(r.best_after)}",
        r.mlflow_run_id[:12] or "—",
        ", ".join(f"{k} {v[:8]}" for k, v in sorted(r.data_version.items())) or "—",
        "; ".join(notes),
    )  # fmt: skip


@schedule_app.command("run-now")
def run_now_cmd(
    name: NameArg,
    from_cron: Annotated[
        bool, typer.Option("--from-cron", help="Record the run as started by cron.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run the schedule now, here (recorded in its history as manual, or cron)."""
    from mlops.scheduling import service

    settings, store = _open()
    run = service.run_now(settings, store, name, "cron" if from_cron else "manual")
    if as_json:
        console.emit_json(asdict(run))
    elif getattr(store.get(name), "monitor", ""):  # a monitor schedule's run
        made = (
            f"; registered v{run.registered_version} (challenger)" if run.registered_version else ""
        )
        console.out.print(f"run {run.id} of {name}: {run.status}; {_trigger(run.trigger)}{made}")
        if run.status == "skipped":
            console.out.print(f"  {run.error}")
            return
    else:
        console.out.print(
            f"run {run.id} of {name}: {run.status}; {run.trials_added} trial(s) added, best "
            f"{_value(run.best_before)} → {_value(run.best_after)}; MLflow run {run.mlflow_run_id}"
        )
    if run.status not in ("succeeded", "skipped"):  # skipped: a monitor in its cooldown
        from mlops.errors import MlopsError

        raise MlopsError(f"run {run.id} of {name} {run.status}: {run.error}")


@scheduler_app.command("start")
def start_cmd(
    tick: Annotated[float, typer.Option(min=0.1, max=60, help="Seconds between checks.")] = 5.0,
    log_file: Annotated[
        Path | None, typer.Option(help="Also log here (default: .mlops/scheduler/scheduler.log).")
    ] = None,
) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from mlops.scheduling.scheduler import Scheduler, SystemClock, live_schedulers, log, log_to

    settings, store = _open()
    log_to(log_file or settings.home / "scheduler" / "scheduler.log")
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        if not stop.is_set():
            stop.set()
            log.info("signal %d: stopping (runs in progress are stopped cleanly)", signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    live = live_schedulers(store, time.time())
    if live:
        log.warning(
            "another scheduler is running on this database (%s): each fire time still runs "
            "once, but one scheduler is enough", ", ".join(live)
        )  # fmt: skip
    Scheduler(settings, store, SystemClock(stop), tick=tick).serve(stop.is_set)


@scheduler_app.command("status")
def status_cmd(as_json: JsonFlag = False) -> None:
    """Schedulers running on this database and the runs in progress."""
    from mlops.scheduling.scheduler import live_schedulers

    _settings, store = _open()
    live = live_schedulers(store, time.time())
    running = store.runs(status="running")
    if as_json:
        console.emit_json({"schedulers": live, "running": [asdict(r) for r in running]})
        return
    console.out.print("schedulers: " + (", ".join(live) if live else "none running"))
    for r in running:
        console.out.print(f"  run {r.id} of {r.schedule} ({r.kind}) since {_when(r.started_at)}")

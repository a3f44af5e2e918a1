"""The `mlops` command: a root Typer app that parses and prints; services decide.

Exit codes: 0 success, 1 failure, 2 bad input, 130 interrupted. Errors are one line
on stderr. Importing this module imports neither torch nor mlflow, nor the pydantic
models of `mlops.params`: commands import what they need.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click import exceptions as click  # typer 0.29 vendors click's exceptions

from mlops import __version__, console, exposure, workspace
from mlops.errors import Interrupted, MlopsError, UserError, full_disk
from mlops.exposure import open_ui_warning

app = typer.Typer(
    name="mlops",
    help="MLOps lifecycle platform for PyTorch: pipelines, tracking, registry, sweeps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # click's help: paragraphs reflowed, plain metavars
)
params_app = typer.Typer(help="Check params.yaml.", no_args_is_help=True)
app.add_typer(params_app, name="params")
db_app = typer.Typer(help="Schemas of the stores: status and upgrade.", no_args_is_help=True)
app.add_typer(db_app, name="db")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_VERSIONED = ("torch", "mlflow", "optuna", "dvc", "sqlalchemy", "pydantic", "typer")


def _mount_subcommands() -> None:
    """Every sub-app and sub-command (registry, sweep, schedule, scheduler, server, monitor,
    serve, export): they import only typer and rich at import time."""
    from mlops.monitoring.cli import app as monitor_app
    from mlops.scheduling.cli import schedule_app, scheduler_app
    from mlops.server.cli import app as server_app
    from mlops.serving.cli import serve
    from mlops.tuning.cli import app as sweep_app
    from registry.cli import app as registry_app
    from registry.export.cli import export_cmd

    app.add_typer(registry_app, name="registry")
    app.add_typer(sweep_app, name="sweep")
    app.add_typer(schedule_app, name="schedule")
    app.add_typer(scheduler_app, name="scheduler")
    app.add_typer(server_app, name="server")
    app.add_typer(monitor_app, name="monitor")
    app.command("serve")(serve)
    app.command("export")(export_cmd)


@app.command("version")
def version_cmd(as_json: JsonFlag = False) -> None:
    """Show the versions of mlops and the libraries it drives."""
    found = {"mlops": __version__, "python": sys.version.split()[0]}
    for dist in _VERSIONED:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    if as_json:
        console.emit_json(found)
    else:
        console.table("mlops", ["component", "version"], list(found.items()))


ParamsFile = Annotated[Path, typer.Option("--file", "-f", help="The params file.")]


@params_app.command("check")
def params_check(file: ParamsFile = Path("params.yaml"), as_json: JsonFlag = False) -> None:
    """Validate params.yaml without running anything (exit 2 with one line if it is bad)."""
    from mlops.params import load_params

    params = load_params(file)
    if as_json:
        console.emit_json({"file": str(file), "valid": True, "params": params.as_dict()})
    else:
        console.out.print(f"{file}: valid")


@app.command("doctor")
def doctor(as_json: JsonFlag = False) -> None:
    """Check the environment: versions, stores reachable, `platform` not shadowed, DVC."""
    from mlops.doctor import run_checks
    from mlops.settings import Settings

    checks = run_checks(Settings.from_env())
    if as_json:
        console.emit_json([c.__dict__ for c in checks])
    else:
        rows = [(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail) for c in checks]
        console.table("mlops doctor", ["check", "status", "detail"], rows)
        for c in checks:
            if not c.ok:
                console.error(f"{c.name}: {c.detail}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def _schema_state(schema: object) -> str:
    error, ok = getattr(schema, "error", None), getattr(schema, "ok", False)
    return "[red]unreachable[/]" if error else "[green]ok[/]" if ok else "[red]behind[/]"


def _schema_rows(pairs: list[tuple[object, object]]) -> list[tuple[str, ...]]:
    from mlops.schemas import Schema
    from mlops.settings import redact

    rows: list[tuple[str, ...]] = []
    for before, after in pairs:
        assert isinstance(before, Schema) and isinstance(after, Schema)
        rows.append((
            after.name, redact(after.url), before.current or "—", after.current or "—",
            after.head, _schema_state(after),
        ))  # fmt: skip
    return rows


@db_app.command("status")
def db_status(as_json: JsonFlag = False) -> None:
    """Each store's schema revision and the one this code expects (exit 1 if behind)."""
    from dataclasses import asdict

    from mlops.schemas import status
    from mlops.settings import Settings, redact

    found = status(Settings.from_env())
    if as_json:
        console.emit_json([asdict(s) | {"url": redact(s.url), "ok": s.ok} for s in found])
    else:
        rows = [r[:2] + r[3:] for r in _schema_rows([(s, s) for s in found])]
        console.table("Schemas", ["store", "where", "revision", "expected", ""], rows)
    unreachable = [s.error for s in found if s.error]
    if unreachable:
        raise MlopsError(str(unreachable[0]))
    if not all(s.ok for s in found):
        raise MlopsError("a store's schema is behind this code: run `mlops db upgrade`")


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Create or upgrade every store's schema (MLflow, Optuna, ours); idempotent."""
    from mlops.schemas import upgrade
    from mlops.settings import Settings, redact

    pairs = upgrade(Settings.from_env())
    if as_json:
        console.emit_json([
            {"store": a.name, "url": redact(a.url), "before": b.current, "after": a.current,
             "head": a.head, "ok": a.ok}
            for b, a in pairs
        ])  # fmt: skip
        return
    console.table(
        "Schemas upgraded",
        ["store", "where", "before", "after", "expected", ""],
        _schema_rows(list(pairs)),
    )


@app.command("ui")
def ui(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).", min=0, max=65535)] = 0,
) -> None:
    """Start the MLflow UI on the configured store and keep it running until Ctrl-C."""
    from mlops import ui as server
    from mlops.settings import Settings

    settings = Settings.from_env()
    port = port or exposure.free_port(host)
    exposed = open_ui_warning(
        "the MLflow UI", host, port, "read, change and delete every run, model and artifact"
    )
    if exposed is not None:
        console.warning(exposed)
    process = server.start_server(settings, host, port)
    url = f"http://{host}:{port}"
    console.out.print(f"Starting the MLflow UI on {settings.as_dict()['tracking_uri']} ...")
    _attend("MLflow UI", url, process, lambda: server.wait_until_up(url, process))


def _attend(what: str, url: str, process: Any, up: Callable[[], bool]) -> None:
    """Wait until a UI process answers (`up`), then until Ctrl-C or SIGTERM, printing
    where it is; it is always stopped (its process group: SIGTERM, then SIGKILL)."""
    import signal

    from mlops import ui as server

    def _stop(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, _stop)
    try:
        if not up():
            raise MlopsError(f"{what} did not start on {url} (exit {process.poll()})")
        console.out.print(f"{what}: {url}  (Ctrl-C to stop)", soft_wrap=True)
        process.wait()
        if process.returncode:
            raise MlopsError(f"{what} stopped with exit code {process.returncode}")
    except (KeyboardInterrupt, Interrupted):
        console.out.print(f"{what} stopped")
    finally:
        server.stop_server(process)


@app.command("tensorboard")
def tensorboard(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).", min=0, max=65535)] = 0,
) -> None:
    """Open TensorBoard over every run of the pipeline that wrote event files
    (`train.tensorboard: true`), until Ctrl-C. Their files are fetched from the artifact
    store into `.mlops/tensorboard/` first."""
    import subprocess

    from mlops import board, tracking
    from mlops.params import load_params
    from mlops.server import process as server
    from mlops.settings import Settings

    settings = Settings.from_env()
    params_file = settings.root / workspace.PARAMS
    experiment = load_params(params_file).pipeline.name if params_file.is_file() else "digits"
    tracking.connect(settings)
    dest = settings.home / "tensorboard" / experiment
    runs = board.gather(experiment, dest)
    if not runs:
        raise UserError(
            f"no run of pipeline {experiment!r} has TensorBoard files: set "
            "train.tensorboard: true in params.yaml and run dvc repro"
        )
    port = port or exposure.free_port(host)
    exposed = open_ui_warning("TensorBoard", host, port, "read every run's event files")
    if exposed is not None:
        console.warning(exposed)
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(dest), "--host", host,
           "--port", str(port), "--reload_interval", "0"]  # fmt: skip
    process = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
    url = f"http://{host}:{port}"
    console.out.print(f"TensorBoard on {len(runs)} run(s) of {experiment} ...")
    _attend(
        "TensorBoard", url, process, lambda: server.wait_healthy(url, process, path="/data/runs")
    )


@app.command("summary")
def summary(as_json: JsonFlag = False) -> None:
    """Show where the pipeline's results are: metrics, the registered version, the stores."""
    from mlops.io import read_json
    from mlops.settings import Settings

    settings = Settings.from_env()
    root = settings.root
    metrics_file = root / workspace.METRICS
    registered_file = root / workspace.REGISTERED
    if not metrics_file.is_file():
        raise UserError(f"{metrics_file}: not found; run `dvc repro` (or `make run`) first")
    metrics = read_json(metrics_file)
    registered = read_json(registered_file) if registered_file.is_file() else {}
    result = {
        "metrics": metrics,
        "registered": registered,
        "stores": settings.as_dict(),
        "outputs": {
            "metrics": str(workspace.METRICS),
            "plots": f"{workspace.PLOTS_DIR}/",
            "model": f"{workspace.MODEL_DIR}/",
            "validation": str(workspace.VALIDATION),
        },
    }
    if as_json:
        console.emit_json(result)
        return
    test = metrics.get("test", {})
    rows = [(k, f"{v:.4f}") for k, v in sorted(test.items()) if k != "n_samples"]
    console.table("Test metrics", ["metric", "value"], rows)
    if registered:
        console.out.print(
            f"Registered model: [bold]{registered['name']}[/] version "
            f"[bold]{registered['version']}[/] (sha256 {registered['sha256'][:12]})"
        )
    console.table("Where to look", ["what", "where"], [
        ("metrics and plots", "dvc metrics show · dvc plots show · reports/plots/*.png"),
        ("runs, metrics, models", "mlops ui  (MLflow UI on 127.0.0.1)"),
        ("registered versions", "mlops registry list"),
        ("tracking store", settings.as_dict()["tracking_uri"]),
        ("artifacts", settings.as_dict()["artifact_root"]),
    ])  # fmt: skip


_METAVARS = {"int": "INTEGER", "float": "FLOAT", "path": "PATH"}


def _metavar(param: typer.core.TyperArgument | typer.core.TyperOption) -> str | None:
    """`NAME` for an argument, the type (`INTEGER`, `FLOAT`, `PATH`, `TEXT`) for an option
    that takes a value, nothing for a flag."""
    if isinstance(param, typer.core.TyperArgument):
        return (param.name or "value").upper()
    if param.is_flag:
        return None
    return _METAVARS.get(param.bare_type().lower(), "TEXT")


def tidy_help(command: Any) -> Any:
    """Plain metavars everywhere: `TARGET` (typer would write `{target}` and `<str>`),
    `--port INTEGER`, and nothing after a flag (no `<bool>`)."""
    for param in command.params:
        if not isinstance(param, typer.core.TyperArgument | typer.core.TyperOption):
            continue
        if param.metavar is None:
            param.metavar = _metavar(param)
        if isinstance(param, typer.core.TyperArgument):
            name = str(param.metavar)
            shown = (name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else "")
            # typer 0.29 offers no option for these two: set them on the instance
            setattr(param, "_usage_display_name", lambda shown=shown: shown)  # noqa: B010
            setattr(param, "display_type_rich", lambda ctx=None: None)  # noqa: B010
    if isinstance(command, typer.core.TyperGroup):
        for sub in command.commands.values():
            tidy_help(sub)
    return command


def _usage_error(exc: click.UsageError) -> int:
    """One line for a usage mistake (exit 2): what was wrong and where help is."""
    if isinstance(exc, click.NoArgsIsHelpError):
        console.out.print(exc.format_message(), markup=False)  # `mlops registry`: its help
        return 2
    path = exc.ctx.command_path if exc.ctx is not None else "mlops"
    message = " ".join(exc.format_message().split()).rstrip(".")
    console.error(f"{path}: {message} (see `{path} --help`)")
    return exc.exit_code


def main() -> None:
    """Console-script entry point with the platform's exit codes and one-line errors."""
    _mount_subcommands()
    if "--json" in sys.argv[1:]:
        # stdout is the JSON document: no "View run at" links from MLflow (its own and
        # those of the workers we start, which inherit the setting).
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    command = tidy_help(typer.main.get_command(app))
    try:
        code = command.main(prog_name="mlops", standalone_mode=False)
    except click.UsageError as exc:
        code = _usage_error(exc)
    except click.ClickException as exc:
        console.error(" ".join(exc.format_message().split()))
        code = exc.exit_code
    except typer.Abort:
        console.error("interrupted")
        code = 130
    except MlopsError as exc:
        console.error(str(exc))
        code = exc.exit_code
    except Interrupted:
        console.error("interrupted")
        code = 130
    except Exception as exc:  # a full disk, however wrapped: one line, not a traceback
        line = full_disk(exc)
        if line is None:
            raise
        console.error(line)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)

"""`mlops server start|status|stop`: the MLflow tracking server of team mode."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlops import console
from mlops.errors import MlopsError

app = typer.Typer(
    help="The MLflow tracking server (team mode): start, status, stop.", no_args_is_help=True
)
AUTH_FILE = Path("mlops-auth.yaml")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command("start")
def start(
    host: Annotated[
        str, typer.Option(help="Interface to bind (0.0.0.0: every one; then add --auth).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to listen on (0: a free one).", min=0, max=65535)
    ] = 5000,
    artifacts_destination: Annotated[
        str | None,
        typer.Option(help="Where served artifacts are stored (default: MLOPS_ARTIFACT_ROOT)."),
    ] = None,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(help="Host headers to accept besides localhost and private IPs."),
    ] = None,
    auth: Annotated[bool, typer.Option("--auth", help="MLflow basic auth (a users file).")] = False,
    auth_config: Annotated[Path, typer.Option(help="The users file of --auth (YAML).")] = AUTH_FILE,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Stay attached (systemd, compose).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start the tracking server on the configured backend store, with served artifacts."""
    from mlops.exposure import free_port
    from mlops.server import service
    from mlops.settings import Settings

    settings = Settings.from_env()
    port = port or free_port(host)
    options = service.StartOptions(
        host=host, port=port, artifacts=artifacts_destination, allowed_hosts=allowed_hosts,
        auth_config=(settings.root / auth_config) if auth else None,
    )  # fmt: skip
    service.check(settings, options)  # bad input: one line, before any progress
    with console.status("Starting the MLflow server …"):
        started = service.start(settings, options)
    state = started.state
    exposed = service.exposure(options)
    if exposed is not None:
        console.warning(exposed)
    if as_json:
        console.emit_json(
            service.status(settings).as_dict() | {"synced": [list(row) for row in started.synced]}
        )
    else:
        _print_started(started)
    if foreground:
        code = service.serve_foreground(settings, started)
        if code:
            raise MlopsError(f"the MLflow server stopped with exit code {code} (log: {state.log})")
        console.out.print("MLflow server stopped")


def _print_started(started: Any) -> None:
    state = started.state
    if started.synced:
        console.table("Auth users", ["user", "what", "value"], started.synced)
    console.out.print(f"MLflow server: {state.url}  (pid {state.pid})", soft_wrap=True)
    console.table("Server", ["", "value"], [
        ("backend store", state.backend),
        ("artifacts", state.artifacts),
        ("auth", "basic auth" if state.auth else "off"),
        ("log", state.log),
        ("clients", f"export MLOPS_TRACKING_URI={state.url}"),
    ])  # fmt: skip


@app.command("status")
def status(as_json: JsonFlag = False) -> None:
    """Show whether the server runs and answers (exit 1 when it does not)."""
    from mlops.server import service
    from mlops.settings import Settings

    result = service.status(Settings.from_env())
    if as_json:
        console.emit_json(result.as_dict())
    else:
        state = result.state
        rows = [("status", "running" if result.running else "stopped"), ("", result.note)]
        if state is not None:
            rows += [("url", state.url), ("pid", str(state.pid)), ("backend store", state.backend),
                     ("artifacts", state.artifacts), ("auth", "on" if state.auth else "off"),
                     ("log", state.log)]  # fmt: skip
        console.table("MLflow server", ["", "value"], rows)
    if not (result.running and result.healthy):
        raise typer.Exit(1)


@app.command("stop")
def stop(as_json: JsonFlag = False) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 30 s)."""
    from mlops.server import service
    from mlops.settings import Settings

    said = service.stop(Settings.from_env())
    if as_json:
        console.emit_json({"stopped": said.startswith("stopped"), "message": said})
    else:
        console.out.print(said)

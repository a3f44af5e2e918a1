"""`mlops registry …`: the registry's sub-app. Imports only typer and rich at import time."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from mlops import console
from mlops.errors import UserError

app = typer.Typer(help="Model registry: versions, stages, lineage.", no_args_is_help=True)


@app.command("list")
def list_cmd(
    model: Annotated[str | None, typer.Argument(help="Only this registered model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List registered models and their versions, newest first."""
    import re

    from mlops.config import NAME_PATTERN, Settings

    if model is not None and not re.match(NAME_PATTERN, model):
        raise UserError(f"model name {model!r}: not a valid name")
    from mlops import tracking
    from registry.service import list_versions

    tracking.connect(Settings.from_env())
    rows = list_versions(model)
    if as_json:
        console.emit_json([asdict(r) for r in rows])
        return
    if not rows:
        console.out.print("no registered models" + (f" named {model}" if model else ""))
        return
    console.table(
        "Registered model versions",
        ["model", "version", "stage", "aliases", "test accuracy", "git commit"],
        [
            (r.name, r.version, r.stage, ", ".join(r.aliases), r.test_accuracy, r.git_commit)
            for r in rows
        ],
    )

"""`mlops registry …`: parses and prints; the registry's modules decide.

Imports only typer and rich at import time. `list`, `show`, `history` and `lineage`
read the registry's tables without importing MLflow or torch, and never write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlops import console
from registry.hooks.cli import app as hooks_app

if TYPE_CHECKING:
    from registry.context import Context

app = typer.Typer(
    help="Model registry: versions, stages, gates, comparison, ledger, rollback.",
    no_args_is_help=True,
)

app.add_typer(hooks_app, name="hooks")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ModelArg = Annotated[str, typer.Argument(help="Registered model name.", show_default=False)]
RefArg = Annotated[str, typer.Argument(help="A version number, or @STAGE.", show_default=False)]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Evaluate gates only.")]
Force = Annotated[bool, typer.Option("--force", help="Override failing gates (needs --reason).")]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")]


Limit = Annotated[
    int | None, typer.Option("--limit", min=1, help="At most N rows (table default: 50).")
]
AllRows = Annotated[bool, typer.Option("--all", help="Every row in the table.")]
TABLE_ROWS = 50


def _more(shown: int, total: int, what: str) -> None:
    if total > shown:
        console.out.print(
            f"showing {shown} of {total} {what}; --all for every one, --json for scripts"
        )


@app.command("list")
def list_cmd(
    model: Annotated[str | None, typer.Argument(help="Only this registered model.")] = None,
    limit: Limit = None,
    all_rows: AllRows = False,
    as_json: JsonFlag = False,
) -> None:
    """List registered models and their versions, newest first."""
    from registry.queries import list_versions

    ctx = _ctx()
    name = _name(model) if model is not None else None
    every = list_versions(ctx, name)
    _warn_pending(ctx, name)
    if as_json:
        console.emit_json([asdict(r) for r in every[:limit]])
        return
    if not every:
        console.out.print("no registered models" + (f" named {model}" if model else ""))
        return
    rows = every if all_rows else every[: limit or TABLE_ROWS]
    console.table(
        "Registered model versions",
        ["model", "version", "stage", "aliases", "test metrics", "git commit"],
        [
            (
                r.name,
                r.version,
                r.stage,
                ", ".join(r.aliases),
                "  ".join(f"{k} {v}" for k, v in r.metrics.items()),
                r.git_commit,
            )
            for r in rows
        ],
    )
    _more(len(rows), len(every), "versions")


@app.command("show")
def show_cmd(model: ModelArg, ref: RefArg, as_json: JsonFlag = False) -> None:
    """Show one version: metrics, params, lineage, sha256, who holds which stage."""
    from registry.queries import show
    from registry.stages import parse_ref

    ctx = _ctx(True)
    info = show(ctx, _name(model), parse_ref(ref, ctx.policy))
    _warn_pending(ctx, model)
    if as_json:
        console.emit_json(info)
        return
    rows = [
        ("stage", info["stage"]),
        ("sha256 (weights)", info["sha256"]),
        ("sha256 (all files)", info["artifact_sha256"]),
        ("run", info["run_id"]),
        ("source", info["source"]),
    ]
    rows += [(f"test {k}", v) for k, v in info["metrics"].items()]
    for key, value in info["lineage"].items():
        if isinstance(value, dict):
            rows += [(f"lineage {key} {k}", str(v)) for k, v in value.items()]
        else:
            rows.append((f"lineage {key}", str(value)))
    rows += [(f"holds {s}", f"v{v}") for s, v in sorted(info["holders"].items())]
    rows += [(f"param {k}", v) for k, v in sorted(info["params"].items())]
    console.table(f"{info['name']} version {info['version']}", ["", "value"], rows)


def _ancestor(found: dict[str, str]) -> str:
    """One version up a fine-tuning chain, as `lineage` shows it."""
    gone = " - no longer in the registry" if "missing" in found else ""
    return (
        f"{found.get('model')} v{found.get('version')} (sha256 "
        f"{found.get('sha256', '')[:12]}, head {found.get('head', '?')}){gone}"
    )


@app.command("lineage")
def lineage_cmd(model: ModelArg, ref: RefArg, as_json: JsonFlag = False) -> None:
    """Trace a version: git commit → DVC data hashes → params → MLflow run → Optuna trial."""
    from registry.queries import ancestry, get, lineage_of
    from registry.stages import parse_ref

    ctx = _ctx(True)
    version = get(ctx, _name(model), parse_ref(ref, ctx.policy))
    chain = lineage_of(version)
    ancestors = ancestry(ctx, version)
    if ancestors:  # fine-tuned: every version up the chain, parent first
        chain["ancestors"] = {str(i): _ancestor(a) for i, a in enumerate(ancestors, 1)}
    _warn_pending(ctx, model)
    if as_json:
        console.emit_json(chain)
        return
    rows = []
    for key, value in chain.items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        rows += [(f"{key} {k}".strip(), str(v)) for k, v in items]
    console.table(f"Lineage of {model} {ref}", ["link", "value"], rows)


@app.command("history")
def history_cmd(
    model: ModelArg,
    limit: Limit = None,
    all_rows: AllRows = False,
    as_json: JsonFlag = False,
) -> None:
    """The ledger: every registration, promotion, rollback, archive and override (the
    latest entries, oldest first)."""
    from registry import queries

    ctx = _ctx()
    entries = queries.history(ctx, _name(model))
    _warn_pending(ctx, model)
    if as_json:
        console.emit_json([asdict(e) for e in (entries[-limit:] if limit else entries)])
        return
    from registry import render

    shown = entries if all_rows else entries[-(limit or TABLE_ROWS) :]
    render.history(model, shown)
    _more(len(shown), len(entries), "entries")


@app.command("register")
def register_cmd(
    run: Annotated[str, typer.Option("--run", help="The training run to register.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Model name (default: the run's experiment).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register the model a training run saved, as a new version."""
    from registry.registration import register_run

    ctx = _ctx(True)
    with _events_sent(ctx), _store_refusals():
        version = register_run(ctx, run.strip(), _name(name) if name else None)
    if as_json:
        console.emit_json(asdict(version))
        return
    how = "already registered as" if version.reused else "registered"
    console.out.print(f"{how} {version.name} version {version.version}")


def _change(
    model: str,
    ref: str | None,
    to: str,
    action: str,
    reason: str,
    dry_run: bool,
    force: bool,
    as_json: bool,
) -> None:
    from registry import render
    from registry.promotion import change_stage, previous_holder
    from registry.stages import Ref, parse_ref

    ctx = _ctx(True)
    model = _name(model)
    if ref is None:  # rollback: the previous holder of `to`
        ctx.policy.check_stage(to, exclusive=True)
        target = Ref(version=previous_holder(ctx, model, to))
    else:
        target = parse_ref(ref, ctx.policy)
    if dry_run:
        _warn_pending(ctx, model)
    with _events_sent(ctx), _store_refusals(), _progress() as step:
        done = change_stage(
            ctx, model, target, to, action=action, reason=reason, dry_run=dry_run,
            force=force, progress=step,
        )  # fmt: skip
    if as_json:
        console.emit_json(asdict(done))
    else:
        render.outcome(done)


@app.command("promote")
def promote_cmd(
    model: ModelArg,
    ref: RefArg,
    to: Annotated[str, typer.Option("--to", help="Target stage.", show_default=False)],
    reason: Reason = "",
    dry_run: DryRun = False,
    force: Force = False,
    as_json: JsonFlag = False,
) -> None:
    """Promote a version to a stage through that stage's gates."""
    _change(model, ref, to, "promote", reason, dry_run, force, as_json)


@app.command("rollback")
def rollback_cmd(
    model: ModelArg,
    stage: Annotated[str, typer.Option("--stage", help="The stage to roll back.")] = "production",
    reason: Reason = "",
    dry_run: DryRun = False,
    force: Force = False,
    as_json: JsonFlag = False,
) -> None:
    """Give a stage back to its previous holder (from the ledger), through the gates."""
    _change(model, None, stage, "rollback", reason, dry_run, force, as_json)


@app.command("archive")
def archive_cmd(
    model: ModelArg,
    ref: RefArg,
    reason: Reason = "",
    force: Annotated[
        bool,
        typer.Option("--force", help="Archive a stage's holder too (needs --reason)."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Archive a version (its history stays). A version that holds a stage is archived
    only with --force --reason: that stage is left empty."""
    from mlops.errors import UserError

    ctx = _ctx(True)
    if ctx.params.archive_stage is None:
        raise UserError("registry.archive_stage is null in params.yaml: nothing to archive to")
    _change(model, ref, ctx.params.archive_stage, "archive", reason, False, force, as_json)


@app.command("compare")
def compare_cmd(
    model: ModelArg,
    refs: Annotated[
        list[str],
        typer.Argument(help="Versions or @STAGEs; the first is the baseline.", show_default=False),
    ],
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown for a PR.")] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Also compare the first two on live traffic: the rows both answered "
            "(mlops serve --shadow --feedback), agreement and McNemar on the labelled ones.",
        ),
    ] = False,
    sink: Annotated[
        Path | None,
        typer.Option(help="With --live: the serving sink (default .mlops/serving/MODEL.db)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Compare versions side by side, re-evaluated on the same test split, with a
    significance test and a verdict (and, with --live, on live traffic)."""
    from registry import render
    from registry.compare import compare
    from registry.live import live_evidence
    from registry.stages import parse_ref

    ctx = _ctx(True)
    name, parsed = _name(model), [parse_ref(r, ctx.policy) for r in refs]
    with _store_refusals(), _progress() as step:
        result = compare(ctx, name, parsed, step=step)
        if live:
            step("reading live answers and labels")
            base, cand = (v["version"] for v in result["versions"][:2])
            found = live_evidence(ctx.settings, name, base, cand, sink)
            result["live"] = found.as_dict() if found else None
    if as_json:
        console.emit_json(result)
    elif markdown:
        console.out.print(render.comparison_markdown(result), markup=False, soft_wrap=True)
    else:
        render.comparison(result)


@app.command("sync")
def sync_cmd(model: ModelArg, as_json: JsonFlag = False) -> None:
    """Record versions and aliases set in MLflow outside mlops."""
    from registry.registration import sync

    ctx = _ctx(True)
    name = _name(model)
    refused: list[str] = []
    with _store_refusals():
        added = sync(ctx, name, refused)
    for line in refused:
        console.warning(f"not recorded: {line}")
    if as_json:
        console.emit_json(
            {"model": name, "added": added, "refused": refused, "holders": ctx.store.holders(name)}
        )
        return
    console.out.print(f"{name}: {added} version(s) added from MLflow")


@app.command("repair")
def repair_cmd(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Only these models (default: every one with an unfinished change)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Complete or undo the stage changes that killed commands left unfinished. A change is
    completed only for its own actor, or when the tracking store had granted its actor the
    rights it needs; otherwise MLflow is put back to what the ledger shows."""
    from registry.db.store import lock_name
    from registry.repair import repair

    ctx = _ctx(True)
    wanted = {_name(m) for m in models or []}
    names = sorted({i.model for i in ctx.store.intents() if not wanted or i.model in wanted})
    settled = []
    with _events_sent(ctx), _store_refusals(), _progress() as step:
        for name in names:
            with ctx.store.lock(lock_name(name)):
                settled += repair(ctx, name, step)
    if as_json:
        console.emit_json([asdict(s) for s in settled])
        return
    if not settled:
        console.out.print("nothing to repair")
    for s in settled:
        verb = "completed" if s.outcome == "repaired" else "undid"
        what = {"promote": "promotion", "rollback": "rollback", "archive": "archive"}
        console.out.print(
            f"{s.model}: {verb} the {what.get(s.action, s.action)} of v{s.version} → "
            f"{s.to_stage} by {s.actor} ({s.why})"
        )


# What the commands share: the context, checked names, the pending-change warning of
# read commands, progress that starts at the first step, the store's refusals as one line.
def _ctx(with_params: bool = False) -> Context:
    """The registry context (with the project's params.yaml when `with_params`)."""
    from mlops.settings import Settings
    from registry.context import Context

    return Context.load() if with_params else Context(Settings.from_env())


def _name(model: str) -> str:
    """`model`, once it is a valid model name (one line, exit 2, if not)."""
    from registry.stages import check_model_name

    return check_model_name(model)


def _warn_pending(ctx: Context, model: str | None) -> None:
    """One warning line when a change of `model` (or any) was left unfinished."""
    from registry.queries import pending, pending_warning

    found = pending(ctx, model)
    if found:
        console.warning(pending_warning(found))


@contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    """`step(text)` for a long command: the status appears at the first step, so a
    command refused before any work prints its one error line alone."""
    with ExitStack() as stack:
        update: Callable[[str], None] | None = None

        def step(text: str) -> None:
            nonlocal update
            if update is None:
                update = stack.enter_context(console.status(text))
            else:
                update(text)

        yield step


@contextmanager
def _store_refusals() -> Iterator[None]:
    """The tracking store refusing the user (401/403) is one line and exit 1."""
    try:
        yield
    except Exception as exc:
        from registry.stages import Refused
        from registry.store_access import is_refusal, refusal_text

        if not is_refusal(exc):
            raise
        raise Refused(f"the tracking store refused: {refusal_text(exc)}") from None


@contextmanager
def _events_sent(ctx: Context) -> Iterator[None]:
    """After a command that may have changed the registry (or been refused by its gates):
    the webhook deliveries it caused are sent at once, within a few seconds; what is not
    taken now is retried by `mlops registry hooks deliver`."""
    try:
        yield
    finally:
        from registry.hooks.delivery import flush

        flush(ctx.settings.database_url)

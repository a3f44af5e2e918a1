"""Refusals of a stage change, each one line: by `registry.permissions`, by the tracking
store (asked before anything is written, and when a write is refused), by the gates
(these are recorded in the ledger, `Refused`, exit 1), and archiving a stage's holder
without `--force` (`UserError`, exit 2, nothing written)."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace

from mlops.errors import UserError
from registry import gates, stage_writes, store_access
from registry.context import Context
from registry.db.store import Change, Entry, Version
from registry.repair import GATE_TAG, vacated
from registry.stages import Refused


def check_permitted(
    ctx: Context, model: str, to_stage: str, entry: Callable[..., Entry], record: bool = True
) -> None:
    """`registry.permissions` of params.yaml: who may move versions into `to_stage`."""
    allowed = ctx.params.permissions.get(to_stage)
    if allowed is None or ctx.actor in allowed:
        return
    if record:
        ctx.store.append(entry({"permitted": allowed}, "denied"))
    raise Refused(
        f"{ctx.actor} may not move versions of {model} to {to_stage} "
        f"(permitted: {', '.join(allowed) or 'nobody'})"
    )


def check_store(
    ctx: Context, version: Version, to_stage: str, entry: Callable[..., Entry]
) -> store_access.Access:
    """Ask the tracking store whether the user may make this change; refuse (recorded in
    the ledger) before anything is evaluated or written if not."""
    ctx.connect_mlflow()
    access = store_access.check(ctx.settings.tracking_uri, version.model)
    delete = vacated(ctx, Change(version.model, version.version, version.stage, to_stage, True))
    if access.allows(delete=delete is not None):
        return access
    needs = access.needs(delete=delete is not None)
    ctx.store.append(entry({"store": access.as_evidence(), "needs": needs}, "denied"))
    if access.permission == store_access.UNAUTHENTICATED:
        raise Refused(
            f"the tracking server {access.store} did not accept your credentials: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; nothing changed"
        )
    why = f"needs {needs} on the registered model" + (
        f" to take it out of {delete}" if delete is not None else ""
    )
    raise Refused(
        f"{access.user} may not change {version.model} in the tracking store "
        f"(granted {access.permission}; moving v{version.version} to {to_stage} {why}); "
        "nothing changed"
    )


def archive_guard(ctx: Context, version: Version, force: bool) -> list[str]:
    """The exclusive stages `version` holds; archiving it empties them, so not without
    `--force` (and its reason)."""
    held = sorted(s for s, v in ctx.store.holders(version.model).items() if v == version.version)
    if held and not force:
        stages = " and ".join(held)
        raise UserError(
            f"{version.model} v{version.version} holds {stages}: archiving it leaves "
            f"{stages} empty ({version.model}@{held[0]} stops resolving); promote another "
            "version first, or pass --force --reason TEXT"
        )
    return held


def refuse_by_gates(ctx: Context, refused: Entry, results: list[gates.GateResult]) -> None:
    """Record a refusal by the gates (ledger, and the evidence on the version) and raise."""
    ctx.store.append(refused)
    tag = f"{GATE_TAG}.{refused.to_stage}"
    text = json.dumps(refused.evidence, sort_keys=True)[:5000]
    assert refused.version is not None
    # The ledger has the evidence; the tag is a copy for the MLflow UI.
    with suppress(stage_writes.StoreRefused):
        stage_writes.reach(refused.model, stage_writes.Target({}, {(refused.version, tag): text}))
    failed = next(r for r in results if not r.passed)
    raise Refused(
        f"{refused.model} version {refused.version} → {refused.to_stage} refused by gate "
        f"'{failed.gate}': {failed.value} (needs {failed.threshold})"
    )


def store_refused(ctx: Context, op_id: str, done: Entry, exc: stage_writes.StoreRefused) -> None:
    """The store refused a write of this change: what was written is undone; drop the
    intent and record the refusal (or, when an undo was refused too, leave the intent
    flagged so that the next repair undoes the rest, never completes it)."""
    evidence = done.evidence | {
        "store_refused": exc.detail,
        "refused_write": exc.step.describe(),
        "not_undone": [s.describe() for s in exc.not_undone],
    }
    denied = replace(done, evidence=evidence, outcome="denied", forced=False)
    if exc.not_undone:
        ctx.store.flag_refused(op_id, denied)
        left = "; ".join(s.describe() for s in exc.not_undone)
        raise Refused(
            f"the tracking store refused {exc.step.describe()}: {exc.detail}; could not undo "
            f"{left} either: the next registry command on {done.model} by someone allowed "
            "undoes it"
        )
    ctx.store.settle(op_id, denied)
    raise Refused(
        f"the tracking store refused {exc.step.describe()}: {exc.detail}; nothing changed"
    )

"""Stage changes: promote (through the gates), rollback, archive, and the repair of a
change that a killed command left half done.

Each change runs under the model's lock in the platform database, in three steps:
record an intent (the decided change and its evidence), move the MLflow alias and
stage tags, then in one transaction update the holders, append the ledger entry and
drop the intent. A command killed between the steps leaves the intent behind; the
next command on that model rolls it forward (MLflow calls are idempotent), so no
alias ever points at a version the ledger does not show there, and vice versa.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlops.errors import MlopsError, UserError
from mlops.registry_params import NO_STAGE, GateParams
from registry import gates, mlflow_port
from registry.context import Context
from registry.db.store import Change, Entry, Version
from registry.evaluation import Scored, TestSplit, load_test_split, score
from registry.stages import Ref

CRASH_ENV = "MLOPS_REGISTRY_CRASH_AT"
GATE_TAG = "mlops.gates"


class Refused(MlopsError):
    """A promotion refused by a gate or a permission (exit 1); the ledger records it."""

    exit_code = 1


@dataclass(frozen=True)
class Outcome:
    """What a stage change did (or, with `dry_run`, would do)."""

    model: str
    version: int
    from_stage: str
    to_stage: str
    displaced: int | None
    gates: list[gates.GateResult]
    passed: bool
    forced: bool
    dry_run: bool
    action: str


def _crash_point(name: str) -> None:
    # Fault injection for the crash tests: SIGKILL ourselves between two steps.
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def lock_name(model: str) -> str:
    """The lock every stage change of `model` holds."""
    return f"registry:{model}"


def resolve(ctx: Context, model: str, ref: Ref) -> Version:
    """The version a reference names (`3` or `@production`), synced from MLflow if the
    store has not seen it yet."""
    version = ref.version
    if ref.stage is not None:
        version = ctx.store.holders(model).get(ref.stage)
        if version is None:
            raise UserError(f"model {model}: no version holds {ref.stage}")
    assert version is not None
    found = ctx.store.version(model, version)
    if found is None:
        from registry.registration import sync

        refused: list[str] = []
        sync(ctx, model, refused)
        found = ctx.store.version(model, version)
        mine = [line for line in refused if f" version {version}:" in line]
        if found is None and mine:
            raise UserError(mine[0])
    if found is None:
        raise UserError(f"model {model}: no version {version}")
    return found


def repair(ctx: Context, model: str) -> int:
    """Roll forward the changes left half done on `model` (call under its lock)."""
    pending = ctx.store.intents(model)
    if pending:
        ctx.connect_mlflow()
    for intent in pending:
        _apply_mlflow(intent.change, ctx.store.version(model, intent.change.version))
        evidence = intent.entry.evidence | {"repaired_by": ctx.actor}
        ctx.store.apply(
            intent.change,
            replace(intent.entry, outcome="repaired", evidence=evidence),
            intent.op_id,
        )
    return len(pending)


def repair_if_needed(ctx: Context, model: str | None = None) -> int:
    """Cheap check for leftovers (one query); repair them under the lock if any."""
    models = {i.model for i in ctx.store.intents(model)}
    count = 0
    for name in sorted(models):
        with ctx.store.lock(lock_name(name)):
            count += repair(ctx, name)
    return count


def _apply_mlflow(change: Change, version: Version | None) -> None:
    vacated = version.stage if version is not None else None
    mlflow_port.move_stage(
        change.model,
        change.version,
        change.to_stage,
        change.exclusive,
        vacated if vacated not in (None, NO_STAGE) else None,
        change.displaced,
        change.displaced_to,
    )


def needs_evidence(gate: GateParams) -> bool:
    """True when a gate of this stage needs the model's files or measurements."""
    return any(
        (
            gate.integrity,
            gate.signature,
            gate.thresholds,
            gate.max_size_mb,
            gate.beat_holder_by is not None,
            gate.max_latency_ms,
            gate.require_export,
        )
    )


def gather(
    ctx: Context, candidate: Version, holder: Version | None, gate: GateParams
) -> tuple[Scored, Scored | None]:
    """Measure the candidate (and the current holder) for the gates of one stage."""
    needs_data = (
        bool(gate.thresholds) or gate.beat_holder_by is not None or bool(gate.max_latency_ms)
    )
    split: TestSplit | None = load_test_split(ctx.settings.root) if needs_data else None
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow_port.download(candidate.model, candidate.version, Path(tmp, "a"))
        mine = score(candidate, local, split, latency=gate.max_latency_ms is not None)
        theirs = None
        if holder is not None and (gate.signature or gate.beat_holder_by is not None):
            local = mlflow_port.download(holder.model, holder.version, Path(tmp, "b"))
            theirs = score(holder, local, split)
    if gate.require_export is not None:
        from registry.export import passing_exports

        found = mlflow_port.get_version(candidate.model, candidate.version)
        exports = passing_exports(found.tags if found is not None else {})
        mine = replace(mine, evidence=replace(mine.evidence, exports=exports))
    return mine, theirs


def change_stage(
    ctx: Context,
    model: str,
    ref: Ref,
    to_stage: str,
    *,
    action: str = "promote",
    reason: str = "",
    dry_run: bool = False,
    force: bool = False,
) -> Outcome:
    """Move a version to `to_stage` through that stage's gates (`force`: record an
    override instead of refusing). `action` is promote, rollback or archive."""
    policy = ctx.policy
    policy.check_stage(to_stage)
    if force and not reason.strip():
        raise UserError("--force needs --reason: an override is recorded with its reason")
    allowed = ctx.params.permissions.get(to_stage)
    with ctx.store.lock(lock_name(model)):
        repair(ctx, model)
        version = resolve(ctx, model, ref)
        if action == "promote":
            policy.check_move(version.version, version.stage, to_stage)
        elif version.stage == to_stage:
            raise UserError(f"version {version.version} is already in {to_stage}")

        def entry(evidence: dict[str, Any], outcome: str, forced: bool = False) -> Entry:
            return Entry(
                action,
                model,
                version.version,
                version.stage,
                to_stage,
                ctx.actor,
                reason,
                evidence,
                forced=forced,
                outcome=outcome,
            )

        if allowed is not None and ctx.actor not in allowed:
            ctx.store.append(entry({"permitted": allowed}, "denied"))
            raise Refused(
                f"{ctx.actor} may not move versions of {model} to {to_stage} "
                f"(permitted: {', '.join(allowed) or 'nobody'})"
            )
        exclusive = policy.exclusive(to_stage)
        holder_no = ctx.store.holders(model).get(to_stage) if exclusive else None
        holder = ctx.store.version(model, holder_no) if holder_no else None
        gate = ctx.params.gates.get(to_stage, GateParams(signature=False, integrity=False))
        ctx.connect_mlflow()
        results: list[gates.GateResult] = []
        if action != "archive" and needs_evidence(gate):
            mine, theirs = gather(ctx, version, holder, gate)
            results = gates.evaluate(
                gate,
                ctx.primary_metric,
                mine.evidence,
                theirs.evidence if theirs else None,
                rollback=action == "rollback",
            )
        ok = gates.passed(results)
        outcome = Outcome(
            model,
            version.version,
            version.stage,
            to_stage,
            holder_no,
            results,
            ok,
            force and not ok,
            dry_run,
            action,
        )
        if dry_run:
            return outcome
        evidence = {"gates": gates.as_evidence(results), "passed": ok, "displaced": holder_no}
        if not ok and not force:
            ctx.store.append(entry(evidence, "refused"))
            mlflow_port.set_tags(
                model,
                version.version,
                {f"{GATE_TAG}.{to_stage}": json.dumps(evidence, sort_keys=True)[:5000]},
            )
            failed = next(r for r in results if not r.passed)
            raise Refused(
                f"{model} version {version.version} → {to_stage} refused by gate "
                f"'{failed.gate}': {failed.value} (needs {failed.threshold})"
            )
        change = Change(
            model,
            version.version,
            version.stage,
            to_stage,
            exclusive,
            holder_no,
            ctx.params.replaced_to,
        )
        done = entry(evidence, "done", forced=outcome.forced)
        op_id = ctx.store.add_intent(change, done)
        _crash_point("after-intent")
        if results:
            mlflow_port.set_tags(
                model,
                version.version,
                {f"{GATE_TAG}.{to_stage}": json.dumps(evidence, sort_keys=True)[:5000]},
            )
        _apply_mlflow(change, version)
        _crash_point("after-mlflow")
        ctx.store.apply(change, done, op_id)
        _crash_point("after-ledger")
        return outcome


def previous_holder(ctx: Context, model: str, stage: str) -> int:
    """The version that held `stage` before its current holder, from the ledger."""
    current = ctx.store.holders(model).get(stage)
    if current is None:
        raise UserError(f"model {model}: no version holds {stage}, nothing to roll back")
    # The holders of `stage` as a stack: a promotion pushes, a rollback pops.
    stack: list[int] = []
    for entry in ctx.store.history(model):
        if entry.outcome not in ("done", "repaired") or entry.version is None:
            continue
        if entry.to_stage != stage or entry.action not in ("promote", "rollback", "sync"):
            continue
        if entry.action == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != entry.version:
            stack.append(entry.version)
    while stack and stack[-1] == current:
        stack.pop()
    if not stack:
        raise UserError(f"model {model}: {stage} has had no other holder to roll back to")
    return stack[-1]

"""Stage changes: promote (through the gates), rollback and archive.

Each change runs under the model's lock in the platform database: settle what an
earlier command left half done (`registry.repair`), resolve the version, ask the
tracking store whether the user may make the change (`registry.store_access`), evaluate
the gates, then in three steps: record an intent (the decided change, its evidence and
what the store granted), bring MLflow's aliases and stage tags to the new state, and in
one transaction update the holders, append the ledger entry and drop the intent. A
refusal by the store undoes what the command already wrote, drops the intent and is
recorded in the ledger; a command killed between the steps leaves the intent, which
the next command on that model completes or undoes.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from mlops.errors import UserError, first_line
from mlops.params import GateParams
from registry import gates, gathering, guards, mlflow_port, stage_writes
from registry.card import render_card
from registry.context import Context
from registry.db.store import Change, Entry, Version, lock_name
from registry.queries import missing_model, unheld_stage
from registry.registration import sync
from registry.repair import forward_target, repair
from registry.stages import Ref

log = logging.getLogger("mlops.registry")
CRASH_ENV = "MLOPS_REGISTRY_CRASH_AT"
Progress = Callable[[str], None]


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
    emptied: list[str] = field(default_factory=list)


def _crash_point(name: str) -> None:
    # Fault injection for the crash tests: SIGKILL ourselves between two steps.
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _quiet(_text: str) -> None:
    return None


def resolve(ctx: Context, model: str, ref: Ref) -> Version:
    """The version a reference names (`3` or `@production`), synced from MLflow when the
    store has not seen it (or its model) yet. One line naming what is missing if not."""
    if not ctx.store.has_model(model):
        _sync(ctx, model)  # registered outside mlops, or before the store existed?
        if not ctx.store.has_model(model):
            raise missing_model(ctx, model)
    number = ref.version
    if ref.stage is not None:
        number = ctx.store.holders(model).get(ref.stage)
        if number is None:
            raise unheld_stage(ctx, model, ref.stage)
    assert number is not None
    found = ctx.store.version(model, number)
    if found is None:
        refused = _sync(ctx, model)
        found = ctx.store.version(model, number)
        mine = [line for line in refused if f" version {number}:" in line]
        if found is None and mine:
            raise UserError(mine[0])
    if found is None:
        raise UserError(f"model {model}: no version {number}")
    return found


def _sync(ctx: Context, model: str) -> list[str]:
    """Record what MLflow has of `model`; why any version was not recorded (one line
    each: its files lie outside the artifact store)."""

    refused: list[str] = []
    sync(ctx, model, refused)
    return refused


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
    progress: Progress | None = None,
) -> Outcome:
    """Move a version to `to_stage` through that stage's gates (`force`: record an
    override instead of refusing). `action` is promote, rollback or archive. A dry run
    evaluates the gates on the registry as it is and writes nothing (no lock, no repair).
    `progress(text)` is told each step that takes a while."""
    step = progress or _quiet
    ctx.policy.check_stage(to_stage)
    if force and not reason.strip():
        raise UserError("--force needs --reason: an override is recorded with its reason")
    with nullcontext() if dry_run else ctx.store.lock(lock_name(model)):
        if not dry_run:
            repair(ctx, model, step)
        move = _Move(ctx, resolve(ctx, model, ref), to_stage, action, reason)
        move.check()
        emptied = guards.archive_guard(ctx, move.version, force) if action == "archive" else []
        guards.check_permitted(ctx, model, to_stage, move.entry, record=not dry_run)
        access = None
        if not dry_run:  # quick, and a refusal here stays one line: no progress yet
            access = guards.check_store(ctx, move.version, to_stage, move.entry)
        holder_no = ctx.store.holders(model).get(to_stage) if move.exclusive else None
        results = _gates(move, holder_no, step)
        ok = gates.passed(results)
        forced = force and (not ok or bool(emptied))
        version = move.version
        outcome = Outcome(model, version.version, version.stage, to_stage, holder_no, results,
                          ok, forced, dry_run, action, emptied)  # fmt: skip
        if access is not None:
            _apply(move, outcome, access.as_evidence(), force, step)
        return outcome


@dataclass(frozen=True)
class _Move:
    """One stage change being decided: the version, where it goes, why, and by whom."""

    ctx: Context
    version: Version
    to_stage: str
    action: str
    reason: str

    @property
    def exclusive(self) -> bool:
        return self.ctx.policy.exclusive(self.to_stage)

    def check(self) -> None:
        """The move is one the policy allows (one line if not)."""
        version, to_stage = self.version, self.to_stage
        if self.action == "promote":
            self.ctx.policy.check_move(version.version, version.stage, to_stage)
        elif version.stage == to_stage:
            raise UserError(f"version {version.version} is already in {to_stage}")

    def entry(self, evidence: dict[str, Any], outcome: str, forced: bool = False) -> Entry:
        """The ledger entry of this move with `evidence` and `outcome`."""
        v = self.version
        return Entry(self.action, v.model, v.version, v.stage, self.to_stage, self.ctx.actor,
                     self.reason, evidence, forced=forced, outcome=outcome)  # fmt: skip


def _gates(move: _Move, holder_no: int | None, step: Progress) -> list[gates.GateResult]:
    """The gates of the target stage evaluated on the evidence they need (none to
    archive, or when the stage has no gate that needs evidence)."""
    ctx = move.ctx
    gate = ctx.params.gates.get(move.to_stage, GateParams(signature=False, integrity=False))
    ctx.connect_mlflow()
    if move.action == "archive" or not gathering.needs_evidence(gate):
        return []
    holder = ctx.store.version(move.version.model, holder_no) if holder_no else None
    mine, theirs = gathering.gather(ctx, move.version, holder, gate, step)
    step(f"evaluating the gates of {move.to_stage}")
    return gates.evaluate(
        gate,
        ctx.primary_metric,
        mine.evidence,
        theirs.evidence if theirs else None,
        rollback=move.action == "rollback",
    )


def _apply(
    move: _Move, outcome: Outcome, store: dict[str, Any], force: bool, step: Progress
) -> None:
    """Record the decision: refused by the gates (unless forced), or done in MLflow, the
    store and the ledger, and in the cards of the versions it moved."""
    ctx, version = move.ctx, move.version
    evidence: dict[str, Any] = {
        "gates": gates.as_evidence(outcome.gates),
        "passed": outcome.passed,
        "displaced": outcome.displaced,
        "store": store,
    }
    if outcome.emptied:
        evidence["emptied"] = outcome.emptied
    if not outcome.passed and not force:
        guards.refuse_by_gates(ctx, move.entry(evidence, "refused"), outcome.gates)
    change = Change(version.model, version.version, version.stage, move.to_stage,
                    move.exclusive, outcome.displaced, ctx.params.replaced_to)  # fmt: skip
    done = move.entry(evidence, "done", forced=outcome.forced)
    step(f"moving v{version.version} to {move.to_stage} in MLflow")
    _commit(ctx, change, done, bool(outcome.gates))
    _refresh_cards(ctx, change)


def _refresh_cards(ctx: Context, change: Change) -> None:
    """The model cards of the versions a change moved show their new stage and history.
    The change is done: a card that cannot be written now catches up at the next one."""
    from mlflow.exceptions import MlflowException

    moved = {change.version} | ({change.displaced} if change.displaced is not None else set())
    history = ctx.store.history(change.model, versions=moved)
    for number in sorted(moved):
        record = ctx.store.version(change.model, number)
        if record is None:
            continue
        try:
            mlflow_port.set_description(change.model, record.version, render_card(record, history))
        except (MlflowException, OSError) as exc:
            why = first_line(exc)[:200]
            log.warning("model %s version %s: card not updated: %s", change.model, number, why)


def _commit(ctx: Context, change: Change, done: Entry, gate_tag: bool) -> None:
    """Intent, MLflow, then holders + ledger + intent dropped in one transaction."""
    op_id = ctx.store.add_intent(change, done)
    _crash_point("after-intent")
    target = forward_target(ctx, change, done.evidence if gate_tag else None)
    try:
        stage_writes.reach(change.model, target)
    except stage_writes.StoreRefused as exc:
        guards.store_refused(ctx, op_id, done, exc)
    _crash_point("after-mlflow")
    ctx.store.apply(change, done, op_id)
    _crash_point("after-ledger")


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

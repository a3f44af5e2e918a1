"""Finishing, or undoing, a stage change that a command left half done.

A stage change records an intent (the decided change, its evidence, who decided it and
what the tracking store granted them) before it writes to MLflow. A command killed
between its steps leaves the intent behind; the next command that changes the model
(under its lock) settles it. Completing it is safe only when that completes what its
own actor was allowed to do, so a repair rolls an intent forward only when:

- its actor is the one repairing (same `MLOPS_USER`/OS user and same user of the
  tracking store): a crash of one's own command, finished with one's own rights; or
- the tracking store was asked, just before the intent was recorded, and granted its
  actor the rights the change needs (or the store has no users at all) — so the gates
  were evaluated, or overridden with a reason, by someone allowed to;

and in both cases only while the registry is still as the intent found it (the version
in the stage it left, the stage's holder the one it displaced). Everything else — an
intent the store refused, one whose actor's rights are unknown (written by an older
mlops, or a server whose auth could not be asked), one overtaken by another change —
is rolled back instead: MLflow's aliases and stage tags are put back to what the ledger
shows and the ledger records the change as `abandoned`. A repair never does more than
the ledger already shows or the original actor was granted; what it does is written to
the ledger under the repairer's name.

The platform database itself is trusted: whoever can write its tables can write the
ledger directly (grant it to the platform's services, not to every user).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from mlops.params import NO_STAGE
from registry import stage_writes, store_access
from registry.context import Context
from registry.db.store import Change, Intent
from registry.mlflow_port import STAGE_TAG
from registry.stage_writes import StoreRefused, Target
from registry.stages import Refused

GATE_TAG = "mlops.gates"
WHAT = {"promote": "promotion", "rollback": "rollback", "archive": "archive"}


@dataclass(frozen=True)
class Settled:
    """What a repair did with one intent."""

    model: str
    version: int
    to_stage: str
    action: str
    actor: str
    outcome: str  # "repaired" (completed) or "abandoned" (undone)
    why: str
    writes: list[str]


def describe(intent: Intent) -> str:
    """`the promotion of v1 → production by bob` (for messages)."""
    c, e = intent.change, intent.entry
    return f"the {WHAT.get(e.action, e.action)} of v{c.version} → {c.to_stage} by {e.actor}"


def vacated(ctx: Context, change: Change) -> str | None:
    """The exclusive stage (alias) the version leaves, if any."""
    stage = change.from_stage
    if stage not in (change.to_stage, NO_STAGE) and ctx.policy.exclusive(stage):
        return stage
    return None


def forward_target(ctx: Context, change: Change, gate_evidence: dict[str, Any] | None) -> Target:
    """MLflow as the change leaves it: aliases moved, stage tags set, the gate evidence
    on the version."""
    aliases: dict[str, int | None] = {}
    left = vacated(ctx, change)
    if left is not None:
        aliases[left] = None
    if change.exclusive:
        aliases[change.to_stage] = change.version
    tags: dict[tuple[int, str], str | None] = {(change.version, STAGE_TAG): change.to_stage}
    if change.displaced is not None and change.displaced != change.version:
        tags[(change.displaced, STAGE_TAG)] = change.displaced_to
    if gate_evidence is not None and gate_evidence.get("gates"):
        text = json.dumps(gate_evidence, sort_keys=True)[:5000]
        tags[(change.version, f"{GATE_TAG}.{change.to_stage}")] = text
    return Target(aliases, tags)


def ledger_target(ctx: Context, change: Change) -> Target:
    """MLflow as the ledger shows it, for what `change` touches."""
    holders = ctx.store.holders(change.model)
    aliases: dict[str, int | None] = {}
    if change.exclusive:
        aliases[change.to_stage] = holders.get(change.to_stage)
    left = vacated(ctx, change)
    if left is not None:
        aliases[left] = holders.get(left)
    tags: dict[tuple[int, str], str | None] = {}
    for number in {change.version, change.displaced} - {None}:
        assert number is not None
        found = ctx.store.version(change.model, number)
        if found is not None:
            tags[(number, STAGE_TAG)] = found.stage
    return Target(aliases, tags)


def _verdict(ctx: Context, intent: Intent, me: store_access.Access) -> tuple[bool, str]:
    """(roll forward?, why)."""
    c = intent.change
    if intent.refused:
        return False, "the tracking store refused it"
    found = ctx.store.version(c.model, c.version)
    holder = ctx.store.holders(c.model).get(c.to_stage) if c.exclusive else c.displaced
    if found is None or found.stage != c.from_stage or holder != c.displaced:
        return False, "the registry changed since it was decided"
    checked = intent.entry.evidence.get("store") or {}
    if intent.entry.actor == ctx.actor and checked.get("user", me.user) == me.user:
        return True, "its own actor completes it"
    if checked.get("permission") not in (None, store_access.UNKNOWN):
        return True, f"the tracking store granted {intent.entry.actor} {checked['permission']}"
    return False, f"nothing shows that {intent.entry.actor} was allowed to make it"


def _refused(ctx: Context, intent: Intent, doing: str, exc: StoreRefused) -> Refused:
    """Record a repair the store refused; the intent stays (flagged when the writes
    could not all be undone)."""
    entry = replace(
        intent.entry,
        actor=ctx.actor,
        reason=f"could not {doing} {describe(intent)}",
        evidence={"store_refused": exc.detail, "intent": intent.op_id},
        forced=False,
        outcome="denied",
    )
    if exc.not_undone:
        ctx.store.flag_refused(intent.op_id, entry)
    else:
        ctx.store.append(entry)
    return Refused(
        f"model {intent.model}: {describe(intent)} is pending and the tracking store "
        f"refused to let you {doing} it: {exc.detail}; it stays pending"
    )


def settle(ctx: Context, intent: Intent, me: store_access.Access) -> Settled:
    """Complete or undo one intent (call under the model's lock, MLflow connected)."""
    forward, why = _verdict(ctx, intent, me)
    c, e = intent.change, intent.entry
    if forward:
        try:
            writes = stage_writes.reach(c.model, forward_target(ctx, c, e.evidence))
        except StoreRefused as exc:
            raise _refused(ctx, intent, "complete", exc) from None
        evidence = e.evidence | {"repaired_by": ctx.actor, "repair": why}
        ctx.store.apply(c, replace(e, outcome="repaired", evidence=evidence), intent.op_id)
        outcome = "repaired"
    else:
        try:
            writes = stage_writes.reach(c.model, ledger_target(ctx, c))
        except StoreRefused as exc:
            raise _refused(ctx, intent, "undo", exc) from None
        entry = replace(
            e,
            actor=ctx.actor,
            reason=f"undid {describe(intent)}: {why}",
            evidence={"intent": asdict(e), "undone": [w.describe() for w in writes]},
            forced=False,
            outcome="abandoned",
        )
        ctx.store.settle(intent.op_id, entry)
        outcome = "abandoned"
    return Settled(
        c.model, c.version, c.to_stage, e.action, e.actor, outcome, why,
        [w.describe() for w in writes],
    )  # fmt: skip


def repair(
    ctx: Context, model: str, progress: Callable[[str], None] | None = None
) -> list[Settled]:
    """Settle every intent left on `model` (call under its lock)."""
    pending = ctx.store.intents(model)
    if not pending:
        return []
    if progress is not None:
        progress(f"settling {len(pending)} unfinished change(s) of {model}")
    ctx.connect_mlflow()
    me = store_access.check(ctx.settings.tracking_uri, model)
    return [settle(ctx, intent, me) for intent in pending]

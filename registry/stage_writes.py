"""The MLflow side of a stage change: bring a model's aliases and version tags to a target
state, and undo what was done when the store refuses a write.

The writes are computed as the difference between what MLflow holds now and the target
(so replaying a change, or undoing one that never reached MLflow, writes nothing), and
made in the order that keeps an undo possible: aliases removed first (the write that
needs the most rights: a refusal there has changed nothing), then aliases set, then tags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from registry import mlflow_port
from registry.store_access import is_refusal, refusal_text

AliasKey = str
TagKey = tuple[int, str]


@dataclass(frozen=True)
class Target:
    """What MLflow should hold: alias → version (None: no such alias), and
    (version, tag key) → value (None: no such tag). Keys not named are left alone."""

    aliases: dict[AliasKey, int | None]
    tags: dict[TagKey, str | None]


@dataclass(frozen=True)
class Step:
    """One write: an alias or a tag from `old` to `new` (None: absent)."""

    alias: str | None
    tag: TagKey | None
    old: int | str | None
    new: int | str | None

    def describe(self) -> str:
        """`alias production v2 → v1` or `v1 tag mlops.stage staging → production`."""
        if self.alias is not None:
            old = f"v{self.old}" if self.old is not None else "unset"
            new = f"v{self.new}" if self.new is not None else "unset"
            return f"alias {self.alias} {old} → {new}"
        assert self.tag is not None
        before = str(self.old)[:40] if self.old is not None else "unset"
        after = str(self.new)[:40] if self.new is not None else "unset"
        return f"v{self.tag[0]} tag {self.tag[1]} {before} → {after}"


class StoreRefused(Exception):
    """The store refused a write; what was done before it has been undone, except the
    steps listed in `not_undone` (their undo was refused too)."""

    def __init__(self, detail: str, step: Step, not_undone: list[Step]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.step = step
        self.not_undone = not_undone


def current(model: str, target: Target) -> Target:
    """What MLflow holds now for the keys of `target`."""
    aliases = mlflow_port.aliases(model)
    tags: dict[TagKey, str | None] = {}
    by_version: dict[int, dict[str, str]] = {}
    for version, key in target.tags:
        if version not in by_version:
            found = mlflow_port.get_version(model, version)
            by_version[version] = found.tags if found is not None else {}
        tags[(version, key)] = by_version[version].get(key)
    return Target({a: aliases.get(a) for a in target.aliases}, tags)


def plan(now: Target, target: Target) -> list[Step]:
    """The writes from `now` to `target`: alias removals, alias moves, then tags."""
    removals: list[Step] = []
    moves: list[Step] = []
    tags: list[Step] = []
    for alias, version in target.aliases.items():
        old = now.aliases.get(alias)
        if old != version:
            (removals if version is None else moves).append(Step(alias, None, old, version))
    for key, value in target.tags.items():
        old_tag = now.tags.get(key)
        if old_tag != value:
            tags.append(Step(None, key, old_tag, value))
    return removals + moves + tags


def _write(model: str, step: Step, to: int | str | None) -> None:
    from mlflow.exceptions import MlflowException

    c = mlflow_port.client()
    if step.alias is not None:
        if to is not None:
            c.set_registered_model_alias(model, step.alias, str(to))
            return
        try:
            c.delete_registered_model_alias(model, step.alias)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc.error_code):
                raise
        return
    assert step.tag is not None
    version, key = step.tag
    if to is not None:
        c.set_model_version_tag(model, str(version), key, str(to))
    else:
        c.delete_model_version_tag(model, str(version), key)


def reach(
    model: str,
    target: Target,
    before_each: Callable[[int], None] | None = None,
) -> list[Step]:
    """Bring MLflow to `target`; return the writes made. On a refusal by the store, undo
    the writes already made (newest first) and raise `StoreRefused`. Other failures
    (an outage) propagate with the writes as they are: replaying is idempotent.
    `before_each(i)` runs before the i-th write (the crash tests' hook)."""
    steps = plan(current(model, target), target)
    done: list[Step] = []
    for i, step in enumerate(steps):
        if before_each is not None:
            before_each(i)
        try:
            _write(model, step, step.new)
        except Exception as exc:
            if not is_refusal(exc):
                raise
            raise StoreRefused(refusal_text(exc), step, undo(model, done)) from None
        done.append(step)
    return done


def undo(model: str, done: list[Step]) -> list[Step]:
    """Put back what `done` changed, newest first; return the steps whose undo the store
    refused too (an outage propagates)."""
    failed = []
    for step in reversed(done):
        try:
            _write(model, step, step.old)
        except Exception as exc:
            if not is_refusal(exc):
                raise
            failed.append(step)
    return failed

"""Names, versions, stage references and the stage policy: pure checks, no I/O.

Every check raises `UserError` (exit 2) with one line naming the bad value; `Refused`
(exit 1) is a stage change that a gate or a permission stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlops.errors import MlopsError, UserError
from mlops.params import NO_STAGE, RegistryParams


class Refused(MlopsError):
    """A stage change refused by a gate or a permission (exit 1); the ledger records it."""

    exit_code = 1


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")


def check_model_name(name: str) -> str:
    """A model name: a letter, then letters, digits, `_`, `.`, `-` (≤ 63), no `..`."""
    if not _NAME.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise UserError(
            f"model name {shown!r}: use a letter then letters, digits, '_', '.', '-' "
            "(at most 63, no '..')"
        )
    return name


def parse_version(text: str) -> int:
    """A version number: a positive integer written plainly (`1`, `12`)."""
    if not _VERSION.fullmatch(text):
        raise UserError(f"version {text!r}: expected a positive whole number such as 1 or 12")
    return int(text)


@dataclass(frozen=True)
class Ref:
    """A version given by number, or by the stage that holds it (`@production`)."""

    version: int | None = None
    stage: str | None = None

    def __str__(self) -> str:
        return f"@{self.stage}" if self.stage else str(self.version)


def parse_ref(text: str, policy: StagePolicy | None = None) -> Ref:
    """`3` or `@staging` (checked against the policy's stages when one is given)."""
    if text.startswith("@"):
        stage = text[1:]
        if policy is not None:
            policy.check_stage(stage, exclusive=True)
        elif not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", stage):
            raise UserError(f"stage {stage!r}: not a valid stage name")
        return Ref(stage=stage)
    return Ref(version=parse_version(text))


class StagePolicy:
    """The configured stages, which are exclusive (held through an alias) and which
    moves are allowed."""

    def __init__(self, params: RegistryParams) -> None:
        self.params = params
        self.stages: tuple[str, ...] = tuple(params.stages)
        self.archive = params.archive_stage
        self.moves = params.allowed_transitions()

    def exclusive(self, stage: str) -> bool:
        """True for stages held by one version at a time (an MLflow alias)."""
        return stage not in (NO_STAGE, self.archive)

    def check_stage(self, stage: str, exclusive: bool = False) -> str:
        """`stage` is configured (and exclusive, if asked)."""
        if stage != NO_STAGE and stage not in self.stages:
            known = ", ".join(self.stages)
            raise UserError(f"stage {stage!r}: unknown (configured stages: {known})")
        if exclusive and not self.exclusive(stage):
            raise UserError(f"stage {stage!r}: is not held by a single version")
        return stage

    def check_move(self, version: int, current: str, target: str) -> None:
        """Refuse a move the policy does not allow, or a move to the stage already held."""
        self.check_stage(target)
        if current == target:
            raise UserError(f"version {version} is already in {target}")
        allowed = self.moves.get(current, set())
        if target not in allowed:
            options = ", ".join(sorted(allowed)) or "nowhere"
            raise UserError(
                f"version {version}: {current} → {target} is not an allowed transition "
                f"(from {current}: {options})"
            )

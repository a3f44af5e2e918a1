"""Fine-tuning from a registered version (`train.init_from: MODEL@STAGE|VERSION`): the
parent's files are downloaded and verified like any load (every file against its
manifest, the weights by sha256, rebuilt from safetensors, never a pickle), checked to fit
the new model, and copied into it before training. With another class set (or task) the
head is left freshly initialised; `train.freeze` names layer groups that stay as the
parent left them. The new version's lineage names its parent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.errors import UserError
from mlops.models import ModelSpec
from registry.context import Context
from registry.loading import load, parse_target, resolve

if TYPE_CHECKING:
    from torch import nn

TAG_PREFIX = "mlops.parent."


@dataclass(frozen=True)
class Parent:
    """A verified parent version: its name, number, sha256, spec and weights."""

    target: str
    model: str
    version: int
    sha256: str
    spec: ModelSpec
    state: dict[str, Any]

    def tags(self, head: str) -> dict[str, str]:
        """The lineage facts a child records (`head`: kept or replaced)."""
        return {
            f"{TAG_PREFIX}model": self.model,
            f"{TAG_PREFIX}version": str(self.version),
            f"{TAG_PREFIX}sha256": self.sha256,
            f"{TAG_PREFIX}head": head,
        }


def load_parent(ctx: Context, target: str) -> Parent:
    """The version `target` names (`train.init_from`), downloaded and verified."""
    name, ref = parse_target(target)
    version = resolve(ctx, name, ref)
    with tempfile.TemporaryDirectory(prefix="mlops-init-from-") as tmp:
        loaded = load(ctx, version, Path(tmp))
        state = {k: v.detach().clone() for k, v in loaded.module.state_dict().items()}
    return Parent(target, version.model, version.version, version.sha256, loaded.spec, state)


def fit(parent: Parent, spec: ModelSpec) -> ModelSpec:
    """`spec` for a model that starts from `parent`: the same network and inputs, the
    parent's normalisation (its weights were trained on inputs standardised so); a
    `UserError` naming what differs."""
    key = f"train.init_from = {parent.target}"
    what = f"{parent.model} version {parent.version}"
    p = parent.spec
    if p.family != spec.family:
        raise UserError(f"{key}: {what} is a {p.family}, train.model.family is {spec.family}")
    if p.hyper != spec.hyper:
        differ = sorted(k for k in p.hyper.keys() | spec.hyper.keys()
                        if p.hyper.get(k) != spec.hyper.get(k))  # fmt: skip
        shown = ", ".join(f"{k} {p.hyper.get(k)} (here {spec.hyper.get(k)})" for k in differ)
        raise UserError(f"{key}: {what} has other {p.family} hyperparameters: {shown}")
    if p.input_shape != spec.input_shape or p.image != spec.image:
        raise UserError(
            f"{key}: {what} reads inputs of shape {p.input_shape} {p.image or ''}, the data "
            f"here have shape {spec.input_shape} {spec.image or ''}".replace("  ", " ")
        )
    if not spec.image and p.features and p.features != spec.features:
        raise UserError(f"{key}: {what} reads other feature columns than the data here")
    return replace(spec, mean=list(p.mean), std=list(p.std))


def head_kept(parent: Parent, spec: ModelSpec) -> bool:
    """Whether the parent's head fits: the same classes (or both regressions)."""
    return parent.spec.task == spec.task and parent.spec.classes == spec.classes


def starter(parent: Parent, spec: ModelSpec, freeze: list[str]) -> Callable[[nn.Module], nn.Module]:
    """What turns a freshly built model into one that starts from `parent`: its weights
    copied (the head only when it fits; a regression's target scale stays the new data's),
    the `freeze` groups left untrainable. Unknown group names are refused."""
    from mlops.nets import layer_groups

    keep_head = head_kept(parent, spec)

    def start(model: nn.Module) -> nn.Module:
        groups = layer_groups(model)
        unknown = [g for g in freeze if g != "body" and g not in groups]
        if unknown:
            raise UserError(
                f"train.freeze: no layer group {unknown[0]!r} in a {spec.family} "
                f"(its groups: body, {', '.join(groups)})"
            )
        head = set(groups.get("head", []))
        state = model.state_dict()
        for key, value in parent.state.items():
            if key.startswith("2.") or (key in head and not keep_head):
                continue
            state[key] = value.to(state[key].device, state[key].dtype)
        model.load_state_dict(state)
        frozen = {n for g, names in groups.items() for n in names
                  if g in freeze or ("body" in freeze and g != "head")}  # fmt: skip
        for name, param in model.named_parameters():
            if name in frozen:
                param.requires_grad_(False)
        return model

    return start

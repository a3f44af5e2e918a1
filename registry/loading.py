"""Loading a registered version for use outside the registry (export, serving): resolve
`MODEL@STAGE` or `MODEL VERSION`, download its files, verify the weights' sha256 against
the registration record, and rebuild the module from safetensors (never a pickle)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.errors import DataError, UserError
from registry.db.store import Version
from registry.stages import Ref, parse_ref

if TYPE_CHECKING:
    from torch import nn

    from mlops.models import ModelSpec
    from registry.context import Context


@dataclass(frozen=True)
class Loaded:
    """A verified version: its record, its downloaded folder, the module (eval mode)."""

    version: Version
    directory: Path
    module: nn.Module
    spec: ModelSpec

    @property
    def sha256(self) -> str:
        return self.version.sha256


def parse_target(text: str) -> tuple[str, Ref]:
    """`digits@production`, `digits@3` or `digits:3` → (model, reference); one line if not."""
    found = re.fullmatch(r"([A-Za-z0-9][\w.-]*)[@:]([\w-]+)", text.strip())
    if not found:
        raise UserError(f"{text!r}: expected MODEL@STAGE or MODEL@VERSION (e.g. digits@production)")
    name, ref = found.groups()
    return name, parse_ref(ref if ref.isdigit() else f"@{ref}")


def resolve(ctx: Context, name: str, ref: Ref) -> Version:
    """The version `ref` names now (a stage reads its current holder)."""
    from registry.promotion import resolve as resolve_ref

    ctx.connect_mlflow()
    return resolve_ref(ctx, name, ref)


def fetch(ctx: Context, version: Version, dest: Path) -> tuple[Path, ModelSpec]:
    """Download `version` into `dest` and verify its weights' sha256; its folder and spec.
    Imports neither torch nor the module: the weights are checked, not loaded."""
    from mlops.io import file_digest, read_json
    from mlops.models import ModelSpec
    from registry import mlflow_port
    from registry.evaluation import SPEC, WEIGHTS

    ctx.connect_mlflow()
    directory = mlflow_port.download(version.model, version.version, dest)
    weights, spec_file = directory / WEIGHTS, directory / SPEC
    what = f"model {version.model} version {version.version}"
    if not weights.is_file() or not spec_file.is_file():
        raise DataError(f"{what}: no safetensors weights in its artifacts")
    actual = file_digest(weights)
    if actual != version.sha256:
        raise DataError(
            f"{what}: weights sha256 {actual[:12]} differs from the registered "
            f"{version.sha256[:12]}; refusing to load them"
        )
    try:
        return directory, ModelSpec(**read_json(spec_file))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: {exc}") from None


def load(ctx: Context, version: Version, dest: Path) -> Loaded:
    """Download `version` into `dest`, verify its weights and rebuild the module."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mlops.models import build_model
    from registry.evaluation import WEIGHTS

    directory, spec = fetch(ctx, version, dest)
    try:
        module = build_model(spec)
        module.load_state_dict(load_file(str(directory / WEIGHTS)))
    except (SafetensorError, TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"model {version.model} version {version.version}: {exc}") from None
    module.eval()
    return Loaded(version, directory, module, spec)

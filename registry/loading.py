"""Loading a registered version for use outside the registry (export, serving, drift):
resolve `MODEL@STAGE` or `MODEL VERSION`, download its files (never from outside the
artifact store), verify every file against the manifest recorded at registration, and
rebuild the module from safetensors (never a pickle). The version's own spec says how to
read a request: nothing of the workspace is consulted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from mlops.errors import DataError, UserError
from mlops.io import file_digest, read_json
from mlops.models import ModelSpec, build_model
from registry import integrity, mlflow_port
from registry.db.store import Version
from registry.integrity import model_files
from registry.promotion import resolve as resolve_ref
from registry.stages import Ref, parse_ref

if TYPE_CHECKING:
    from torch import nn

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

    @property
    def weights(self) -> Path:
        """The verified safetensors file."""

        return model_files(self.directory)[0]


def parse_target(text: str) -> tuple[str, Ref]:
    """`digits@production`, `digits@3` or `digits:3` → (model, reference); one line if not."""
    found = re.fullmatch(r"([A-Za-z0-9][\w.-]*)[@:]([\w-]+)", text.strip())
    if not found:
        raise UserError(f"{text!r}: expected MODEL@STAGE or MODEL@VERSION (e.g. digits@production)")
    name, ref = found.groups()
    return name, parse_ref(ref if ref.isdigit() else f"@{ref}")


def resolve(ctx: Context, name: str, ref: Ref) -> Version:
    """The version `ref` names now (a stage reads its current holder)."""

    ctx.connect_mlflow()
    return resolve_ref(ctx, name, ref)


def verify(version: Version, directory: Path) -> tuple[Path, Path]:
    """Check every file of a downloaded version against its manifest (else the digest
    recorded at registration) and the weights against their sha256; the weights and spec
    files. A `DataError` naming the first file that differs: nothing of it is read."""

    what = f"model {version.model} version {version.version}"
    integrity.check(what, integrity.recorded(version.info), version.artifact_sha256, directory)
    weights, spec_file = integrity.model_files(directory)
    if not weights.is_file() or not spec_file.is_file():
        raise DataError(f"{what}: no safetensors weights in its artifacts")
    actual = file_digest(weights)
    if actual != version.sha256:
        raise DataError(
            f"{what}: weights sha256 {actual[:12]} differs from the registered "
            f"{version.sha256[:12]}; refusing to load them"
        )
    return weights, spec_file


def read_spec(version: Version, spec_file: Path) -> ModelSpec:
    """The spec of a verified version (feature names, classes, normalisation, task)."""

    try:
        return ModelSpec(**read_json(spec_file))
    except (TypeError, ValueError) as exc:
        raise DataError(f"model {version.model} version {version.version}: {exc}") from None


def fetch(ctx: Context, version: Version, dest: Path) -> tuple[Path, ModelSpec]:
    """Download `version` into `dest` and verify every file; its folder and spec.
    Imports neither torch nor the module: the files are checked, not loaded."""

    ctx.connect_mlflow()
    directory = mlflow_port.download(version.model, version.version, dest)
    _weights, spec_file = verify(version, directory)
    return directory, read_spec(version, spec_file)


def load(ctx: Context, version: Version, dest: Path) -> Loaded:
    """Download `version` into `dest`, verify its files and rebuild the module."""
    directory, spec = fetch(ctx, version, dest)
    return Loaded(version, directory, build(version, directory, spec), spec)


def build(version: Version, directory: Path, spec: ModelSpec) -> nn.Module:
    """The module of a version `fetch` downloaded and verified, in eval mode."""
    from safetensors.torch import load_file

    try:
        module = build_model(spec)
        module.load_state_dict(load_file(str(model_files(directory)[0])))
    except (SafetensorError, TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"model {version.model} version {version.version}: {exc}") from None
    return module.eval()

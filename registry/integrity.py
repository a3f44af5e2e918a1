"""What makes a downloaded version trustworthy: every file it holds has the sha256 recorded
at registration (its manifest), and it came from inside the artifact store.

The manifest maps each file's path inside the version's folder to its sha256; it is
recorded on the version (tag `mlops.manifest`, and in the registry's own store) when the
version is registered. Every loader — serving, export, compare, gates, drift — calls
`verify` before it reads a byte of the folder, so an edited class list, normalisation or
signature is refused as surely as edited weights. Pure apart from reading files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops.errors import DataError
from mlops.io import file_digest

MANIFEST_TAG = "mlops.manifest"
# Written by MLflow when a `models:/` URI is downloaded: not part of what was logged.
GENERATED = frozenset({"registered_model_meta"})
# Where a version keeps its weights and spec: `artifacts/` (pyfunc versions), or
# `extra_files/` (versions logged with the PyTorch flavor before).
LAYOUTS = (Path("artifacts"), Path("extra_files"))
WEIGHTS_NAME = "model.safetensors"
SPEC_NAME = "model.json"


def manifest(directory: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under `directory` (MLflow's own additions at
    download time left out)."""
    files = (p for p in directory.rglob("*") if p.is_file() and p.name not in GENERATED)
    return {p.relative_to(directory).as_posix(): file_digest(p) for p in sorted(files)}


def digest(files: Mapping[str, str]) -> str:
    """One sha256 over a manifest, order-independent (the version's `artifact_sha256`)."""
    lines = "".join(f"{path}\0{sha}\n" for path, sha in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def encode(files: Mapping[str, str]) -> str:
    """A manifest as the compact JSON stored in the tag."""
    return json.dumps(dict(sorted(files.items())), separators=(",", ":"))


def recorded(info: Mapping[str, Any]) -> dict[str, str] | None:
    """The manifest a version's record holds (None for versions registered before
    manifests were recorded, or an unreadable one)."""
    raw = info.get(MANIFEST_TAG)
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if not isinstance(raw, str) or not raw:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        return None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else None


def differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """Each way `actual` departs from `expected`, one short phrase per file."""
    problems = []
    for path, sha in sorted(expected.items()):
        if path not in actual:
            problems.append(f"{path} is missing")
        elif actual[path] != sha:
            problems.append(f"{path} differs (sha256 {actual[path][:12]}, recorded {sha[:12]})")
    problems += [f"{path} was added" for path in sorted(set(actual) - set(expected))]
    return problems


def check(what: str, files: Mapping[str, str] | None, artifact_sha256: str, folder: Path) -> None:
    """Refuse `folder` unless its files are the ones recorded: the manifest when there is
    one, else the whole-folder digest. `what` names the version in the one-line error."""
    actual = manifest(folder)
    if files is not None:
        problems = differences(files, actual)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DataError(
                f"{what}: {problems[0]}{more}: its files are not the ones registered; "
                "refusing to load them"
            )
        return
    if not artifact_sha256 or digest(actual) != artifact_sha256:
        raise DataError(
            f"{what}: its files do not match the sha256 recorded at registration "
            f"({artifact_sha256[:12] or 'none recorded'}); refusing to load them"
        )


def model_files(folder: Path) -> tuple[Path, Path]:
    """The weights and the spec of a downloaded version (either layout)."""
    for layout in LAYOUTS:
        weights, spec = folder / layout / WEIGHTS_NAME, folder / layout / SPEC_NAME
        if weights.is_file() and spec.is_file():
            return weights, spec
    return folder / LAYOUTS[0] / WEIGHTS_NAME, folder / LAYOUTS[0] / SPEC_NAME

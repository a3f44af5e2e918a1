"""What a version's tags say about its exports, read without the export service (the
promotion gates and `mlops serve --export` use it): one JSON tag per export,
`mlops.export.VARIANT`, holding the file's sha256, its artifact URI and the parity
numbers; the passing ones, and the file of one of them, downloaded and verified."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.errors import DataError
from mlops.io import file_digest
from registry import mlflow_port

if TYPE_CHECKING:
    from registry.context import Context
    from registry.db.store import Version

TAG = "mlops.export"
PASSED = "passed"


def variant(fmt: str, quantize: str | None = None, prune: float | None = None) -> str:
    """`FORMAT[-int8][-prunedPCT]`."""
    name = fmt + (f"-{quantize}" if quantize else "")
    return name + (f"-pruned{prune * 100:g}" if prune else "")


def tag(variant_name: str) -> str:
    """The model-version tag that holds an export's record (one JSON value per export)."""
    return f"{TAG}.{variant_name}"


def records(tags: dict[str, str]) -> dict[str, dict[str, str]]:
    """Variant → the record of each export of a version, from its tags: one JSON tag per
    export, or (exports made before) one tag per field, `mlops.export.VARIANT.FIELD`."""
    found: dict[str, dict[str, str]] = {}
    prefix = f"{TAG}."
    for key, value in tags.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if value.startswith("{"):
            try:
                parsed = json.loads(value)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                found[rest] = {str(k): str(v) for k, v in parsed.items()}
        elif "." in rest:
            name, field_name = rest.rsplit(".", 1)
            found.setdefault(name, {})[field_name] = value
    return found


def passing_exports(tags: dict[str, str]) -> dict[str, str]:
    """Variant → format of every export whose parity passed, from a version's tags."""
    return {
        name: r["format"]
        for name, r in sorted(records(tags).items())
        if r.get("parity") == PASSED and r.get("format") and r.get("sha256") and r.get("artifact")
    }


def _version_tags(ctx: Context, version: Version) -> dict[str, str]:
    ctx.connect_mlflow()
    found = mlflow_port.get_version(version.model, version.version)
    return found.tags if found is not None else {}


def passing_variants(ctx: Context, version: Version) -> list[str]:
    """The variants of `version` whose export passed parity."""
    return sorted(passing_exports(_version_tags(ctx, version)))


def exported_variant(
    ctx: Context, version: Version, name: str, dest: Path | None = None
) -> Path | None:
    """The file of the passing export `name` (`onnx`, `onnx-int8`, …) of `version`,
    downloaded into `dest` (default: a new temporary folder the caller owns) and verified
    against the sha256 recorded at export. None when there is no such passing export."""

    tags = _version_tags(ctx, version)
    if name not in passing_exports(tags):
        return None
    record = records(tags)[name]
    dest = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="mlops-exported-"))
    path = mlflow_port.download_artifact(record["artifact"], dest)
    actual, recorded = file_digest(path), record.get("sha256", "")
    if actual != recorded:
        raise DataError(
            f"{version.model} version {version.version}: exported {name} file sha256 "
            f"{actual[:12]} differs from the recorded {recorded[:12] or 'none'}; refusing it"
        )
    return path


def exported_file(
    ctx: Context,
    version: Version,
    fmt: str = "onnx",
    quantize: str | None = None,
    dest: Path | None = None,
) -> Path | None:
    """The file of a passing `fmt` export of `version` (unpruned; `quantize="int8"` for the
    int8 one); see `exported_variant`."""
    return exported_variant(ctx, version, variant(fmt.strip().lower(), quantize), dest)

"""`mlops export`: convert a registered version to ONNX or TorchScript (optionally int8,
optionally pruned), hold the file to parity with the PyTorch model on the test split,
measure it, and attach it to the version.

MLflow model versions have no artifacts of their own: the file and its report go to the
version's source run under `exports/MODEL-vN/VARIANT/`, and one tag on the model version
(`mlops.export.VARIANT`, a JSON record) holds the sha256, the artifact URI and the
numbers. A refused
export (parity failed) writes nothing; the tags are written last, so they never name a
file that is not there.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.errors import DataError, MlopsError, UserError
from mlops.io import write_json
from registry import mlflow_port
from registry.evaluation import load_test_split
from registry.export import parity as export_parity
from registry.export.formats import to_onnx as convert
from registry.export.records import PASSED, tag
from registry.export.report import Report, Request
from registry.export.run import convert_and_measure
from registry.loading import load, parse_target, resolve
from registry.stages import check_model_name

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from registry.context import Context
    from registry.db.store import Version

FORMATS = ("onnx", "torchscript")
QUANTIZE = ("int8",)
REPORT_FILE = "export.json"
# PyTorch's dynamic quantization breaks nn.TransformerEncoderLayer (its fast-path check
# reads `linear.weight.device`, a method on quantized Linear layers).
UNSUPPORTED = {("torchscript", "int8", "transformer"): "use --format onnx for an int8 transformer"}


def check_request(
    fmt: str, quantize: str | None, prune: float | None, max_drop: float = export_parity.MAX_DROP
) -> Request:
    """Validate the options before any work (one line, exit 2)."""
    fmt, quantize = fmt.strip().lower(), (quantize.strip().lower() if quantize else None)
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise UserError(f"--quantize {quantize!r}: expected {', '.join(QUANTIZE)}")
    if prune is not None and not 0.0 < prune < 1.0:
        raise UserError(f"--prune {prune:g}: expected a fraction between 0 and 1 (exclusive)")
    if not max_drop >= 0.0:
        raise UserError(f"--max-drop {max_drop:g}: expected a number ≥ 0")
    return Request(fmt, quantize, prune, max_drop)


class ExportRefused(MlopsError):
    """Parity failed (exit 1): nothing was written. Carries the report for printing."""

    exit_code = 1

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


def target_version(ctx: Context, target: str) -> Version:
    """The version `target` names (`digits@production`, `digits@3`), after checking that
    the workspace has the test split to hold its export to (bad input: one line, before
    any work)."""

    name, ref = parse_target(target)
    check_model_name(name)
    if ref.stage is not None:
        ctx.policy.check_stage(ref.stage, exclusive=True)
    load_test_split(ctx.settings.root)
    return resolve(ctx, name, ref)


def export(
    ctx: Context,
    version: Version,
    request: Request,
    step: Callable[[str], None] = lambda _: None,
) -> Report:
    """Export `version` (see `target_version`) as `request` says."""

    name = version.model
    split = load_test_split(ctx.settings.root)
    with tempfile.TemporaryDirectory(prefix="mlops-export-") as tmp:
        step(f"loading {name} version {version.version}")
        loaded = load(ctx, version, Path(tmp, "model"))
        why = UNSUPPORTED.get((request.fmt, request.quantize or "", loaded.spec.family))
        if why:
            raise UserError(
                f"--format {request.fmt} --quantize {request.quantize}: not supported for "
                f"the {loaded.spec.family} family; {why}"
            )
        rows = split.rows_for(loaded.spec, f"{name} version {version.version}")

        report = convert_and_measure(loaded, rows, split.md5, request, Path(tmp, "out"), step)
        if not report.passed:
            failed = report.parity.failed()
            assert failed is not None
            raise ExportRefused(
                f"{name} version {version.version}: {request.variant} export refused by "
                f"parity check '{failed.check}': {failed.value} (needs {failed.threshold}); "
                "nothing was written",
                report,
            )
        step("attaching the file and the report to the version")
        return _attach(ctx, version, report, Path(tmp, "out"), actor=ctx.actor)


def _attach(ctx: Context, version: Version, report: Report, folder: Path, actor: str) -> Report:

    where = f"exports/{version.model}-v{version.version}/{report.variant}"
    uri = f"runs:/{version.run_id}/{where}"
    report = replace(
        report,
        artifact=f"{uri}/{report.exported.file}",
        report=f"{uri}/{REPORT_FILE}",
    )
    tags = {tag(report.variant): json.dumps(_record(report, actor), sort_keys=True)}
    report = replace(report, tags=tags)
    write_json(folder / REPORT_FILE, report.as_dict())
    if not version.run_id:
        raise DataError(f"{version.model} version {version.version} has no source run to hold it")
    mlflow_port.log_artifacts(version.run_id, folder, where)
    mlflow_port.set_tags(version.model, version.version, tags)
    return report


def _record(report: Report, actor: str) -> dict[str, str]:
    p = report.parity
    values: dict[str, Any] = {
        "format": report.format,
        "quantize": report.quantize or "none",
        "prune": "none" if report.prune is None else f"{report.prune:g}",
        "parity": PASSED,
        "sha256": report.sha256,
        "artifact": report.artifact,
        "report": report.report,
        "size_bytes": report.exported.size_bytes,
        "p50_ms": f"{report.exported.p50_ms:.4g}",
        p.metric: f"{p.exported:.6g}",
        f"{p.metric}_delta": f"{p.delta:+.4g}",
        "max_abs_diff": f"{p.max_abs_diff:.3g}",
        "agreement": f"{p.agreement:.6g}",
        "test_md5": report.test_md5,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "by": actor,
    }
    if report.sparsity is not None:
        values["sparsity"] = f"{report.sparsity:.4g}"
    return {k: str(v) for k, v in values.items()}


def to_onnx(module: nn.Module, example: np.ndarray, path: Path) -> Path:
    """One self-contained ONNX file of `module` with a dynamic batch dimension (see
    `registry.export.formats.to_onnx`)."""

    return convert(module, example, path)

"""`mlops export MODEL@STAGE|VERSION`: parses and prints; `registry.export.service` decides.

Imports only typer and rich at import time (mounted on the root app by `mlops.cli`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlops import console

if TYPE_CHECKING:
    from registry.export.service import Report


def _kb(size: int) -> str:
    return f"{size / 1000:.1f} kB"


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def render(report: Report) -> None:
    """The parity table (the registered PyTorch model beside the export), then the checks."""
    p, b, e = report.parity, report.baseline, report.exported
    unit = "points" if p.metric == "accuracy" else "% of rmse"
    rows = [
        ("file", b.file, e.file),
        ("size", _kb(b.size_bytes), _kb(e.size_bytes)),
        ("p50 latency (1 row, 1 thread)", _ms(b.p50_ms), _ms(e.p50_ms)),
        (p.metric, f"{b.metric:.4f}", f"{e.metric:.4f}"),
        (f"{p.metric} delta", "", f"{p.delta:+.2f} {unit}"),
        ("max abs diff", "", f"{p.max_abs_diff:.3g}"),
        ("agreement", "", f"{p.agreement:.2%}"),
    ]
    if report.sparsity is not None:
        rows.append(("sparsity", "", f"{report.sparsity:.1%}"))
    console.table(
        f"{report.model} version {report.version} → {report.variant} ({report.rows} test rows)",
        ["", "pytorch", e.label],
        rows,
    )
    checks = [
        (c.check, c.value, c.threshold, "[green]pass[/]" if c.passed else "[red]FAIL[/]")
        for c in p.checks
    ]
    console.table("Parity", ["check", "value", "threshold", ""], checks)
    if report.artifact:
        console.out.print(f"attached: {report.artifact}", soft_wrap=True)
        console.out.print(
            f"tag: mlops.export.{report.variant} on {report.model} version {report.version}"
        )


def export_cmd(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODEL@STAGE|VERSION",
            help="e.g. digits@production or digits@3.",
            show_default=False,
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    quantize: Annotated[
        str | None, typer.Option("--quantize", help="int8: dynamic int8 quantization.")
    ] = None,
    prune: Annotated[
        float | None,
        typer.Option("--prune", help="Zero this fraction of weights first (global magnitude)."),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option(
            "--max-drop", help="Accuracy points (regression: % of RMSE) the export may lose."
        ),
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Export a registered version to ONNX or TorchScript, check parity with the PyTorch
    model on the test split, and attach the file to the version (refused if parity fails)."""
    from registry.context import Context
    from registry.export import service as export

    request = export.check_request(fmt, quantize, prune, max_drop)
    ctx = Context.load()
    try:
        version = export.target_version(ctx, target)
        what = f"{version.model} version {version.version}"
        with console.status(f"exporting {what} to {request.variant}") as step:
            report = export.export(ctx, version, request, step=step)
    except export.ExportRefused as refused:
        if as_json:
            console.emit_json(refused.report.as_dict())
        else:
            render(refused.report)
        raise
    if as_json:
        console.emit_json(report.as_dict())
    else:
        render(report)

"""The compute of one export: prune, convert, quantize, run the file on the test split,
compare it with the PyTorch model and time both. Writes only into the folder it is given."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlops.errors import DataError, first_line
from mlops.io import file_digest
from registry.export import formats
from registry.export import parity as export_parity
from registry.export.report import Measured, Report

if TYPE_CHECKING:
    from torch import nn

    from registry.evaluation import Rows
    from registry.export.report import Request
    from registry.loading import Loaded


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # Latency is measured on one thread for PyTorch and onnxruntime alike: comparable
    # numbers, and a measurement that does not depend on what else the machine runs.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _write(
    module: nn.Module, example: np.ndarray, request: Request, folder: Path
) -> tuple[Path, formats.Runner]:
    suffix = formats.SUFFIX[request.fmt]
    path = folder / f"model{suffix}"
    if request.fmt == "onnx":
        if request.quantize:
            fp32 = formats.to_onnx(module, example, folder.parent / f"fp32{suffix}")
            formats.quantize_onnx(fp32, path)
            fp32.unlink()
        else:
            formats.to_onnx(module, example, path)
        return path, formats.onnx_runner(path)
    if request.quantize:
        module = formats.quantize_torch(module)
    formats.to_torchscript(module, example, path)
    return path, formats.torchscript_runner(path)


def _export(
    module: nn.Module, x: np.ndarray, request: Request, folder: Path
) -> tuple[Path, formats.Runner]:
    """Write the export file (its example input: two rows of `x`); its path and runner."""
    try:
        return _write(module, x[:2], request, folder)
    except Exception as exc:  # the exporters raise many types: say which step failed
        raise DataError(f"{request.variant} conversion failed: {first_line(exc)[:200]}") from None


def convert_and_measure(
    loaded: Loaded,
    split: Rows,
    test_md5: str,
    request: Request,
    folder: Path,
    step: Callable[[str], None] = lambda _: None,
) -> Report:
    """Export `loaded` into `folder` as `request` says and measure it (nothing uploaded)."""

    folder.mkdir(parents=True, exist_ok=True)
    task = loaded.spec.task
    baseline_run = formats.torch_runner(loaded.module)
    baseline_out = baseline_run(split.x)
    module, sparsity = loaded.module, None
    if request.prune:
        step(f"pruning {request.prune:.0%} of the weights")
        module = formats.prune_global(loaded.module, request.prune)
        sparsity = formats.sparsity(module)
    converted_out = formats.torch_runner(module)(split.x) if request.prune else baseline_out
    step(f"exporting {request.variant}")
    path, run = _export(module, split.x, request, folder)
    step(f"checking parity on {len(split.x)} test rows")
    exported_out = run(split.x)
    if exported_out.shape[0] != len(split.x):
        raise DataError(f"{request.variant}: the file returned shape {exported_out.shape}")
    parity = export_parity.compare(
        task,
        split.y,
        baseline_out,
        converted_out,
        exported_out,
        quantized=request.quantize is not None,
        max_drop=request.max_drop,
    )
    step("measuring latency")
    with _one_thread():
        base_ms = formats.p50_ms(baseline_run, split.x)
        export_ms = formats.p50_ms(run, split.x)
    weights = loaded.weights
    label = request.variant.replace("-", " ")
    return Report(
        model=loaded.version.model,
        version=loaded.version.version,
        variant=request.variant,
        format=request.fmt,
        quantize=request.quantize,
        prune=request.prune,
        sparsity=sparsity,
        metric=parity.metric,
        rows=len(split.x),
        test_md5=test_md5,
        baseline=Measured(
            "pytorch", weights.name, weights.stat().st_size, base_ms, parity.baseline
        ),
        exported=Measured(label, path.name, path.stat().st_size, export_ms, parity.exported),
        sha256=file_digest(path),
        parity=parity,
        passed=parity.passed,
    )

"""Conversions of a rebuilt PyTorch module into deployable files, and runners that read
them back: ONNX (one self-contained file, dynamic batch dimension), TorchScript,
dynamic int8 quantization of either, and global magnitude pruning before export.

Imports torch, onnx and onnxruntime inside the functions only.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlops.training import text_start

if TYPE_CHECKING:
    from torch import nn

Runner = Callable[[np.ndarray], np.ndarray]
INPUT_NAME, OUTPUT_NAME = "features", "outputs"
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporters warn through logging and `warnings` about things that do not apply
    # here (torchvision ops, deprecations); stderr carries our one-line errors.
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export")]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)


def _example(example: np.ndarray) -> np.ndarray:
    # A batch of one would be specialised as a constant: trace with at least two rows.
    rows = np.ascontiguousarray(example, dtype=np.float32)
    return rows if len(rows) >= 2 else np.concatenate([rows, rows])[:2]


def to_onnx(module: nn.Module, example: np.ndarray, path: Path) -> Path:
    """Export `module` (eval mode, float32 features of shape (batch, n)) to one ONNX file
    at `path` with a dynamic batch dimension (and for a text model a dynamic width: its
    rows may be cut after their last token) and the weights inside (no external data).

    Input `features`, output `outputs` (logits, or the regression values).
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = torch.from_numpy(_example(example))
    module.eval()
    dims = {0: torch.export.Dim("batch")}
    start = text_start(module)
    if start is not None:  # a text model: rows may be cut after their last token
        dims[1] = torch.export.Dim("width", min=start + 1, max=rows.shape[1])
    with _quiet():
        program = torch.onnx.export(
            module,
            (rows,),
            dynamo=True,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(dims,),
            verbose=False,
        )
        assert program is not None
        program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    return path


def quantize_onnx(fp32: Path, path: Path) -> Path:
    """Dynamic int8 quantization of an ONNX file (weights int8, activations quantized at
    run time) with onnxruntime's quantizer, after its shape-inference preprocessing."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_name(path.stem + ".prep.onnx")
    with _quiet():
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8)
    prepared.unlink(missing_ok=True)
    return path


def onnx_runner(path: Path, threads: int = 1) -> Runner:
    """Run an ONNX file with onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0])

    return run


def quantize_torch(module: nn.Module) -> nn.Module:
    """PyTorch's dynamic int8 quantization of Linear, LSTM and GRU layers (a copy)."""

    import torch
    from torch import nn

    with _quiet():
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(module), {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8
        )


def to_torchscript(module: nn.Module, example: np.ndarray, path: Path) -> Path:
    """Trace `module` to a TorchScript file (batch size stays free: no shape is baked in
    because every family reads the batch size from its input)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, torch.from_numpy(_example(example)), check_trace=False)
        traced = torch.jit.freeze(traced)
        torch.jit.save(traced, str(path))
    return path


def torchscript_runner(path: Path) -> Runner:
    """Run a TorchScript file written by `to_torchscript`."""
    import torch

    with _quiet():
        loaded = torch.jit.load(str(path), map_location="cpu")
    return torch_runner(loaded)


def torch_runner(module: nn.Module) -> Runner:
    """Run a PyTorch module in eval mode without gradients."""
    import torch

    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            rows = torch.from_numpy(np.ascontiguousarray(x, np.float32))
            return np.asarray(module(rows).float().numpy())

    return run


def _prunable(module: nn.Module) -> list[tuple[nn.Module, str]]:
    from torch import nn

    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    return [(m, "weight") for m in module.modules() if isinstance(m, kinds)]


def prune_global(module: nn.Module, fraction: float) -> nn.Module:
    """A copy of `module` with the `fraction` smallest-magnitude weights of all its Linear
    and Conv layers (ranked together) set to zero, permanently."""

    from torch.nn.utils import prune

    pruned = copy.deepcopy(module)
    targets = _prunable(pruned)
    if targets:
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=fraction)
        for layer, name in targets:
            prune.remove(layer, name)
    return pruned


def sparsity(module: nn.Module) -> float:
    """Zeros / weights over the Linear and Conv weights that pruning ranks."""
    import torch

    weights: list[torch.Tensor] = [getattr(layer, name) for layer, name in _prunable(module)]
    total = sum(int(w.numel()) for w in weights)
    zeros = sum(int(torch.count_nonzero(w == 0)) for w in weights)
    return zeros / total if total else 0.0


def p50_ms(run: Runner, x: np.ndarray, rounds: int = 200) -> float:
    """Median single-row latency in milliseconds over up to `rounds` rows of `x`."""

    rows = np.ascontiguousarray(x[: max(1, min(rounds, len(x)))], np.float32)
    for i in range(min(10, len(rows))):  # warm-up
        run(rows[i : i + 1])
    times = []
    for i in range(len(rows)):
        start = time.perf_counter()
        run(rows[i : i + 1])
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))

"""The two backends behind one small interface: a callable from a float32 batch to the
model's raw outputs (logits, or regression values). Chosen at start (`--backend`).

- torch: the verified module itself, in inference mode on `threads` intra-op threads.
- onnx: ONNX Runtime on the version's exported file when `mlops export` made one, else
  on a file converted from the verified weights at load time in a child process, which
  checks it against the module on a few rows. The server itself never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mlops.errors import DataError
from mlops.io import file_digest
from registry.export.parity import FP32_MAX_ABS_DIFF

if TYPE_CHECKING:
    from torch import nn

    from mlops.models import ModelSpec

BACKENDS = ("torch", "onnx")
PARITY_ATOL = FP32_MAX_ABS_DIFF  # the one fp32 parity tolerance, named in registry.export


class Predictor(Protocol):
    """Raw outputs (rows x outputs, float32) of a float32 batch (rows x features);
    `any_width`: whether it takes a text model's rows cut after their last token."""

    backend: str
    any_width: bool

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class TorchPredictor:
    """A PyTorch module in eval mode, run under `torch.inference_mode`."""

    backend = "torch"
    any_width = True

    def __init__(self, module: nn.Module, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self._torch = torch
        self._module = module.eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out: np.ndarray = self._module(self._torch.from_numpy(x)).float().numpy()
        return out


class OnnxPredictor:
    """One ONNX Runtime session on the CPU, reused by every request."""

    backend = "onnx"

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False  # small batches: no arena growing with peaks
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        found = self._session.get_inputs()[0]
        self._input = found.name
        self._run = self._session.run
        # a text model exported with a dynamic width (older files: a fixed one)
        self.any_width = len(found.shape) == 2 and not isinstance(found.shape[1], int)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._run(None, {self._input: x})[0]
        return out


@dataclass(frozen=True)
class Built:
    """A predictor and where its model came from (for /metadata)."""

    predictor: Predictor
    source: str
    file_sha256: str | None = None
    export: str | None = None  # the export variant served (`onnx`, `onnx-int8`, …)


def build_torch(module: nn.Module, threads: int = 1) -> Built:
    """The torch backend: the verified module itself."""
    return Built(TorchPredictor(module, threads), "module")


def build_onnx(
    weights_dir: Path,
    sha256: str,
    workdir: Path,
    threads: int = 1,
    exported: Path | None = None,
    variant: str = "onnx",
) -> Built:
    """The onnx backend on `exported` (the file of the export `variant` that `mlops export`
    wrote, parity-checked and sha256-verified for this version), else on a file converted
    from the verified weights in a child process (see `mlops.serving.convert`)."""

    if exported is not None:
        digest = file_digest(exported)
        return Built(OnnxPredictor(exported, threads), "exported", digest, variant)
    path = workdir / "model.onnx"
    expected = convert(weights_dir, path, sha256)
    actual = file_digest(path)
    if actual != expected:
        raise DataError(f"{path.name}: sha256 {actual[:12]} is not the converted file's")
    return Built(OnnxPredictor(path, threads), "converted at load", actual)


def check_parity(reference: Predictor, candidate: Predictor, example: np.ndarray) -> float:
    """The largest difference of the two on `example`; a `DataError` above the tolerance."""

    diff = float(np.max(np.abs(reference(example) - candidate(example))))
    if not diff <= PARITY_ATOL:
        raise DataError(
            f"the {candidate.backend} backend differs from the verified module by {diff:.3g} "
            f"(> {PARITY_ATOL}); refusing to serve it"
        )
    return diff


def example_rows(spec: ModelSpec, rows: int = 8) -> np.ndarray:
    """Deterministic rows around the training distribution, for warm-up and parity (an
    image model's: values in [0, 1] around each channel's mean)."""

    rng = np.random.default_rng(0)
    m, s = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    if spec.image_format is not None:  # per channel → per value, in [0, 1] as decoded
        per = spec.in_features // len(m)
        m, s = np.repeat(m, per), np.repeat(s, per)
    noise = rng.standard_normal((rows, len(m))).astype(np.float32)
    x = m + noise * s
    if spec.image_format is not None:
        x = np.clip(x, 0.0, 1.0)
    encoding = spec.column_encoding
    if encoding is not None:  # embedded columns read category indices
        for j, (cardinality, _) in enumerate(encoding.embedded):
            x[:, encoding.dense_width + j] = rng.integers(0, cardinality, rows)
        if encoding.codec is not None:  # token ids, then pads, rows of different lengths
            start, width = encoding.text_start, encoding.max_length
            ids = rng.integers(3, max(encoding.codec.vocab_size, 4), (rows, width))
            lengths = rng.integers(1, width + 1, rows)
            ids[np.arange(width)[None, :] >= lengths[:, None]] = 0
            x[:, start:] = ids
    return np.ascontiguousarray(x, dtype=np.float32)


def describe(built: Built) -> dict[str, Any]:
    """What /metadata says about the backend."""
    found: dict[str, Any] = {"backend": built.predictor.backend, "source": built.source}
    if built.file_sha256:
        found["file_sha256"] = built.file_sha256
    if built.export:
        found["export"] = built.export
    return found


CONVERT_TIMEOUT_S = 600


def convert(weights_dir: Path, out: Path, sha256: str, timeout: float = CONVERT_TIMEOUT_S) -> str:
    """Convert the verified weights to ONNX in a child (`python -m mlops.serving.convert`);
    the file's sha256 (a `DataError` if it failed)."""
    cmd = [sys.executable, "-m", "mlops.serving.convert", str(weights_dir), str(out), sha256]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DataError(f"ONNX conversion took over {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise DataError(f"ONNX conversion failed: {why.removeprefix('error: ')[:300]}")
    return str(json.loads(lines[-1])["sha256"])

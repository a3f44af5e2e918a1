"""Evidence about a version, measured now: integrity of its files, its metrics re-evaluated
on the workspace's DVC-versioned test split, size, parameter count and latency.

Models are rebuilt only from safetensors weights whose sha256 matches the value
recorded at registration; pickled files are never loaded.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlops.errors import DataError, UserError
from registry.db.store import Version
from registry.gates import Evidence

WEIGHTS = Path("extra_files/model.safetensors")
SPEC = Path("extra_files/model.json")
TEST_SPLIT = Path("data/split/test.parquet")
SCHEMA = Path("data/raw/schema.json")


# Written by MLflow when a `models:/` URI is downloaded: not part of what was logged.
_GENERATED = {"registered_model_meta"}


def manifest_sha256(directory: Path) -> str:
    """One sha256 over every file's relative path and content (order-independent)."""
    from mlops.io import file_digest

    lines = []
    files = (p for p in directory.rglob("*") if p.is_file() and p.name not in _GENERATED)
    for path in sorted(files):
        lines.append(f"{path.relative_to(directory).as_posix()}\0{file_digest(path)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class TestSplit:
    """The test rows of the workspace and the DVC md5 of the file they came from."""

    x: np.ndarray
    y: np.ndarray
    md5: str
    task: str


def load_test_split(root: Path) -> TestSplit:
    """The workspace's test split (`dvc repro` or `dvc pull` produces it)."""
    from mlops.data import Schema, features_and_target, read_parquet
    from mlops.lineage import dvc_md5

    path, schema_path = root / TEST_SPLIT, root / SCHEMA
    if not path.is_file() or not schema_path.is_file():
        raise UserError(f"{path}: test split not found; run `dvc repro` or `dvc pull` first")
    schema = Schema.load(schema_path)
    x, y = features_and_target(read_parquet(path), schema)
    task = "regression" if not schema.classes else "classification"
    return TestSplit(np.asarray(x), np.asarray(y), dvc_md5(path), task)


@dataclass(frozen=True)
class Scored:
    """A version's evidence plus what comparison needs: outputs on the test rows."""

    evidence: Evidence
    outputs: np.ndarray | None
    parameters: int
    task: str
    family: str


def _signature(model_dir: Path) -> str | None:
    import json

    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    meta = yaml.safe_load(mlmodel.read_text()) or {}
    sig = meta.get("signature")
    return json.dumps(sig, sort_keys=True) if sig else None


def _latency_ms(model: Any, x: np.ndarray, rounds: int = 100) -> float:
    import torch

    rows = torch.from_numpy(np.ascontiguousarray(x[: max(1, min(rounds, len(x)))]))
    times = []
    with torch.no_grad():
        model(rows[:1])  # warm-up
        for i in range(len(rows)):
            start = time.perf_counter()
            model(rows[i : i + 1])
            times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def score(
    version: Version,
    model_dir: Path,
    split: TestSplit | None,
    latency: bool = False,
) -> Scored:
    """Check the files of `model_dir` against the registration record, then rebuild the
    model from its safetensors weights and measure it."""
    from mlops.io import file_digest, read_json
    from mlops.metrics import classification_metrics, regression_metrics
    from mlops.models import ModelSpec, build_model, count_parameters
    from mlops.training import predict_proba, predict_values

    weights = model_dir / WEIGHTS
    if not weights.is_file() or not (model_dir / SPEC).is_file():
        raise DataError(
            f"model {version.model} version {version.version}: no safetensors weights in its "
            "artifacts (pickled models are never loaded)"
        )
    actual = file_digest(weights)
    evidence = Evidence(
        version=version.version,
        recorded_sha256=version.sha256,
        actual_sha256=actual,
        recorded_artifact_sha256=version.artifact_sha256,
        actual_artifact_sha256=manifest_sha256(model_dir),
        signature=_signature(model_dir),
        size_mb=weights.stat().st_size / 1e6,
    )
    if actual != version.sha256:
        # A tampered file is never deserialised, even by safetensors.
        return Scored(evidence, None, 0, "", "")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        spec = ModelSpec(**read_json(model_dir / SPEC))
        model = build_model(spec)
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"model {version.model} version {version.version}: {exc}") from None
    model.eval()
    metrics: dict[str, float] = {}
    outputs = None
    if split is not None:
        if spec.task == "regression":
            outputs = predict_values(model, split.x)
            metrics = regression_metrics(split.y, outputs)
        else:
            outputs = predict_proba(model, split.x)
            metrics = classification_metrics(split.y, outputs)
    lat = _latency_ms(model, split.x) if latency and split is not None else None
    from dataclasses import replace

    evidence = replace(evidence, metrics=metrics, latency_ms=lat)
    return Scored(evidence, outputs, count_parameters(model), spec.task, spec.family)

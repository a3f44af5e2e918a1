"""Evidence about a version, measured now: integrity of its files, its metrics re-evaluated
on the workspace's DVC-versioned test split (read through the version's own feature names
and classes), size, parameter count and latency.

Models are rebuilt only from safetensors weights after every file of the version matched
the manifest recorded at registration; pickled files are never loaded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from safetensors import SafetensorError

from mlops import workspace
from mlops.columns import Encoding
from mlops.data import read_parquet
from mlops.errors import DataError, UserError
from mlops.images import FILE_COLUMN, ImageError, ImageFormat
from mlops.io import file_digest, read_json
from mlops.lineage import dvc_md5
from mlops.metrics import classification_metrics, regression_metrics
from mlops.models import ModelSpec, build_model, count_parameters
from mlops.training import predict_proba, predict_values
from registry import integrity
from registry.db.store import Version
from registry.gates import Evidence

if TYPE_CHECKING:
    from torch import nn

TEST_SPLIT = workspace.SPLITS["test"]
SCHEMA = workspace.SPLIT_SCHEMA


def manifest_sha256(directory: Path) -> str:
    """One sha256 over every file's relative path and content (order-independent)."""

    return integrity.digest(integrity.manifest(directory))


@dataclass(frozen=True)
class Rows:
    """Test rows as one version reads them: its feature columns in its order, the labels
    as indices into its classes (values for a regression)."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class TestSplit:
    """The workspace's test split (raw columns, DVC md5): data to measure versions on.
    Each version reads it through its own spec (`rows_for`), never through the
    workspace's schema, whose feature order may have changed since it was trained."""

    frame: Any  # pandas DataFrame: the feature columns and `target`
    md5: str
    path: Path

    def __len__(self) -> int:
        return len(self.frame)

    def rows_for(self, spec: ModelSpec, what: str) -> Rows:
        """The rows `spec`'s version reads; a `DataError` naming the columns or labels
        the split lacks for it. A version registered before feature names were
        recorded reads the split's columns by position."""
        frame = self.frame
        fmt = spec.image_format
        if fmt is not None:
            return self._images(spec, fmt, what)
        encoding = spec.column_encoding
        if encoding is not None:
            return self._table(spec, encoding, what)
        features = [c for c in frame.columns if c != "target"]
        names = list(spec.features) or features
        missing = [n for n in names if n not in frame.columns]
        if missing or len(names) != spec.in_features:
            shown = ", ".join(missing[:5]) if missing else f"{len(names)} columns"
            raise DataError(
                f"{what} reads {spec.in_features} features; the test split {self.path} "
                f"lacks {shown} (it has {len(features)} feature columns)"
            )
        x = np.ascontiguousarray(frame[names].to_numpy(dtype=np.float32))
        return self._labelled(x, spec, what)

    def _table(self, spec: ModelSpec, encoding: Encoding, what: str) -> Rows:
        """The split's raw columns encoded as `spec`'s version encodes them."""
        missing = [c for c in encoding.columns if c not in self.frame.columns]
        if missing:
            raise DataError(
                f"{what} reads columns {', '.join(missing[:5])}, which the test split "
                f"{self.path} lacks"
            )
        x, _ = encoding.transform(self.frame)
        return self._labelled(x, spec, what)

    def _images(self, spec: ModelSpec, fmt: ImageFormat, what: str) -> Rows:
        """The split's images decoded as `spec`'s version reads them."""
        if fmt.column not in self.frame.columns:
            raise DataError(
                f"{what} reads images from column {fmt.column!r}; the test split "
                f"{self.path} has no such column"
            )
        try:
            files = self.frame.get(FILE_COLUMN)
            x = fmt.rows(self.frame[fmt.column], list(files) if files is not None else None)
        except ImageError as exc:
            raise DataError(
                f"{what}: the test split {self.path} holds an image it cannot read: {exc}"
            ) from None
        return self._labelled(x, spec, what)

    def _labelled(self, x: np.ndarray, spec: ModelSpec, what: str) -> Rows:
        """`x` with the split's labels as `spec`'s version reads them."""
        frame = self.frame
        if spec.task == "regression":
            return Rows(x, frame["target"].to_numpy(dtype=np.float32))
        index = {str(c): i for i, c in enumerate(spec.classes)}
        unknown = sorted({str(v) for v in frame["target"]} - set(index))
        if unknown:
            raise DataError(
                f"{what} knows classes {', '.join(map(str, spec.classes[:10]))}; the test "
                f"split {self.path} has labels it does not: {', '.join(unknown[:5])}"
            )
        return Rows(x, np.array([index[str(v)] for v in frame["target"]], dtype=np.int64))


def load_test_split(root: Path) -> TestSplit:
    """The workspace's test split (`dvc repro` or `dvc pull` produces it)."""

    path = root / TEST_SPLIT
    if not path.is_file():
        raise UserError(f"{path}: test split not found; run `dvc repro` or `dvc pull` first")
    return TestSplit(read_parquet(path), dvc_md5(path), path)


@dataclass(frozen=True)
class Scored:
    """A version's evidence plus what comparison needs: outputs on the test rows and the
    labels as that version reads them."""

    evidence: Evidence
    outputs: np.ndarray | None
    parameters: int
    task: str
    family: str
    y: np.ndarray | None = None
    classes: list[Any] | None = None


def _signature(model_dir: Path) -> str | None:

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
    """Check every file of `model_dir` against the registration record, then rebuild the
    model from its safetensors weights and measure it on the split as it reads it. A
    version whose files differ is measured no further: its integrity evidence says so."""
    what = f"model {version.model} version {version.version}"
    weights, spec_file = integrity.model_files(model_dir)
    if not weights.is_file() or not spec_file.is_file():
        raise DataError(
            f"{what}: no safetensors weights in its artifacts (pickled models are never loaded)"
        )
    evidence, intact = _integrity(version, model_dir, weights)
    if not intact:
        # A file that differs from the registered one is never read, not even the MLmodel.
        return Scored(evidence, None, 0, "", "")
    evidence = replace(evidence, signature=_signature(model_dir))
    spec, model = _rebuild(what, weights, spec_file)
    metrics: dict[str, float] = {}
    outputs = rows = None
    if split is not None:
        rows = split.rows_for(spec, what)
        if spec.task == "regression":
            outputs = predict_values(model, rows.x)
            metrics = regression_metrics(rows.y, outputs)
        else:
            outputs = predict_proba(model, rows.x)
            metrics = classification_metrics(rows.y, outputs)
    lat = _latency_ms(model, rows.x) if latency and rows is not None else None
    evidence = replace(evidence, metrics=metrics, latency_ms=lat)
    return Scored(
        evidence,
        outputs,
        count_parameters(model),
        spec.task,
        spec.family,
        rows.y if rows is not None else None,
        list(spec.classes),
    )


def _integrity(version: Version, model_dir: Path, weights: Path) -> tuple[Evidence, bool]:
    """The integrity evidence of `version`'s files in `model_dir`, and whether every file
    is the registered one."""
    files = integrity.manifest(model_dir)
    expected = integrity.recorded(version.info)
    evidence = Evidence(
        version=version.version,
        recorded_sha256=version.sha256,
        actual_sha256=file_digest(weights),
        recorded_artifact_sha256=version.artifact_sha256,
        actual_artifact_sha256=integrity.digest(files),
        size_mb=weights.stat().st_size / 1e6,
    )
    intact = evidence.actual_sha256 == version.sha256 and (
        not integrity.differences(expected, files)
        if expected is not None
        else evidence.actual_artifact_sha256 == version.artifact_sha256
    )
    return evidence, intact


def _rebuild(what: str, weights: Path, spec_file: Path) -> tuple[ModelSpec, nn.Module]:
    """The model rebuilt from its spec and safetensors weights, in eval mode."""
    from safetensors.torch import load_file

    try:
        spec = ModelSpec(**read_json(spec_file))
        model = build_model(spec)
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{what}: {exc}") from None
    model.eval()
    return spec, model

"""A served version: its registry record, the verified module's predictor, what requests
must look like, and the post-processing that turns raw outputs into a response.

`load_version` downloads a version, verifies its weights' sha256 against the record and
builds the backend; nothing serves until that succeeded. A `Served` never changes: a hot
swap replaces the whole object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.serving.schema import InputSpec

if TYPE_CHECKING:
    import numpy as np

    from mlops.models import ModelSpec
    from mlops.serving.backends import Built
    from registry.context import Context
    from registry.db.store import Version

SCHEMA_FILE = Path("data/raw/schema.json")


@dataclass(frozen=True)
class Served:
    """One loaded version, ready to answer requests."""

    name: str
    version: int
    sha256: str
    spec: ModelSpec
    built: Built
    input: InputSpec
    signature: dict[str, Any] | None
    loaded_at: float = field(default_factory=time.time)

    @property
    def classification(self) -> bool:
        return self.spec.task != "regression"

    @cached_property
    def labels(self) -> np.ndarray | list[Any]:
        """Class labels indexable by an array of class indices."""
        return _labels(tuple(self.spec.classes))

    def predict(self, x: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """The response body of a batch, and the predicted class indices (or values)."""
        import numpy as np

        out = self.built.predictor(x)
        if not self.classification:
            values = out.reshape(len(x))
            return {"model": self.name, "version": self.version, "predictions": values}, values
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        proba = shifted / shifted.sum(axis=1, keepdims=True)
        index = out.argmax(axis=1)
        labels = self.labels
        predictions = (
            labels[index] if isinstance(labels, np.ndarray) else [labels[i] for i in index]
        )
        body = {
            "model": self.name,
            "version": self.version,
            "predictions": predictions,
            "probabilities": proba,
        }
        return body, index


def _labels(classes: tuple[Any, ...]) -> np.ndarray | list[Any]:
    import numpy as np

    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return np.asarray(classes, dtype=np.int64)
    return list(classes)


def feature_names(root: Path, n: int) -> tuple[str, ...]:
    """The training schema's feature names when the project's schema has `n` of them,
    else `f0 … f{n-1}` (the signature of a registered version is a tensor without names)."""
    from mlops.io import read_json

    path = root / SCHEMA_FILE
    if path.is_file():
        try:
            names = read_json(path).get("features") or []
        except (OSError, ValueError):
            names = []
        if len(names) == n and all(isinstance(x, str) for x in names):
            return tuple(names)
    return tuple(f"f{i}" for i in range(n))


def read_signature(directory: Path) -> dict[str, Any] | None:
    """The MLflow signature of a downloaded model folder (inputs, outputs), parsed."""
    import json

    import yaml

    mlmodel = directory / "MLmodel"
    if not mlmodel.is_file():
        return None
    meta = yaml.safe_load(mlmodel.read_text()) or {}
    sig = meta.get("signature") or {}
    parsed = {k: json.loads(v) if isinstance(v, str) else v for k, v in sig.items() if v}
    return parsed or None


def load_version(
    ctx: Context,
    version: Version,
    backend: str,
    workdir: Path,
    max_batch: int,
    threads: int = 1,
) -> Served:
    """Download and verify `version` (sha256 of its weights against the registry's record),
    build the backend and warm it up."""
    from mlops.serving import backends
    from registry import loading
    from registry.evaluation import WEIGHTS

    dest = workdir / f"v{version.version}"
    if backend == "onnx":
        directory, spec = loading.fetch(ctx, version, dest)
        exported = _exported_onnx(ctx, version, dest / "exported")
        weights_dir = (directory / WEIGHTS).parent
        built = backends.build_onnx(weights_dir, version.sha256, dest, threads, exported)
    else:
        loaded = loading.load(ctx, version, dest)
        directory, spec = loaded.directory, loaded.spec
        built = backends.build_torch(loaded.module, threads)
    features = feature_names(ctx.settings.root, spec.in_features)
    shape = tuple(spec.input_shape) or (spec.in_features,)
    served = Served(
        name=version.model,
        version=version.version,
        sha256=version.sha256,
        spec=spec,
        built=built,
        input=InputSpec(features, shape, max_batch),
        signature=read_signature(directory),
    )
    example = backends.example_rows(spec.mean, spec.std)
    for rows in (1, len(example)):  # warm-up: the first call of a session is slow
        served.predict(example[:rows])
    return served


def _exported_onnx(ctx: Context, version: Version, dest: Path) -> Path | None:
    """The ONNX file `mlops export` made and verified for this version, if any."""
    try:
        from registry.export import exported_file
    except ImportError:
        return None
    found: Path | None = exported_file(ctx, version, fmt="onnx", quantize=None, dest=dest)
    return found

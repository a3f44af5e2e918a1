"""A served version: its registry record, the verified module's predictor, what requests
must look like, and the post-processing that turns raw outputs into a response.

`load_version` downloads a version, verifies every file against the manifest recorded at
registration and builds the backend; nothing serves until that succeeded. A `Served`
never changes: a hot swap replaces the whole object.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from mlops.errors import DataError
from mlops.predictions import answer, labels
from mlops.serving import backends
from mlops.serving.schema import InputSpec
from registry import loading
from registry.export.records import exported_variant, passing_variants
from registry.integrity import model_files

if TYPE_CHECKING:
    import numpy as np

    from mlops.models import ModelSpec
    from mlops.serving.backends import Built
    from registry.context import Context
    from registry.db.store import Version


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
        return labels(tuple(self.spec.classes))

    @cached_property
    def text_start(self) -> int | None:
        """Where a text model's rows hold their token ids, when its predictor takes rows
        cut after their last token (None: rows go in whole)."""
        encoding = self.spec.column_encoding
        if encoding is None or not encoding.text or not self.built.predictor.any_width:
            return None
        return encoding.text_start

    def predict(self, x: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """The response body of a batch, and the predicted class indices (or values).
        A text model's batch is cut after its longest row's last token: its answer does
        not depend on the pads, and a short text costs what its tokens cost."""
        start = self.text_start
        if start is not None and x.shape[1] > start:
            longest = int(np.count_nonzero(x[:, start:], axis=1).max())
            x = x[:, : start + max(longest, 1)]
        found = answer(self.built.predictor(x), self.spec.task, self.labels, len(x))
        body: dict[str, Any] = {
            "model": self.name,
            "version": self.version,
            "predictions": found.predictions,
        }
        if found.probabilities is not None:
            body["probabilities"] = found.probabilities
        return body, found.index


def read_signature(directory: Path) -> dict[str, Any] | None:
    """The MLflow signature of a downloaded model folder (inputs, outputs), parsed."""

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
    export: str | None = None,
) -> Served:
    """Download `version`, verify every file against its manifest, build the backend and
    warm it up. What a request must look like (feature names and order, input shape) and
    what the answer means (classes, task) come from the version's own spec, never from the
    workspace. `export` names the passing ONNX export to serve (e.g. `onnx-int8`)."""

    dest = workdir / f"v{version.version}"
    if backend == "onnx":
        directory, spec = loading.fetch(ctx, version, dest)
        exported = _exported_onnx(ctx, version, dest / "exported", export)
        weights_dir = model_files(directory)[0].parent
        built = backends.build_onnx(
            weights_dir, version.sha256, dest, threads, exported, export or "onnx"
        )
    else:
        loaded = loading.load(ctx, version, dest)
        directory, spec = loaded.directory, loaded.spec
        built = backends.build_torch(loaded.module, threads)
    shape = tuple(spec.input_shape) or (spec.in_features,)
    served = Served(
        name=version.model,
        version=version.version,
        sha256=version.sha256,
        spec=spec,
        built=built,
        input=InputSpec(
            tuple(spec.feature_names),
            shape,
            max_batch,
            spec.image_format,
            spec.column_encoding,
        ),
        signature=read_signature(directory),
    )
    example = backends.example_rows(spec)
    for rows in (1, len(example)):  # warm-up: the first call of a session is slow
        served.predict(example[:rows])
    return served


def _exported_onnx(ctx: Context, version: Version, dest: Path, variant: str | None) -> Path | None:
    """The file of the passing ONNX export `variant` of this version (downloaded and its
    sha256 checked); with no variant asked for, the plain fp32 `onnx` export if there is
    one (None: convert at load)."""

    found: Path | None = exported_variant(ctx, version, variant or "onnx", dest)
    if found is None and variant is not None:
        have = ", ".join(passing_variants(ctx, version)) or "none"
        raise DataError(
            f"model {version.model} version {version.version} has no passing {variant} "
            f"export (its passing exports: {have}); make one with `mlops export "
            f"{version.model}@{version.version} --format onnx …`"
        )
    return found

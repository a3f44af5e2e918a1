"""The `mlflow.pyfunc` model of a registered version, so a user of MLflow's own loader gets
the answers `mlops serve` gives:

    model = mlflow.pyfunc.load_model("models:/digits@production")
    model.predict(frame)                                  # labels (values for a regression)
    model.predict(frame, params={"output": "probabilities"})  # a column per class

A version is logged with MLflow's models-from-code: its code file (`ENTRY`, a few lines)
builds `VersionModel`, which rebuilds the network from the version's own safetensors
weights and spec (`artifacts/`) — never a pickle — and reads the columns by the feature
names recorded with the version, in the version's own order. Loading needs `mlops`
installed, as the network's classes live here.

This module imports MLflow and is imported only by MLflow's loader and by registration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from mlops.columns import Encoding
from mlops.images import ImageError, ImageFormat
from mlops.images.format import image_bytes, to_rows
from mlops.models import load_model
from mlops.predictions import answer, labels

OUTPUT_PARAM = "output"
OUTPUTS = ("labels", "probabilities")
WEIGHTS_ARTIFACT = "weights"
SPEC_ARTIFACT = "spec"
ENTRY_FILE = "mlops_model.py"
ENTRY = '''"""The mlflow.pyfunc entry of an mlops model version (MLflow models-from-code)."""

import mlflow

from mlops.pyfunc_model import VersionModel

mlflow.models.set_model(VersionModel())
'''


class VersionModel(PythonModel):
    """A version's network behind MLflow's `predict`: rows in, labels (or values) out."""

    def load_context(self, context: Any) -> None:
        """Rebuild the network from the version's safetensors weights and spec."""
        folder = Path(context.artifacts[WEIGHTS_ARTIFACT]).parent
        self.module, self.spec = load_model(folder)
        self.labels = labels(tuple(self.spec.classes))

    def rows(self, model_input: Any) -> Any:
        """The input as float32 rows in the version's feature order: a DataFrame is read
        by column name, an array by position."""
        spec = self.spec
        fmt = spec.image_format
        if fmt is not None:
            return self.images(model_input, fmt)
        encoding = spec.column_encoding
        if encoding is not None:
            return self.table(model_input, encoding)
        if isinstance(model_input, pd.DataFrame):
            names = spec.feature_names
            missing = [n for n in names if n not in model_input.columns]
            if missing:
                raise ValueError(f"missing feature columns: {', '.join(missing[:5])}")
            frame = model_input[names]
            return np.ascontiguousarray(frame.to_numpy(dtype=np.float32, copy=True))
        array = np.array(model_input, dtype=np.float32)
        return np.ascontiguousarray(array.reshape(len(array), spec.in_features))

    def table(self, model_input: Any, encoding: Encoding) -> Any:
        """A mixed-table version's input: a DataFrame of its raw columns (None or NaN for
        missing values), encoded exactly as training encoded the split."""
        if not isinstance(model_input, pd.DataFrame):
            raise ValueError(
                "this model reads raw columns by name: pass a DataFrame with "
                + ", ".join(encoding.columns[:10])
            )
        return encoding.read(model_input)[0]  # a RecordError is a ValueError

    def images(self, model_input: Any, fmt: ImageFormat) -> Any:
        """An image version's input: a DataFrame whose image column holds each file's
        bytes (or base64 text), decoded exactly as training decoded the split."""
        if not isinstance(model_input, pd.DataFrame) or fmt.column not in model_input.columns:
            raise ValueError(
                f"this model reads images: pass a DataFrame with a {fmt.column!r} column "
                "holding each image file's bytes"
            )
        found = []
        for i, value in enumerate(model_input[fmt.column]):
            try:
                found.append(fmt.decode(image_bytes(value)))
            except ImageError as exc:
                raise ValueError(f"row {i}: {fmt.column}: {exc}") from None
        return to_rows(np.stack(found))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> Any:
        """Labels (values for a regression), or with `params={"output": "probabilities"}`
        a DataFrame with one column per class."""
        output = (params or {}).get(OUTPUT_PARAM, "labels")
        if output not in OUTPUTS:
            raise ValueError(f"params.output = {output!r}: expected labels or probabilities")
        x = self.rows(model_input)
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x)).float().numpy()
        found = answer(out, self.spec.task, self.labels, len(x))
        if output == "probabilities" and found.probabilities is not None:
            columns = [str(c) for c in self.spec.classes]
            return pd.DataFrame(found.probabilities, columns=columns, index=None)
        return np.asarray(found.predictions)

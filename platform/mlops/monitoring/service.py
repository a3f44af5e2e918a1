"""`mlops monitor drift`: what a served version sees now against what it was trained on;
`mlops monitor performance`: how it does on the labels sent to `/feedback`.

The current rows (a file, or the serving sink's sampled requests) are compared with the
version's training split (found through its lineage, see `mlops.monitoring.reference`), feature
by feature (for images: their intensity, contrast, embedding and size, see
`mlops.monitoring.images`), and the version's predictions on both are compared too. Every
input is read and checked before the model is loaded.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops import workspace
from mlops.columns import Encoding, RecordError
from mlops.errors import DataError, UserError
from mlops.live import answered, default_sink, labelled
from mlops.monitoring import images
from mlops.monitoring.drift import assess, class_shift, value_shift
from mlops.monitoring.performance import Performance, summarise
from mlops.monitoring.plot import drift_png, performance_png
from mlops.monitoring.reference import (
    PREDICTION,
    TARGET,
    class_indices,
    feature_matrix,
    load_reference,
    read_table,
)
from mlops.params import Params, load_params
from mlops.serving.sink import read_sink
from mlops.training import predict_proba, predict_values
from registry.context import Context
from registry.loading import build, fetch, parse_target, resolve

if TYPE_CHECKING:
    import pandas as pd

    from mlops.monitoring.drift import DriftReport, PredictionShift
    from mlops.params import DriftParams
    from mlops.settings import Settings
    from registry.stages import Ref

DEFAULT_STAGE = "production"


@dataclass(frozen=True)
class DriftCheck:
    """The outcome of one check: what was compared, the report, and the plot."""

    model: str
    version: int
    ref: str
    reference: dict[str, Any]
    current: dict[str, Any]
    report: DriftReport
    thresholds: dict[str, Any]
    performance: dict[str, float] = field(default_factory=dict)
    plot: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values for `--json`."""
        return {
            "model": self.model,
            "version": self.version,
            "ref": self.ref,
            "reference": self.reference,
            "current": self.current,
            "thresholds": self.thresholds,
            "performance": self.performance,
            "plot": self.plot,
            **self.report.as_dict(),
        }


def parse_model(text: str) -> tuple[str, Ref]:
    """`digits`, `digits@staging` or `digits@3` (no reference: the production holder)."""

    return parse_target(text if any(c in text for c in "@:") else f"{text}@{DEFAULT_STAGE}")


def default_plot(settings: Settings, model: str, version: int) -> Path:
    """`reports/drift/<model>-v<version>.png` under the project root."""
    return settings.root / workspace.DRIFT_DIR / f"{model}-v{version}.png"


def read_current(
    settings: Settings, model: str, input_file: Path | None, sink: Path | None
) -> tuple[pd.DataFrame, str]:
    """The current rows and where they came from: `input_file`, else the sink."""

    if input_file is not None:
        return read_table(input_file), str(input_file)
    path = sink or default_sink(settings, model)
    if not path.is_file():
        raise UserError(
            f"{path}: no serving sink; pass --input FILE, or serve {model} with sampling on"
        )

    try:
        return read_sink(path, model), str(path)
    except (sqlite3.Error, ValueError) as exc:
        raise UserError(f"{path}: cannot read the serving sink: {exc}") from None


def _encoded(encoding: Encoding, frame: pd.DataFrame, where: str, min_rows: int) -> Any:
    """A mixed table's rows as the version encodes them: raw columns (a file, the
    training split) or, from the serving sink, the encoded values it recorded."""
    names = encoding.names()
    if all(n in frame.columns for n in names):  # the sink: already encoded
        x = frame[names].to_numpy(dtype=np.float32)
    else:
        try:
            x, _ = encoding.read(frame)
        except RecordError as exc:
            raise UserError(f"{where}: {exc}") from None
    if len(x) < min_rows:
        raise UserError(
            f"{where}: {len(x)} rows; a drift check needs at least {min_rows} "
            "(monitor.drift.min_rows)"
        )
    return x


def check_drift(
    settings: Settings,
    target: str,
    input_file: Path | None = None,
    sink: Path | None = None,
    plot: Path | None = None,
    params_file: Path | None = None,
) -> DriftCheck:
    """Compare the current rows with the training split of the version `target` names."""

    name, ref = parse_model(target)
    path = params_file or settings.root / workspace.PARAMS
    params = load_params(path) if path.is_file() else Params()
    thresholds = params.monitor.drift
    ctx = Context(settings, params.registry, params.evaluate.primary_metric)
    version = resolve(ctx, name, ref)  # first: an unknown model is named as such
    frame, where = read_current(settings, name, input_file, sink)
    reference = load_reference(settings.root, version)
    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        directory, spec = fetch(ctx, version, Path(tmp))  # verified; nothing loaded yet
        fmt = spec.image_format
        if fmt is not None:  # images: decoded as the version reads them
            ref_images = images.decode_column(
                list(reference.frame[fmt.column]), fmt, str(reference.path)
            )
            cur_images = images.current_images(frame, fmt, where)
            _enough(len(cur_images.rows), thresholds.min_rows, where)
            x_ref, x_cur = ref_images.rows, cur_images.rows
        elif spec.column_encoding is not None:  # a mixed table: encoded as the version does
            x_ref = _encoded(spec.column_encoding, reference.frame, str(reference.path), 2)
            x_cur = _encoded(spec.column_encoding, frame, where, thresholds.min_rows)
        else:
            # the version's own features, in its order (older versions: the split's columns)
            names = list(spec.features) or reference.features
            if spec.in_features != len(names):
                raise DataError(
                    f"model {name} version {version.version} reads {spec.in_features} "
                    f"features, its training split has {len(names)}"
                )
            x_ref = feature_matrix(reference.frame, names, str(reference.path), 2)
            x_cur = feature_matrix(frame, names, where, thresholds.min_rows)
        out = _plot_path(plot or default_plot(settings, name, version.version))
        module = build(version, directory, spec)
    logged = _logged(frame, version.version, spec.classes, spec.task, where)
    truth = _truth(frame, spec.classes, spec.task, where)
    ref_out = _predict(module, spec.task, x_ref)
    cur_out = logged if logged is not None else _predict(module, spec.task, x_cur)
    shift = _shift(ref_out, cur_out, spec.classes, spec.task, thresholds)
    categorical = None
    if fmt is not None:  # compared: what can drift in an image (monitoring.images)
        names, x_ref, x_cur = images.features(module, fmt, ref_images, cur_images)
    elif spec.column_encoding is not None:  # compared: each raw column
        encoding = spec.column_encoding
        names, categorical = encoding.drift_names, encoding.sizes
        x_ref, x_cur = encoding.codes(x_ref), encoding.codes(x_cur)
    report = assess(names, x_ref, x_cur, thresholds, shift, categorical)
    performance = _performance(truth, cur_out, spec.task)

    title = f"{name} v{version.version}: {Path(where).name} vs training split"
    drift_png(report, names, x_ref, x_cur, thresholds.psi, title, out)
    return DriftCheck(
        model=name,
        version=version.version,
        ref=str(ref),
        reference=reference.describe() | {"rows": len(x_ref)},
        current={"source": where, "rows": len(x_cur)},
        report=report,
        thresholds=thresholds.model_dump(),
        performance=performance,
        plot=str(out),
    )


def _enough(rows: int, min_rows: int, where: str) -> None:
    if rows < min_rows:
        raise UserError(
            f"{where}: {rows} rows; a drift check needs at least {min_rows} "
            "(monitor.drift.min_rows)"
        )


def _plot_path(path: Path) -> Path:
    """`path`, once its folder exists and is writable (`UserError` otherwise)."""

    if path.suffix.lower() != ".png":
        raise UserError(f"{path}: the plot is a PNG; give a path ending in .png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot write the plot: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path}: cannot write the plot: {path.parent} is not writable")
    return path


def _predict(module: Any, task: str, x: np.ndarray) -> np.ndarray:
    if task == "regression":
        return predict_values(module, x)
    return predict_proba(module, x).argmax(axis=1)


def _logged(
    frame: pd.DataFrame, version: int, classes: list[Any], task: str, where: str
) -> np.ndarray | None:
    """The predictions the rows carry, when all of them came from this version."""

    if PREDICTION not in frame.columns or frame[PREDICTION].isna().any():
        return None
    if "version" in frame.columns and set(frame["version"].tolist()) != {version}:
        return None
    if task == "regression":
        return np.asarray(frame[PREDICTION], dtype=np.float64)
    return class_indices(frame[PREDICTION], classes, f"{where}: column {PREDICTION}")


def _shift(
    ref: np.ndarray, cur: np.ndarray, classes: list[Any], task: str, params: DriftParams
) -> PredictionShift:
    if task == "regression":
        return value_shift(ref, cur, params)
    return class_shift(ref, cur, classes, params)


def _truth(frame: pd.DataFrame, classes: list[Any], task: str, where: str) -> np.ndarray | None:
    """The target column as class indices (or values), when the rows carry a complete one."""

    if TARGET not in frame.columns or frame[TARGET].isna().any():
        return None
    if task == "regression":
        return np.asarray(frame[TARGET], dtype=np.float64)
    return class_indices(frame[TARGET], classes, f"{where}: column {TARGET}")


def _performance(truth: np.ndarray | None, out: np.ndarray, task: str) -> dict[str, float]:
    """Accuracy (or RMSE and MAE) on the current rows, when they carry a target."""

    if truth is None:
        return {}
    if task == "regression":
        error = truth - out
        return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
    return {"accuracy": float(np.mean(truth == out))}


def check_performance(
    settings: Settings,
    target: str,
    sink: Path | None = None,
    buckets: int = 10,
    plot: Path | None = None,
) -> Performance:
    """The live performance of the version `target` names, from the sink's answers and
    labels (see `mlops.monitoring.performance`), and its plot (`plot`, default
    reports/performance/MODEL-vVERSION.png) when there are labels."""
    name, ref = parse_model(target)
    path = settings.root / workspace.PARAMS
    params = load_params(path) if path.is_file() else Params()
    ctx = Context(settings, params.registry, params.evaluate.primary_metric)
    version = resolve(ctx, name, ref)
    where = sink or default_sink(settings, name)
    if not where.is_file():
        raise UserError(
            f"{where}: no serving sink; serve {name} with --feedback and POST labels to /feedback"
        )
    try:
        found = labelled(where, name, version.version)
        total = answered(where, name, version.version)
    except sqlite3.Error as exc:
        raise UserError(f"{where}: cannot read the serving sink: {exc}") from None
    metrics, confusion, trend = summarise(found, buckets)
    result = Performance(
        name, version.version, str(ref), str(where), found.task, total, len(found), metrics,
        found.classes if confusion else [], confusion, trend,
    )  # fmt: skip
    if not len(found):
        return result
    out = _plot_path(
        plot or settings.root / workspace.PERFORMANCE_DIR / f"{name}-v{version.version}.png"
    )
    performance_png(result, out)
    return replace(result, plot=str(out))

"""`mlops monitor performance`: how a served version does on live labels.

The answers `mlops serve --feedback` recorded, joined to the labels `/feedback` received
(`mlops.serving.feedback`): accuracy with a 95% Wilson interval, the confusion matrix,
and the trend over equal shares of the labelled answers, oldest first (for a
regression: RMSE and MAE). Pure arithmetic on what the sink holds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops.live import Labelled, scores

Z95 = 1.959963984540054


def wilson(right: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `right / n` (nan, nan without rows)."""
    if n == 0:
        return math.nan, math.nan
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Window:
    """One share of the labelled answers: when they were answered, and how they did."""

    start: str
    end: str
    labelled: int
    value: float  # accuracy, or RMSE
    low: float | None = None  # accuracy's 95% interval
    high: float | None = None


@dataclass(frozen=True)
class Performance:
    """A version's live performance (see the module docstring)."""

    model: str
    version: int
    ref: str
    sink: str
    task: str
    answered: int
    labelled: int
    metrics: dict[str, float] = field(default_factory=dict)
    classes: list[Any] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # rows: label, columns: predicted
    trend: list[Window] = field(default_factory=list)
    plot: str | None = None  # the PNG written (None: no labels to plot)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for `--json` (nan as null)."""
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def summarise(
    found: Labelled, buckets: int
) -> tuple[dict[str, float], list[list[int]], list[Window]]:
    """The metrics, the confusion matrix (classification) and the trend over `buckets`
    equal shares of the labelled answers."""
    if not len(found):
        return {}, [], []
    metrics = _metrics(found.task, found.predicted, found.labels)
    confusion: list[list[int]] = []
    if found.task != "regression":
        index = {str(c): i for i, c in enumerate(found.classes)}
        confusion = [[0] * len(found.classes) for _ in found.classes]
        for p, y in zip(found.predicted, found.labels, strict=True):
            if str(p) in index and str(y) in index:
                confusion[index[str(y)]][index[str(p)]] += 1
    n = len(found)
    parts = max(1, min(buckets, n))
    trend = []
    for k in range(parts):
        lo, hi = k * n // parts, (k + 1) * n // parts
        part = _metrics(found.task, found.predicted[lo:hi], found.labels[lo:hi])
        key = "rmse" if found.task == "regression" else "accuracy"
        trend.append(
            Window(_iso(found.ts[lo]), _iso(found.ts[hi - 1]), hi - lo, part[key],
                   part.get("low"), part.get("high"))
        )  # fmt: skip
    return metrics, confusion, trend


def _metrics(task: str, predicted: list[Any], labels: list[Any]) -> dict[str, float]:
    found = scores(task, predicted, labels)
    if task == "regression":
        return found
    low, high = wilson(round(found["accuracy"] * len(labels)), len(labels))
    return found | {"low": low, "high": high}

"""Plots for people: the PNGs (confusion matrix or predicted against actual, learning
curves; matplotlib, Agg backend) and the records of DVC's plots, whose fields are the same
for a classifier and a regression, so dvc.yaml's static plot definitions fit both."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from mlops.io import write_with

# No timestamps or versions in the file, so the same data gives the same bytes.
_PNG_METADATA = {"Software": None}


def _save(fig: Any, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata=_PNG_METADATA))
    plt.close(fig)


def confusion_matrix_png(matrix: np.ndarray, classes: list[Any], path: str | Path) -> None:
    """Heat map of a confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), [str(c) for c in classes])
    ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix (test, n={int(matrix.sum())})")
    high = matrix.max() / 2 if matrix.size else 0
    if n <= 30:
        for i in range(n):
            for j in range(n):
                color = "white" if matrix[i, j] > high else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def score_metric(history: list[dict[str, float]]) -> str:
    """The validation score a learning curve shows: accuracy, or R² for a regression."""
    return "val_accuracy" if history and "val_accuracy" in history[0] else "val_r2"


def score_records(history: list[dict[str, float]]) -> list[dict[str, Any]]:
    """One row per epoch, `{epoch, val_score, metric}`, for DVC's `val_score` plot."""
    metric = score_metric(history)
    return [{"epoch": h["epoch"], "val_score": h[metric], "metric": metric} for h in history]


def binned_records(
    actual: np.ndarray, predicted: np.ndarray, bins: int = 8
) -> list[dict[str, str]]:
    """Per-sample `{actual, predicted}` of a regression as quantile bins of the actual
    values (labels like `3: 87.5-120` with an en dash, numbered so they sort in order), for DVC's
    confusion template: where the predictions of each range of the target land."""

    bins = max(1, min(bins, 9))  # one digit: the labels sort as text
    quantiles = np.linspace(0.0, 1.0, bins + 1)
    edges = np.unique(np.quantile(actual, quantiles, method="inverted_cdf"))  # data values
    if edges.size < 2:
        edges = np.array([edges[0], edges[0]])
    labels = [f"{i + 1}: {lo:.4g}–{hi:.4g}" for i, (lo, hi) in enumerate(pairwise(edges))]
    inner = edges[1:-1]

    def label(values: np.ndarray) -> list[str]:
        return [labels[i] for i in np.searchsorted(inner, values, side="right").tolist()]

    return [
        {"actual": a, "predicted": p} for a, p in zip(label(actual), label(predicted), strict=True)
    ]


def learning_curves_png(history: list[dict[str, float]], path: str | Path) -> None:
    """Train/validation loss and the validation score (accuracy, or R²) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    left.plot(epochs, [h["val_loss"] for h in history], label="validation")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    score = score_metric(history)
    right.plot(epochs, [h[score] for h in history], color="tab:green")
    right.set_xlabel("epoch")
    right.set_ylabel(score.replace("_", " "))
    fig.suptitle("Learning curves")
    fig.tight_layout()
    _save(fig, path)


def predictions_png(actual: np.ndarray, predicted: np.ndarray, path: str | Path) -> None:
    """Predicted against actual values of a regression target, with the identity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(actual, predicted, s=8, alpha=0.6)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="gray", linewidth=1)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(f"Test predictions (n={len(actual)})")
    fig.tight_layout()
    _save(fig, path)

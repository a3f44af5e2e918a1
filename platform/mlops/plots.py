"""PNG plots for people: confusion matrix and learning curves (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.io import write_with

if TYPE_CHECKING:
    import numpy as np

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
    score = "val_accuracy" if "val_accuracy" in history[0] else "val_r2"
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

"""Classification metrics from plain arrays (no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1 and log-loss of predicted class probabilities."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    y_pred = proba.argmax(axis=1)
    labels = list(range(proba.shape[1]))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(
            f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
        ),
        "log_loss": float(log_loss(y_true, np.clip(proba, 1e-12, 1.0), labels=labels)),
        "n_samples": float(len(y_true)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² of predictions in the target's units."""
    err = y_pred.astype(np.float64) - y_true.astype(np.float64)
    total = float(((y_true - y_true.mean()) ** 2).sum())
    return {
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - float((err**2).sum()) / total if total > 0 else 0.0,
        "n_samples": float(len(y_true)),
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix counts, rows = actual, columns = predicted."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def confusion_records(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any]
) -> list[dict[str, str]]:
    """Per-sample actual/predicted pairs, as DVC's confusion-matrix plot template reads them."""
    return [
        {"actual": str(classes[a]), "predicted": str(classes[p])}
        for a, p in zip(y_true.tolist(), y_pred.tolist(), strict=True)
    ]

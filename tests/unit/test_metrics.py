"""Classification metrics from plain arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlops.metrics import classification_metrics, confusion, confusion_records


def test_perfect_predictions() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.eye(3)[y]
    metrics = classification_metrics(y, proba)
    assert metrics["accuracy"] == 1.0
    assert metrics["f1_macro"] == 1.0
    assert metrics["log_loss"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["n_samples"] == 6.0
    matrix = confusion(y, proba.argmax(axis=1), 3)
    np.testing.assert_array_equal(matrix, np.diag([2, 2, 2]))
    assert matrix.dtype == np.int64


def test_known_small_example() -> None:
    y_true = np.array([0, 0, 2, 2])
    proba = np.array([[0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    metrics = classification_metrics(y_true, proba)
    # predictions 0, 1, 1, 2: class 0 F1 2/3, class 1 F1 0, class 2 F1 2/3
    assert metrics["accuracy"] == 0.5
    assert metrics["f1_macro"] == pytest.approx(4 / 9)
    expected_loss = -(math.log(0.6) + math.log(0.3) + math.log(0.3) + math.log(0.8)) / 4
    assert metrics["log_loss"] == pytest.approx(expected_loss)
    assert metrics["n_samples"] == 4.0
    assert set(metrics) == {"accuracy", "f1_macro", "log_loss", "n_samples"}
    assert all(type(v) is float for v in metrics.values())


def test_binary_example() -> None:
    y_true = np.array([1, 1, 0, 0, 1])
    proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1], [0.3, 0.7], [0.1, 0.9]], dtype=np.float32)
    metrics = classification_metrics(y_true, proba)
    # predictions 1, 0, 0, 1, 1: class 0 P=1/2 R=1/2, class 1 P=2/3 R=2/3
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["f1_macro"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_confusion_rows_are_actual_columns_predicted() -> None:
    matrix = confusion(np.array([0, 0, 2, 2]), np.array([0, 1, 1, 2]), 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 0, 0], [0, 1, 1]])
    assert matrix.sum() == 4


def test_confusion_counts_repeated_pairs() -> None:
    matrix = confusion(np.array([1, 1, 1]), np.array([0, 0, 0]), 2)
    np.testing.assert_array_equal(matrix, [[0, 0], [3, 0]])


def test_confusion_records_format() -> None:
    records = confusion_records(np.array([0, 1, 2]), np.array([1, 1, 0]), ["cat", "dog", 7])
    assert records == [
        {"actual": "cat", "predicted": "dog"},
        {"actual": "dog", "predicted": "dog"},
        {"actual": "7", "predicted": "cat"},
    ]
    assert all(set(r) == {"actual", "predicted"} for r in records)


def test_confusion_records_length_mismatch() -> None:
    with pytest.raises(ValueError):
        confusion_records(np.array([0, 1]), np.array([0]), ["a", "b"])

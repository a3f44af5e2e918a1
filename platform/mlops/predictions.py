"""From a model's raw outputs to answers: class labels with their probabilities, or
regression values. `mlops serve`, the `mlflow.pyfunc` model of a version and the registry
all call this one function, so every door gives the same answer for the same row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Answers:
    """What a batch of raw outputs means: `predictions` (labels, or values for a
    regression), `probabilities` (rows x classes; None for a regression) and `index`
    (the predicted class indices, or the values)."""

    predictions: np.ndarray | list[Any]
    probabilities: np.ndarray | None
    index: np.ndarray


def labels(classes: list[Any] | tuple[Any, ...]) -> np.ndarray | list[Any]:
    """Class labels indexable by an array of class indices (integers as an int64 array)."""

    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return np.asarray(classes, dtype=np.int64)
    return list(classes)


def softmax(out: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits, computed stably (float32 in, float32 out)."""

    shifted = np.exp(out - out.max(axis=1, keepdims=True))
    result: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def answer(out: np.ndarray, task: str, classes: np.ndarray | list[Any], rows: int) -> Answers:
    """The answers to `rows` rows whose raw outputs are `out` (logits, or regression
    values in the target's units); `classes` as `labels()` returns them."""

    if task == "regression":
        values = out.reshape(rows)
        return Answers(values, None, values)
    proba = softmax(out)
    index = out.argmax(axis=1)
    predicted = classes[index] if isinstance(classes, np.ndarray) else [classes[i] for i in index]
    return Answers(predicted, proba, index)

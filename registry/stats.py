"""Significance of a difference between two models on the same test rows: McNemar's
exact test on paired correctness and a paired bootstrap confidence interval. Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class McNemar:
    """Rows only A got right (`a_only`), only B got right (`b_only`), and the exact
    two-sided p-value of the difference."""

    a_only: int
    b_only: int
    p_value: float


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's exact test (binomial on the discordant pairs)."""
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("both models must be scored on the same rows")
    a_only = int((a & ~b).sum())
    b_only = int((b & ~a).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(min(a_only, b_only), n, 0.5).pvalue)
    return McNemar(a_only, b_only, min(p, 1.0))


@dataclass(frozen=True)
class Interval:
    """A difference (B - A) of a metric and its bootstrap confidence interval."""

    delta: float
    low: float
    high: float
    level: float

    def excludes_zero(self) -> bool:
        """True when the interval lies wholly on one side of zero."""
        return self.low > 0.0 or self.high < 0.0


def paired_bootstrap(
    metric: Metric,
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    rounds: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Resample rows with replacement (the same rows for both models) and take the
    percentile interval of metric(B) - metric(A)."""
    n = len(y_true)
    if n == 0 or len(pred_a) != n or len(pred_b) != n:
        raise ValueError("both models must be scored on the same, non-empty rows")
    rng = np.random.default_rng(seed)
    deltas = np.empty(rounds)
    for i in range(rounds):
        idx = rng.integers(0, n, n)
        deltas[i] = metric(y_true[idx], pred_b[idx]) - metric(y_true[idx], pred_a[idx])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(deltas, [tail, 1.0 - tail])
    delta = metric(y_true, pred_b) - metric(y_true, pred_a)
    return Interval(float(delta), float(low), float(high), level)

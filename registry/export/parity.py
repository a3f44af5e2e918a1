"""Parity of an exported file with the PyTorch model it came from: plain arrays in, checks
with their value, threshold and pass/fail out. Pure (numpy only).

Three numbers are compared on the test split:

- max abs diff: of the class probabilities (regression: of the predicted values, relative
  to the spread of the reference's predictions) between the exported file and the PyTorch
  module that was converted (after pruning, if any);
- agreement: the share of rows where both predict the same label (regression: rows whose
  prediction moved by at most `REGRESSION_AGREE` of that spread);
- the quality delta against the registered model: accuracy points (regression: % of RMSE),
  which a pruned or int8 export may lose up to `max_drop`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FP32_MAX_ABS_DIFF = 1e-4
"""An fp32 export (not quantized) must reproduce every probability within this."""
FP32_MIN_AGREEMENT = 1.0
"""An fp32 export must predict the same label on every test row."""
INT8_MIN_AGREEMENT = 0.98
"""An int8 export must predict the same label as the converted module on ≥ 98% of rows
(int8 moves probabilities by up to ~0.25 and flips near-ties: 2 of digits' 270 test rows
with the default MLP; the accuracy delta is the stronger guard)."""
MAX_DROP = 1.0
"""Default for `--max-drop`: accuracy points (regression: % of RMSE) an export may lose
against the registered model."""
REGRESSION_AGREE = 0.01
"""Regression rows "agree" when their prediction moved by ≤ 1% of the predictions' spread."""


@dataclass(frozen=True)
class Check:
    """One parity check: what was measured, against what, and whether it passed."""

    check: str
    value: str
    threshold: str
    passed: bool


@dataclass(frozen=True)
class Parity:
    """Parity numbers of one export and the checks they were held to."""

    metric: str
    baseline: float
    exported: float
    delta: float
    max_abs_diff: float
    agreement: float
    checks: list[Check]

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)

    def failed(self) -> Check | None:
        """The first failed check, if any."""
        return next((c for c in self.checks if not c.passed), None)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _quality(task: str, outputs: np.ndarray, y: np.ndarray) -> float:
    if task == "regression":
        return float(np.sqrt(np.mean((outputs.reshape(-1).astype(np.float64) - y) ** 2)))
    return float(np.mean(outputs.argmax(axis=1) == y))


def _delta(task: str, baseline: float, exported: float) -> float:
    # Positive is better: accuracy points gained, or % of RMSE saved.
    if task == "regression":
        return (baseline - exported) / baseline * 100.0 if baseline > 0 else 0.0
    return (exported - baseline) * 100.0


def compare(
    task: str,
    y: np.ndarray,
    baseline: np.ndarray,
    converted: np.ndarray,
    exported: np.ndarray,
    *,
    quantized: bool,
    max_drop: float = MAX_DROP,
) -> Parity:
    """Parity of `exported` outputs with those of the `converted` module (the registered
    `baseline` after pruning, or the same) and quality against `baseline`.

    Outputs are raw: logits for classification, values for regression.
    """
    if task == "regression":
        ref, out = converted.reshape(-1).astype(np.float64), exported.reshape(-1)
        spread = max(float(np.std(ref)), 1e-12)
        diff = np.abs(out - ref) / spread
        agreement = float(np.mean(diff <= REGRESSION_AGREE)) if len(ref) else 1.0
        metric, unit, agree = "rmse", "% of rmse", "agreement"
    else:
        diff = np.abs(softmax(exported) - softmax(converted))
        agreement = float(np.mean(exported.argmax(axis=1) == converted.argmax(axis=1)))
        metric, unit, agree = "accuracy", "points", "label agreement"
    max_abs_diff = float(diff.max()) if diff.size else 0.0
    before, after = _quality(task, baseline, y), _quality(task, exported, y)
    delta = _delta(task, before, after)
    checks: list[Check] = []
    if not quantized:
        checks.append(
            Check(
                "max abs diff",
                f"{max_abs_diff:.3g}",
                f"≤ {FP32_MAX_ABS_DIFF:g}",
                max_abs_diff <= FP32_MAX_ABS_DIFF,
            )
        )
    least = INT8_MIN_AGREEMENT if quantized else FP32_MIN_AGREEMENT
    checks.append(Check(agree, f"{agreement:.2%}", f"≥ {least:.0%}", agreement >= least))
    checks.append(
        Check(
            f"{metric} delta",
            f"{delta:+.2f} {unit}",
            f"≥ -{max_drop:g} {unit}",
            delta >= -max_drop - 1e-9,
        )
    )
    return Parity(metric, before, after, delta, max_abs_diff, agreement, checks)

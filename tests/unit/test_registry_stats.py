"""McNemar's exact test and the paired bootstrap interval on small known cases."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from registry.stats import Interval, McNemar, mcnemar, paired_bootstrap


def _accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float((y == pred).mean())


def _mse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(((y - pred) ** 2).mean())


# --- McNemar --------------------------------------------------------------------------


def test_mcnemar_no_discordant_pairs() -> None:
    a = np.array([True, False, True, True, False])
    assert mcnemar(a, a.copy()) == McNemar(0, 0, 1.0)


def test_mcnemar_all_wrong_together() -> None:
    a = np.zeros(8, dtype=bool)
    assert mcnemar(a, a) == McNemar(0, 0, 1.0)


def test_mcnemar_ten_to_zero() -> None:
    a = np.array([True] * 10 + [True, False] * 5)
    b = np.array([False] * 10 + [True, False] * 5)
    result = mcnemar(a, b)
    assert result.a_only == 10
    assert result.b_only == 0
    assert result.p_value == pytest.approx(2 * 0.5**10)  # 0.001953125
    assert result.p_value == pytest.approx(0.00195, abs=1e-5)


def test_mcnemar_is_symmetric() -> None:
    a = np.array([True] * 10 + [False] * 3)
    b = np.array([False] * 10 + [True] * 3)
    ab, ba = mcnemar(a, b), mcnemar(b, a)
    assert (ab.a_only, ab.b_only) == (10, 3)
    assert (ba.a_only, ba.b_only) == (3, 10)
    assert ab.p_value == pytest.approx(ba.p_value)
    # exact two-sided binomial: 2 * P(X <= 3), X ~ Bin(13, 0.5)
    expected = 2 * sum(comb(13, k) for k in range(4)) / 2**13
    assert ab.p_value == pytest.approx(expected)


def test_mcnemar_balanced_discordance_is_not_significant() -> None:
    a = np.array([True, False] * 6)
    b = np.array([False, True] * 6)
    result = mcnemar(a, b)
    assert (result.a_only, result.b_only) == (6, 6)
    assert result.p_value == 1.0


def test_mcnemar_one_discordant_pair_p_is_one() -> None:
    result = mcnemar(np.array([True, True]), np.array([True, False]))
    assert (result.a_only, result.b_only) == (1, 0)
    assert result.p_value == 1.0


def test_mcnemar_accepts_int_arrays() -> None:
    result = mcnemar(np.array([1, 1, 0]), np.array([0, 1, 0]))
    assert (result.a_only, result.b_only) == (1, 0)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.ones(5, dtype=bool), np.ones(4, dtype=bool)),
        (np.ones((2, 3), dtype=bool), np.ones(6, dtype=bool)),
    ],
)
def test_mcnemar_shape_mismatch(a: np.ndarray, b: np.ndarray) -> None:
    with pytest.raises(ValueError, match="same rows"):
        mcnemar(a, b)


# --- paired bootstrap -------------------------------------------------------------------


def _labels(n: int = 200, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, n)


def test_bootstrap_identical_predictions() -> None:
    y = _labels()
    pred = y.copy()
    pred[::4] = (pred[::4] + 1) % 3
    interval = paired_bootstrap(_accuracy, y, pred, pred.copy(), rounds=200)
    assert interval == Interval(0.0, 0.0, 0.0, 0.95)
    assert not interval.excludes_zero()


def test_bootstrap_delta_is_b_minus_a_and_inside_interval() -> None:
    y = _labels()
    rng = np.random.default_rng(7)
    pred_a = np.where(rng.random(len(y)) < 0.7, y, (y + 1) % 3)
    pred_b = np.where(rng.random(len(y)) < 0.75, y, (y + 2) % 3)
    interval = paired_bootstrap(_accuracy, y, pred_a, pred_b, rounds=300)
    assert interval.delta == pytest.approx(_accuracy(y, pred_b) - _accuracy(y, pred_a))
    assert interval.low <= interval.delta <= interval.high
    assert interval.low < interval.high
    assert interval.level == 0.95


def test_bootstrap_clearly_better_model_excludes_zero() -> None:
    y = _labels()
    good = y.copy()
    bad = y.copy()
    bad[: len(y) // 2] = (bad[: len(y) // 2] + 1) % 3  # 50% accuracy
    better = paired_bootstrap(_accuracy, y, bad, good, rounds=300)
    assert better.delta == pytest.approx(0.5)
    assert better.low > 0.0
    assert better.excludes_zero()
    worse = paired_bootstrap(_accuracy, y, good, bad, rounds=300)
    assert worse.delta == pytest.approx(-0.5)
    assert worse.high < 0.0
    assert worse.excludes_zero()


def test_bootstrap_reproducible_with_seed() -> None:
    y = _labels()
    rng = np.random.default_rng(3)
    pred_a = rng.integers(0, 3, len(y))
    pred_b = rng.integers(0, 3, len(y))
    first = paired_bootstrap(_accuracy, y, pred_a, pred_b, rounds=200, seed=11)
    again = paired_bootstrap(_accuracy, y, pred_a, pred_b, rounds=200, seed=11)
    other = paired_bootstrap(_accuracy, y, pred_a, pred_b, rounds=200, seed=12)
    assert first == again
    assert first.delta == other.delta
    assert (first.low, first.high) != (other.low, other.high)


def test_bootstrap_wider_level_gives_wider_interval() -> None:
    y = _labels()
    rng = np.random.default_rng(5)
    pred_a = np.where(rng.random(len(y)) < 0.6, y, (y + 1) % 3)
    pred_b = np.where(rng.random(len(y)) < 0.6, y, (y + 1) % 3)
    narrow = paired_bootstrap(_accuracy, y, pred_a, pred_b, rounds=400, level=0.5)
    wide = paired_bootstrap(_accuracy, y, pred_a, pred_b, rounds=400, level=0.99)
    assert narrow.level == 0.5
    assert wide.low <= narrow.low
    assert wide.high >= narrow.high
    assert (wide.high - wide.low) > (narrow.high - narrow.low)


def test_bootstrap_regression_metric() -> None:
    y = np.linspace(0.0, 10.0, 100)
    pred_a = y + 1.0  # mse 1
    pred_b = y + 0.1  # mse 0.01
    interval = paired_bootstrap(_mse, y, pred_a, pred_b, rounds=100)
    assert interval.delta == pytest.approx(0.01 - 1.0)
    # the errors are constant, so every resample gives the same difference
    assert interval.low == pytest.approx(-0.99)
    assert interval.high == pytest.approx(-0.99)
    assert interval.excludes_zero()


def test_bootstrap_single_row() -> None:
    interval = paired_bootstrap(_accuracy, np.array([1]), np.array([0]), np.array([1]), rounds=20)
    assert interval == Interval(1.0, 1.0, 1.0, 0.95)


@pytest.mark.parametrize(
    ("y", "a", "b"),
    [
        pytest.param(np.array([]), np.array([]), np.array([]), id="empty"),
        pytest.param(np.zeros(5), np.zeros(4), np.zeros(5), id="short-a"),
        pytest.param(np.zeros(5), np.zeros(5), np.zeros(6), id="long-b"),
    ],
)
def test_bootstrap_bad_rows(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    with pytest.raises(ValueError, match="same, non-empty rows"):
        paired_bootstrap(_accuracy, y, a, b, rounds=10)


@pytest.mark.parametrize(
    ("low", "high", "excludes"),
    [
        (0.01, 0.2, True),
        (-0.3, -0.1, True),
        (-0.1, 0.1, False),
        (0.0, 0.2, False),
        (-0.2, 0.0, False),
    ],
)
def test_interval_excludes_zero(low: float, high: float, excludes: bool) -> None:
    assert Interval(0.0, low, high, 0.95).excludes_zero() is excludes

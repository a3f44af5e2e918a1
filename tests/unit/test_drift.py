"""Drift statistics on synthetic data: PSI, KS, the prediction shift and the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlops.errors import UserError
from mlops.monitoring import drift
from mlops.params import DriftParams, MonitorParams, load_params, parse_params

REPO = Path(__file__).resolve().parents[2]
NAMES = [f"f{i}" for i in range(8)]
DEFAULTS = DriftParams()


def normal(rows: int, seed: int, features: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, features))


def test_identical_distributions_do_not_drift() -> None:
    report = drift.assess(NAMES, normal(2000, 0), normal(500, 1), DEFAULTS)
    assert not report.drift and report.reasons == []
    assert report.drifted_features == []
    assert all(f.psi < 0.1 for f in report.features)
    assert all(f.ks_pvalue > report.pvalue_per_feature for f in report.features)


def test_a_shift_of_one_std_in_three_features_flags_exactly_those() -> None:
    current = normal(500, 1)
    current[:, [1, 4, 6]] += 1.0
    report = drift.assess(NAMES, normal(2000, 0), current, DEFAULTS)
    assert report.drift
    assert sorted(report.drifted_features) == ["f1", "f4", "f6"]
    assert [f.name for f in report.features[:3]] == report.drifted_features  # highest PSI first
    for feature in report.features[:3]:
        assert feature.psi > 0.2 and feature.flagged_by == ["psi", "ks"]
    assert report.drifted_share == pytest.approx(3 / 8)
    assert "3 of 8 features drifted" in report.reasons[0]


def test_small_samples_need_a_significant_shift() -> None:
    # 30 rows of the same distribution: PSI is inflated by noise, the tests say so.
    reference, current = normal(2000, 0), normal(30, 1)
    report = drift.assess(NAMES, reference, current, DEFAULTS)
    assert max(f.psi for f in report.features) > 0.2
    assert not report.drift
    shifted = current.copy()
    shifted[:, 0] += 2.0
    assert drift.assess(NAMES, reference, shifted, DEFAULTS).drifted_features == ["f0"]


def test_huge_samples_need_a_large_effect() -> None:
    reference, current = normal(100_000, 0, 2), normal(100_000, 1, 2) + 0.05
    report = drift.assess(["a", "b"], reference, current, DEFAULTS)
    for feature in report.features:  # significant, but negligible
        assert feature.ks_pvalue < 1e-6 and feature.psi_pvalue < 1e-6
        assert feature.ks_statistic < 0.1 and feature.psi < 0.2
    assert not report.drift


def test_constant_features() -> None:
    reference = np.zeros((500, 2))
    same = drift.assess(["a", "b"], reference, np.zeros((100, 2)), DEFAULTS)
    assert not same.drift
    assert same.features[0].psi == pytest.approx(0.0, abs=1e-9)
    assert same.features[0].ks_pvalue == 1.0
    moved = np.zeros((100, 2))
    moved[:, 1] = 1.0
    report = drift.assess(["a", "b"], reference, moved, DEFAULTS)
    assert report.drifted_features == ["b"]
    # one value, two edges: below, the value itself, above
    assert list(drift.bin_edges(reference[:, 0])) == [0.0, np.nextafter(0.0, 1.0)]


def test_values_outside_the_training_range_count() -> None:
    reference = np.tile(np.arange(10.0), 50)
    edges = drift.bin_edges(reference, 10)
    assert edges[0] == 0.0 and edges[-1] > 9.0
    counts = drift.binned_counts(np.array([-1.0, 0.0, 9.0, 9.5, 10.0]), edges)
    assert counts[0] == 1 and counts[-1] == 2  # -1 below, 9.5 and 10 above
    assert drift.psi(reference, reference + 0.5) > 0.2


def test_psi_is_symmetric_smoothed_and_zero_for_equal_counts() -> None:
    counts = np.array([10, 0, 5])
    assert drift.psi_of_counts(counts, counts) == 0.0
    shares = drift.smoothed_shares(np.array([0, 10]))
    assert shares.sum() == pytest.approx(1.0) and shares.min() > 0
    a, b = np.array([30, 10, 0]), np.array([10, 10, 20])
    assert drift.psi_of_counts(a, b) == pytest.approx(drift.psi_of_counts(b, a))


def test_max_drifted_share_tolerates_a_few_features() -> None:
    current = normal(500, 1)
    current[:, 0] += 1.0
    lenient = DriftParams(max_drifted_share=0.2)
    report = drift.assess(NAMES, normal(2000, 0), current, lenient)
    assert report.drifted_features == ["f0"] and not report.drift


def test_class_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 3, 900)
    stable = drift.class_shift(reference, rng.integers(0, 3, 300), ["a", "b", "c"], DEFAULTS)
    assert not stable.drifted and stable.kind == "classes"
    assert sum(stable.reference.values()) == pytest.approx(1.0)
    skewed = drift.class_shift(reference, np.zeros(300, dtype=int), ["a", "b", "c"], DEFAULTS)
    assert skewed.drifted and skewed.psi > 1.0
    assert skewed.current == {"a": 1.0, "b": 0.0, "c": 0.0}
    report = drift.assess(NAMES, normal(2000, 0), normal(500, 1), DEFAULTS, skewed)
    assert report.drift and report.drifted_features == []
    assert report.reasons[0].startswith("predicted classes shifted: PSI")


def test_value_shift() -> None:
    reference = np.random.default_rng(0).normal(size=1000)
    assert not drift.value_shift(reference, reference[:300], DEFAULTS).drifted
    moved = drift.value_shift(reference, reference[:300] + 1.5, DEFAULTS)
    assert moved.drifted and moved.current["mean"] > moved.reference["mean"] + 1


def test_report_as_json() -> None:
    current = normal(300, 1)
    current[:, 2] *= 3
    shift = drift.class_shift(np.array([0, 1] * 50), np.array([0, 1] * 50), [0, 1], DEFAULTS)
    report = drift.assess(NAMES, normal(2000, 0), current, DEFAULTS, shift)
    found = json.loads(json.dumps(report.as_dict()))
    assert found["drift"] is True and found["drifted_features"] == ["f2"]
    assert found["features"][0]["name"] == "f2" and found["features"][0]["drifted"] is True
    assert found["prediction"]["kind"] == "classes"
    assert found["pvalue_per_feature"] == pytest.approx(0.01 / 8)


def test_bonferroni_can_be_turned_off() -> None:
    _, alpha = drift.feature_drift(NAMES, normal(50, 0), normal(50, 1), DriftParams())
    assert alpha == pytest.approx(0.01 / 8)
    plain = DriftParams(bonferroni=False)
    assert drift.feature_drift(NAMES, normal(50, 0), normal(50, 1), plain)[1] == 0.01


def test_monitor_params_defaults_and_one_line_errors() -> None:
    assert parse_params({}).monitor.drift == DriftParams()
    assert load_params(REPO / "params.yaml").monitor == MonitorParams()  # documented defaults
    custom = parse_params({"monitor": {"drift": {"psi": 0.25, "max_drifted_share": 0.1}}})
    assert custom.monitor.drift.psi == 0.25
    with pytest.raises(UserError, match=r"monitor\.drift\.psi = -1\.0: .*greater than 0"):
        parse_params({"monitor": {"drift": {"psi": -1.0}}})
    with pytest.raises(UserError, match=r"monitor\.drift\.threshold: unknown key"):
        parse_params({"monitor": {"drift": {"threshold": 0.2}}})
    with pytest.raises(UserError, match=r"monitor\.drift\.max_drifted_share = 1\.0"):
        parse_params({"monitor": {"drift": {"max_drifted_share": 1.0}}})


def test_a_categorical_column_is_compared_by_its_categories() -> None:
    rng = np.random.default_rng(0)
    shares = [0.0, 0.05, 0.5, 0.3, 0.15]  # unseen, missing, then three categories
    ref = np.column_stack([rng.choice(5, 3000, p=shares), rng.normal(size=3000)])
    same = np.column_stack([rng.choice(5, 600, p=shares), rng.normal(size=600)])
    moved = same.copy()
    moved[:150, 0] = 0  # a quarter of the rows: categories training never saw
    names, sizes = ["country", "age"], {"country": 5}
    quiet = drift.assess(names, ref, same, DEFAULTS, categorical=sizes)
    assert not quiet.drift
    country = next(f for f in quiet.features if f.name == "country")
    assert country.unseen_share == 0.0 and country.ks_pvalue == 1.0
    report = drift.assess(names, ref, moved, DEFAULTS, categorical=sizes)
    assert report.drifted_features == ["country"]
    country = report.features[0]
    assert country.unseen_share == pytest.approx(0.25) and country.flagged_by == ["psi"]
    age = report.features[1]
    assert age.unseen_share is None and age.ks_statistic > 0  # numbers keep PSI and KS

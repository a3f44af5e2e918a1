"""The records behind DVC's plots: the same fields for a classifier and a regression."""

from __future__ import annotations

import numpy as np

from mlops.plots import binned_records, score_records


def test_score_records_use_accuracy_or_r2() -> None:
    classifier = [{"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.8, "val_f1_macro": 0.7}]
    regression = [{"epoch": 1, "val_loss": 0.5, "val_rmse": 9.0, "val_r2": 0.4}]
    assert score_records(classifier) == [{"epoch": 1, "val_score": 0.8, "metric": "val_accuracy"}]
    assert score_records(regression) == [{"epoch": 1, "val_score": 0.4, "metric": "val_r2"}]


def test_binned_records_place_each_value_in_its_quantile_bin() -> None:
    actual = np.arange(100, dtype=float)
    records = binned_records(actual, actual, bins=4)
    assert len(records) == 100
    assert all(r["actual"] == r["predicted"] for r in records)
    labels = sorted({r["actual"] for r in records})
    assert labels == ["1: 0–24", "2: 24–49", "3: 49–74", "4: 74–99"]
    counts = [sum(r["actual"] == label for r in records) for label in labels]
    assert counts == [24, 25, 25, 26]  # a value on an edge starts the next bin


def test_binned_predictions_outside_the_range_go_to_the_outer_bins() -> None:
    actual = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([-50.0, 2.0, 3.0, 500.0])
    records = binned_records(actual, predicted, bins=2)
    assert [r["predicted"] for r in records] == ["1: 1–2", "2: 2–4", "2: 2–4", "2: 2–4"]


def test_binned_records_of_a_constant_or_discrete_target() -> None:
    assert {r["actual"] for r in binned_records(np.full(5, 7.0), np.full(5, 7.0))} == {"1: 7–7"}
    few = binned_records(np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 1.0]))
    assert sorted({r["actual"] for r in few}) == ["1: 0–1"]


def test_bins_are_capped_at_nine_so_labels_sort_in_order() -> None:
    records = binned_records(np.arange(1000.0), np.arange(1000.0), bins=50)
    labels = sorted({r["actual"] for r in records})
    assert len(labels) == 9
    assert [int(label.split(":")[0]) for label in labels] == list(range(1, 10))

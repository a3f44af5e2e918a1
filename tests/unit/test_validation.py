"""Data validation checks: each failure is named in the report and in the summary line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.data import BUILTIN_DIGITS, Schema, infer_schema, load_source
from mlops.params import ValidateParams
from mlops.validation import failure_summary, validate_frame

CHECK_NAMES = {
    "schema.columns",
    "schema.numeric_features",
    "missing_values",
    "labels.set",
    "labels.balance",
    "labels.min_rows_per_class",
    "duplicates",
    "rows",
}


@pytest.fixture(scope="module")
def digits_and_schema() -> tuple[pd.DataFrame, Schema]:
    frame = load_source(BUILTIN_DIGITS, "target", Path("."))
    return frame, infer_schema(frame.copy(), BUILTIN_DIGITS, "target")


@pytest.fixture
def digits(digits_and_schema: tuple[pd.DataFrame, Schema]) -> pd.DataFrame:
    return digits_and_schema[0].copy()


@pytest.fixture
def schema(digits_and_schema: tuple[pd.DataFrame, Schema]) -> Schema:
    return digits_and_schema[1]


def _failed(report: dict) -> set[str]:
    return {c["name"] for c in report["checks"] if not c["passed"]}


def test_digits_pass(digits: pd.DataFrame, schema: Schema) -> None:
    report = validate_frame(digits, schema, ValidateParams())
    assert report["passed"] is True
    assert report["n_rows"] == 1797
    assert {c["name"] for c in report["checks"]} == CHECK_NAMES
    assert _failed(report) == set()
    assert sum(report["class_counts"].values()) == 1797
    assert set(report["class_counts"]) == {str(i) for i in range(10)}
    assert failure_summary(report) == ""
    json.dumps(report)  # JSON-ready


def test_a_mostly_empty_column_fails_named(digits: pd.DataFrame, schema: Schema) -> None:
    digits.loc[:4, "px_0_2"] = np.nan
    digits.loc[: int(len(digits) * 0.6), "px_0_3"] = np.nan  # 60% empty: over the 0.5 default
    report = validate_frame(digits, schema, ValidateParams())
    assert report["passed"] is False
    assert _failed(report) == {"missing_values"}
    check = next(c for c in report["checks"] if c["name"] == "missing_values")
    assert check["value"] == pytest.approx((int(len(digits) * 0.6) + 1) / 1797, abs=1e-6)
    assert "column 'px_0_3' is 60.0% empty" in check["detail"]


def test_missing_values_under_the_limit_pass(digits: pd.DataFrame, schema: Schema) -> None:
    digits.loc[:4, "px_0_3"] = np.nan
    assert validate_frame(digits, schema, ValidateParams(max_missing_fraction=0.01))["passed"]
    report = validate_frame(digits, schema, ValidateParams(max_missing_fraction=0.0))
    assert _failed(report) == {"missing_values"}


def test_a_row_without_target_fails(digits: pd.DataFrame, schema: Schema) -> None:
    digits["target"] = digits["target"].astype("Int64")
    digits.loc[[3, 7], "target"] = pd.NA
    report = validate_frame(digits, schema, ValidateParams())
    assert _failed(report) == {"missing_values"}
    assert "2 rows have no target" in failure_summary(report)


def test_class_with_too_few_rows_fails(digits: pd.DataFrame, schema: Schema) -> None:
    small = pd.concat(
        [digits[digits.target != 3], digits[digits.target == 3].iloc[:5]], ignore_index=True
    )
    report = validate_frame(small, schema, ValidateParams(min_rows_per_class=10))
    assert _failed(report) == {"labels.min_rows_per_class"}
    check = next(c for c in report["checks"] if c["name"] == "labels.min_rows_per_class")
    assert check["value"] == 5
    assert "3" in check["detail"]


def test_duplicates_over_threshold_fail(digits: pd.DataFrame, schema: Schema) -> None:
    doubled = pd.concat([digits, digits.iloc[:200]], ignore_index=True)
    report = validate_frame(doubled, schema, ValidateParams(max_duplicate_fraction=0.05))
    assert _failed(report) == {"duplicates"}
    check = next(c for c in report["checks"] if c["name"] == "duplicates")
    assert check["value"] == pytest.approx(200 / 1997, abs=1e-6)


def test_few_duplicates_pass(digits: pd.DataFrame, schema: Schema) -> None:
    report = validate_frame(
        pd.concat([digits, digits.iloc[:10]], ignore_index=True), schema, ValidateParams()
    )
    assert report["passed"] is True


def test_conflicting_labels_are_counted(digits: pd.DataFrame, schema: Schema) -> None:
    clash = digits.iloc[:1].copy()
    clash["target"] = (clash["target"] + 1) % 10
    report = validate_frame(pd.concat([digits, clash], ignore_index=True), schema, ValidateParams())
    check = next(c for c in report["checks"] if c["name"] == "duplicates")
    assert "2 rows share features but not the label" in check["detail"]


@pytest.mark.parametrize("kind", ["string", "bool"])
def test_non_numeric_feature_fails(digits: pd.DataFrame, schema: Schema, kind: str) -> None:
    if kind == "string":
        digits["px_0_0"] = digits["px_0_0"].astype(str)
    else:
        digits["px_0_0"] = digits["px_0_0"] > 0
    report = validate_frame(digits, schema, ValidateParams(max_duplicate_fraction=1.0))
    assert "schema.numeric_features" in _failed(report)
    check = next(c for c in report["checks"] if c["name"] == "schema.numeric_features")
    assert check["value"] == ["px_0_0"]


def test_single_class_fails(digits: pd.DataFrame, schema: Schema) -> None:
    report = validate_frame(digits[digits.target == 0], schema, ValidateParams())
    assert _failed(report) == {"labels.set"}
    assert "at least 2" in failure_summary(report)


def test_unknown_label_fails(digits: pd.DataFrame, schema: Schema) -> None:
    digits.loc[:20, "target"] = 42
    report = validate_frame(digits, schema, ValidateParams())
    assert "labels.set" in _failed(report)
    assert "42" in failure_summary(report)


def test_too_many_classes_fail(digits: pd.DataFrame, schema: Schema) -> None:
    report = validate_frame(digits, schema, ValidateParams(max_classes=5))
    assert _failed(report) == {"labels.set"}


def test_column_mismatch_fails(digits: pd.DataFrame, schema: Schema) -> None:
    changed = digits.drop(columns=["px_7_7"]).assign(extra=1.0)
    report = validate_frame(changed, schema, ValidateParams())
    assert "schema.columns" in _failed(report)
    check = next(c for c in report["checks"] if c["name"] == "schema.columns")
    assert check["value"] == {"missing": ["px_7_7"], "unexpected": ["extra"]}


def test_empty_frame_fails(digits: pd.DataFrame, schema: Schema) -> None:
    report = validate_frame(digits.iloc[:0], schema, ValidateParams())
    assert report["passed"] is False
    assert {"rows", "labels.set", "labels.min_rows_per_class"} <= _failed(report)


def test_failure_summary_names_each_failed_check(digits: pd.DataFrame, schema: Schema) -> None:
    bad = pd.concat([digits, digits.iloc[:300]], ignore_index=True)
    bad.loc[:9, "px_1_1"] = np.nan
    bad["px_0_0"] = bad["px_0_0"].astype(str)
    report = validate_frame(bad, schema, ValidateParams(max_missing_fraction=0.0))
    failed = _failed(report)
    assert failed == {"missing_values", "duplicates", "schema.numeric_features"}
    summary = failure_summary(report)
    assert "\n" not in summary
    for name in failed:
        assert f"{name}:" in summary
    for name in CHECK_NAMES - failed:
        assert f"{name}:" not in summary
    assert summary.count(";") >= len(failed) - 1


def test_integer_target_read_as_classes_points_at_data_task() -> None:
    # An integer quantity (a price in whole euros) is read as classes; the failure says
    # how to read it as a regression target instead.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "target": rng.integers(100, 900, 200)})
    schema = infer_schema(frame, "prices.csv", "price")
    report = validate_frame(frame, schema, ValidateParams())
    assert "labels.min_rows_per_class" in _failed(report)
    summary = failure_summary(report)
    assert "data.task: regression" in summary and "\n" not in summary


def test_text_labels_with_a_rare_class_do_not_suggest_regression(
    digits: pd.DataFrame, schema: Schema
) -> None:
    frame = pd.DataFrame({"a": np.arange(21.0), "target": ["x"] * 20 + ["y"]})
    report = validate_frame(frame, infer_schema(frame, "t.csv", "y"), ValidateParams())
    assert "labels.min_rows_per_class" in _failed(report)
    assert "data.task" not in failure_summary(report)

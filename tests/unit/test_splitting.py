"""Stratified split: sizes, disjointness, coverage, determinism, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.data import BUILTIN_DIGITS, load_source
from mlops.errors import DataError
from mlops.params import SplitParams
from mlops.splitting import stratified_split


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    digits = load_source(BUILTIN_DIGITS, "target", Path("."))
    digits.insert(0, "row_id", np.arange(len(digits), dtype=np.int64))
    digits.loc[[3, 50, 700], "px_2_2"] = np.nan  # a gap in a feature: kept, imputed later
    digits["target"] = digits["target"].astype("Int64")
    digits.loc[[5, 60], "target"] = pd.NA  # no target: dropped
    return digits


def _ids(part: pd.DataFrame) -> set[int]:
    return set(part["row_id"].tolist())


@pytest.mark.parametrize(("val", "test"), [(0.15, 0.15), (0.1, 0.2), (0.3, 0.05)])
def test_sizes_match_fractions(frame: pd.DataFrame, val: float, test: float) -> None:
    train_p, val_p, test_p = stratified_split(
        frame, SplitParams(val_fraction=val, test_fraction=test)
    )
    n = len(frame) - 2
    assert abs(len(val_p) - n * val) <= 1
    assert abs(len(test_p) - n * test) <= 1
    assert len(train_p) + len(val_p) + len(test_p) == n


def test_parts_are_disjoint_and_cover_rows_with_a_target(frame: pd.DataFrame) -> None:
    train, val, test = stratified_split(frame, SplitParams())
    a, b, c = _ids(train), _ids(val), _ids(test)
    assert not (a & b) and not (a & c) and not (b & c)
    assert a | b | c == _ids(frame.dropna(subset=["target"]))
    assert {3, 50, 700} <= a | b | c and not ({5, 60} & (a | b | c))
    for part in (train, val, test):
        assert not part["target"].isna().any()
        assert list(part.columns) == list(frame.columns)


def test_every_class_in_every_part(frame: pd.DataFrame) -> None:
    classes = set(frame["target"].dropna().unique().tolist())
    for part in stratified_split(frame, SplitParams()):
        assert set(part["target"].unique().tolist()) == classes


def test_parts_keep_original_order(frame: pd.DataFrame) -> None:
    for part in stratified_split(frame, SplitParams()):
        ids = part["row_id"].tolist()
        assert ids == sorted(ids)
        assert part.index.tolist() == list(range(len(part)))


def test_same_seed_gives_identical_parts(frame: pd.DataFrame) -> None:
    one = stratified_split(frame, SplitParams(seed=3))
    two = stratified_split(frame.copy(), SplitParams(seed=3))
    for a, b in zip(one, two, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_different_seed_gives_different_parts(frame: pd.DataFrame) -> None:
    one = stratified_split(frame, SplitParams(seed=1))
    two = stratified_split(frame, SplitParams(seed=2))
    assert _ids(one[2]) != _ids(two[2])
    assert _ids(one[1]) != _ids(two[1])


def test_input_is_not_modified(frame: pd.DataFrame) -> None:
    before = frame.copy()
    stratified_split(frame, SplitParams())
    pd.testing.assert_frame_equal(frame, before)


def test_too_few_rows_is_data_error() -> None:
    tiny = pd.DataFrame({"a": np.arange(10.0), "target": [0, 1, 2, 3, 4] * 2})
    with pytest.raises(DataError) as info:
        stratified_split(tiny, SplitParams())
    assert info.value.exit_code == 1
    assert str(info.value).startswith("split:")
    assert "5 classes" in str(info.value)


def test_class_with_one_row_is_data_error() -> None:
    rows = pd.DataFrame({"a": np.arange(41.0), "target": [0] * 20 + [1] * 20 + [2]})
    with pytest.raises(DataError, match=r"^split:"):
        stratified_split(rows, SplitParams())


def test_string_labels_split() -> None:
    rows = pd.DataFrame({"a": np.arange(100.0), "target": ["cat", "dog"] * 50})
    train, val, test = stratified_split(rows, SplitParams(val_fraction=0.2, test_fraction=0.2))
    assert (len(train), len(val), len(test)) == (60, 20, 20)
    for part in (train, val, test):
        assert part["target"].value_counts().to_dict() == {
            "cat": len(part) // 2,
            "dog": len(part) // 2,
        }

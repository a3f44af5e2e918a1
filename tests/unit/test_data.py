"""Data sources, schema inference, subsampling and deterministic Parquet files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.data import (
    BUILTIN_DIGITS,
    Schema,
    check_source,
    features_and_target,
    infer_schema,
    load_source,
    read_parquet,
    subsample,
    write_parquet,
)
from mlops.errors import DataError, UserError


@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    return load_source(BUILTIN_DIGITS, "target", Path("."))


def _small_csv(tmp_path: Path, target: str = "label") -> Path:
    frame = pd.DataFrame(
        {"f1": [0.1, 0.2, 0.3, 0.4], "f2": [1, 2, 3, 4], target: ["cat", "dog", "cat", "dog"]}
    )
    path = tmp_path / "small.csv"
    frame.to_csv(path, index=False)
    return path


def test_builtin_digits(digits: pd.DataFrame) -> None:
    assert digits.shape == (1797, 65)
    assert list(digits.columns[:2]) == ["px_0_0", "px_0_1"]
    assert digits.columns[-1] == "target"
    assert len([c for c in digits.columns if c != "target"]) == 64
    assert digits["target"].dtype == np.int64
    assert all(digits[c].dtype == np.float32 for c in digits.columns if c != "target")
    assert sorted(digits["target"].unique().tolist()) == list(range(10))


def test_check_source(tmp_path: Path) -> None:
    assert check_source(BUILTIN_DIGITS, tmp_path) is None
    path = _small_csv(tmp_path)
    assert check_source("small.csv", tmp_path) == path
    assert check_source(str(path), Path("/nonexistent")) == path


def test_csv_with_custom_target_is_renamed(tmp_path: Path) -> None:
    _small_csv(tmp_path)
    frame = load_source("small.csv", "label", tmp_path)
    assert list(frame.columns) == ["f1", "f2", "target"]
    assert frame["target"].tolist() == ["cat", "dog", "cat", "dog"]


def test_parquet_source(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]}).to_parquet(tmp_path / "d.parquet")
    frame = load_source("d.parquet", "y", tmp_path)
    assert list(frame.columns) == ["a", "target"]
    assert frame["target"].tolist() == [0, 1]


def test_missing_file_names_data_source(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_source("nope.csv", "target", tmp_path)
    assert info.value.exit_code == 2
    assert str(info.value).startswith("data.source")
    assert "nope.csv" in str(info.value)


def test_missing_target_column_names_data_target(tmp_path: Path) -> None:
    _small_csv(tmp_path)
    with pytest.raises(UserError) as info:
        load_source("small.csv", "species", tmp_path)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert message.startswith("data.target = 'species'")
    assert "f1" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.parquet", b"this is not parquet"),
        ("empty.csv", b""),
        ("bin.csv", b"a,b\n\xff\xfe,1\n"),
    ],
)
def test_unreadable_file_is_data_error(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        load_source(name, "b", tmp_path)
    assert info.value.exit_code == 1
    assert str(info.value).startswith(f"{name}: cannot read")
    assert "\n" not in str(info.value)


def test_feature_named_target_conflicts(tmp_path: Path) -> None:
    pd.DataFrame({"target": [1, 2], "label": [0, 1]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match="named 'target'"):
        load_source("c.csv", "label", tmp_path)


def test_infer_schema_digits(digits: pd.DataFrame) -> None:
    schema = infer_schema(digits.copy(), BUILTIN_DIGITS, "target")
    assert schema.classes == list(range(10))
    assert schema.n_rows == 1797
    assert len(schema.features) == 64
    assert "target" not in schema.features
    assert schema.input_shape == [1, 8, 8]
    assert schema.task == "classification"
    assert schema.dtypes["target"] == "int64"


def test_infer_schema_sorts_classes() -> None:
    ints = pd.DataFrame({"a": [1, 2, 3, 4], "target": [10, 2, 1, 2]})
    assert infer_schema(ints, "x.csv", "y").classes == [1, 2, 10]
    strs = pd.DataFrame({"a": [1, 2, 3, 4], "target": ["b", "a", "c", "a"]})
    schema = infer_schema(strs, "x.csv", "y")
    assert schema.classes == ["a", "b", "c"]
    assert schema.input_shape == [1]
    assert schema.features == ["a"]


def test_continuous_target_is_data_error_when_classification_is_forced() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "target": [0.5, 1.0, 2.0]})
    assert infer_schema(frame.copy(), "x.csv", "price").task == "regression"
    with pytest.raises(DataError) as info:
        infer_schema(frame, "x.csv", "price", task="classification")
    assert info.value.exit_code == 1
    assert "'price'" in str(info.value)
    assert "continuous" in str(info.value)


def test_float_target_with_whole_values_is_regression() -> None:
    # The diabetes target (151.0, 75.0, ...): a float column is a quantity, not 214 classes.
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "target": [151.0, 75.0, 141.0, 206.0]})
    schema = infer_schema(frame, "x.csv", "target")
    assert schema.task == "regression" and schema.classes == []
    assert frame["target"].dtype == np.float64


def test_integral_float_target_is_classes_when_forced() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "target": [1.0, 0.0, 1.0, np.nan]})
    schema = infer_schema(frame, "x.csv", "target", task="classification")
    assert schema.classes == [0, 1]
    assert all(type(c) is int for c in schema.classes)


@pytest.mark.parametrize(
    ("values", "classes"),
    [
        ([1, 0, 1, 0], [0, 1]),
        (["b", "a", "b", "a"], ["a", "b"]),
        ([True, False, True, False], [False, True]),
    ],
)
def test_integers_strings_and_booleans_are_classes(values: list, classes: list) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "target": values})
    schema = infer_schema(frame, "x.csv", "target")
    assert schema.task == "classification" and schema.classes == classes


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_integer_labels_with_a_missing_value_stay_classes(tmp_path: Path, suffix: str) -> None:
    # A missing label makes pandas read integer labels as floats: they are still classes.
    frame = pd.DataFrame({"a": [0.5, 1.5, 2.5, 3.5], "y": pd.array([1, 0, None, 2], "Int64")})
    path = tmp_path / f"d.{suffix}"
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    loaded = load_source(path.name, "y", tmp_path)
    schema = infer_schema(loaded, path.name, "y")
    assert schema.task == "classification" and schema.classes == [0, 1, 2]
    assert loaded["target"].isna().sum() == 1


def test_regression_of_a_text_target_names_data_task() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "target": ["x", "y", "z"]})
    with pytest.raises(DataError, match=r"data\.task = regression: the target 'label'"):
        infer_schema(frame, "x.csv", "label", task="regression")


def test_subsample_none_or_large_keeps_everything(digits: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(subsample(digits, None, 0), digits)
    pd.testing.assert_frame_equal(subsample(digits, 5000, 0), digits)


def test_subsample_is_stratified_and_reproducible(digits: pd.DataFrame) -> None:
    a = subsample(digits, 500, 7)
    b = subsample(digits, 500, 7)
    c = subsample(digits, 500, 8)
    assert len(a) == 500
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    expected = digits["target"].value_counts(normalize=True) * 500
    got = a["target"].value_counts()
    for label, share in expected.items():
        assert abs(got[label] - share) <= 1.0
    original = set(map(tuple, digits.to_numpy().tolist()))
    assert all(tuple(row) in original for row in a.to_numpy().tolist())
    assert a.index.tolist() == list(range(500))


def test_write_parquet_is_byte_identical(tmp_path: Path, digits: pd.DataFrame) -> None:
    frame = digits.iloc[:300]
    write_parquet(frame, tmp_path / "one.parquet")
    write_parquet(frame.copy(), tmp_path / "two.parquet")
    shuffled_index = frame.set_axis(range(1000, 1300))
    write_parquet(shuffled_index, tmp_path / "three.parquet")
    one = (tmp_path / "one.parquet").read_bytes()
    assert one == (tmp_path / "two.parquet").read_bytes()
    assert one == (tmp_path / "three.parquet").read_bytes()
    back = read_parquet(tmp_path / "one.parquet")
    pd.testing.assert_frame_equal(back, frame.reset_index(drop=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "one.parquet",
        "three.parquet",
        "two.parquet",
    ]


def test_write_parquet_creates_parent(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.parquet"
    write_parquet(pd.DataFrame({"a": [1], "target": [0]}), path)
    assert path.is_file()


def test_read_parquet_missing_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file not found"):
        read_parquet(tmp_path / "none.parquet")


def test_schema_roundtrip(tmp_path: Path, digits: pd.DataFrame) -> None:
    schema = infer_schema(digits.copy(), BUILTIN_DIGITS, "target")
    schema.save(tmp_path / "schema.json")
    assert Schema.load(tmp_path / "schema.json") == schema
    raw = json.loads((tmp_path / "schema.json").read_text())
    assert raw["classes"] == list(range(10))
    assert list(raw) == sorted(raw)


def test_schema_roundtrip_string_classes(tmp_path: Path) -> None:
    schema = Schema("x.csv", "label", ["a"], {"a": "float64"}, ["cat", "dog"], 4, input_shape=[1])
    schema.save(tmp_path / "s.json")
    assert Schema.load(tmp_path / "s.json") == schema


def test_features_and_target(digits: pd.DataFrame) -> None:
    schema = infer_schema(digits.copy(), BUILTIN_DIGITS, "target")
    x, y = features_and_target(digits, schema)
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    assert x.shape == (1797, 64)
    assert y.shape == (1797,)
    np.testing.assert_array_equal(y, digits["target"].to_numpy())


def test_features_and_target_maps_labels_to_indices() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 0.5, 0.5], "target": ["dog", "cat", "dog"]})
    schema = infer_schema(frame.copy(), "x.csv", "label")
    x, y = features_and_target(frame, schema)
    assert x.dtype == np.float32
    assert y.tolist() == [1, 0, 1]
    np.testing.assert_array_equal(x[:, 0], [1.0, 2.0, 3.0])


def test_features_and_target_unknown_label() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "target": [0, 1]})
    schema = infer_schema(frame.copy(), "x.csv", "target")
    other = pd.DataFrame({"a": [1.0], "target": [7]})
    with pytest.raises(DataError, match="'7'"):
        features_and_target(other, schema)

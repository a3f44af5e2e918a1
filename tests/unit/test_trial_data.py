"""A trial that searches how columns are encoded (`data.tokenizer.*`, `data.one_hot_max`)
trains on the splits encoded as its values say, refitted on the train split; the
workspace's encoding is left as it is, and data with nothing to encode is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops import workspace
from mlops.columns import Encoding
from mlops.data import Schema, infer_schema, write_parquet
from mlops.errors import UserError
from mlops.params import Params, parse_params
from mlops.tuning.objective import TrialData
from tests.tables import customers

SPACE = {
    "data.tokenizer.vocab_size": {"type": "categorical", "choices": [60, 400]},
    "data.tokenizer.max_length": {"type": "categorical", "choices": [8, 32]},
}


def _params(space: dict[str, Any] = SPACE) -> Params:
    return parse_params(
        {"data": {"source": "t.csv", "target": "churn", "columns": {"customer_id": "drop"}},
         "tune": {"space": space}}
    )  # fmt: skip


def _workspace(root: Path, params: Params, drop: tuple[str, ...] = ()) -> Schema:
    """The splits and fitted schema `split` would write for a customer table."""
    frame = customers(300).drop(columns=["customer_id", "spend", *drop])
    frame = frame.rename(columns={"churn": "target"})
    schema = infer_schema(frame, "t.csv", "churn")
    train, val = frame.iloc[:200], frame.iloc[200:]
    fitted = schema.fitted(train, params.data)
    (root / workspace.SPLIT_DIR).mkdir(parents=True)
    write_parquet(train, root / workspace.SPLITS["train"])
    write_parquet(val, root / workspace.SPLITS["val"])
    fitted.save(root / workspace.SPLIT_SCHEMA)
    return fitted


def test_a_trial_of_train_params_only_trains_on_the_workspace_splits(tmp_path: Path) -> None:
    params = _params()
    _workspace(tmp_path, params)
    data = TrialData(tmp_path, params)
    assert data.get({"learning_rate": 0.01}, params.train) is data.base


def test_a_trial_of_tokenizer_values_gets_the_splits_encoded_its_way(tmp_path: Path) -> None:
    params = _params()
    fitted = _workspace(tmp_path, params)
    data = TrialData(tmp_path, params)
    small = data.get({"data.tokenizer.vocab_size": 60, "data.tokenizer.max_length": 8},
                     params.train)  # fmt: skip
    encoding = small.schema.column_encoding
    assert isinstance(encoding, Encoding) and encoding.codec is not None
    assert encoding.max_length == 8 and encoding.codec.vocab_size <= 60
    base = data.base.schema.column_encoding
    assert base is not None and base.codec is not None
    assert base.max_length == 128 and base.codec.vocab_size > 60  # the workspace's, as fitted
    assert data.base.schema == fitted
    x, y = small.train
    assert x.shape == (200, encoding.width) and small.schema.input_shape == [encoding.width]
    assert np.array_equal(y, data.base.train[1])  # same rows, same labels
    assert small.val[0].shape == (100, encoding.width)
    again = data.get({"data.tokenizer.max_length": 8, "data.tokenizer.vocab_size": 60},
                     params.train)  # fmt: skip
    assert again is small  # fitted once per set of values


def test_searching_the_encoding_of_data_without_columns_to_encode_is_one_line(
    tmp_path: Path,
) -> None:
    params = _params()
    _workspace(tmp_path, params, drop=("ticket",))
    with pytest.raises(UserError, match=r"^tune\.space\.data\.tokenizer\.max_length: the data "
                       r"has no text column to tokenize$"):  # fmt: skip
        TrialData(tmp_path, params)
    numeric = _params({"data.one_hot_max": {"type": "int", "low": 0, "high": 8}})
    root = tmp_path / "numeric"
    frame = pd.DataFrame({"a": np.arange(20.0), "target": [0, 1] * 10})
    (root / workspace.SPLIT_DIR).mkdir(parents=True)
    for name in ("train", "val"):
        write_parquet(frame, root / workspace.SPLITS[name])
    Schema("t.csv", "y", ["a"], {"a": "float64"}, [0, 1], 20, input_shape=[1]).save(
        root / workspace.SPLIT_SCHEMA
    )
    with pytest.raises(UserError, match=r"^tune\.space\.data\.one_hot_max: the data has no "
                       r"categorical or text columns to encode$"):  # fmt: skip
        TrialData(root, numeric)

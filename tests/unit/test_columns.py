"""Mixed tables (mlops.columns): kinds, the encoding fitted on a train split, raw records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mlops import nets
from mlops.columns import MISSING, UNSEEN, Encoding, RecordError, category, infer_kinds
from mlops.errors import UserError
from tests.tables import CHANNELS, customers

FEATURES = ["country", "plan", "channel", "age", "tenure_months"]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return customers(600, seed=1)


def test_kinds_are_inferred_and_declared(table: pd.DataFrame) -> None:
    kinds = infer_kinds(table, FEATURES, {})
    assert kinds == {"country": "categorical", "plan": "categorical", "channel": "categorical",
                     "age": "numeric", "tenure_months": "numeric"}  # fmt: skip
    assert infer_kinds(table, ["customer_id"], {}) == {"customer_id": "text"}  # 600 distinct
    declared = infer_kinds(table, FEATURES, {"age": "categorical", "plan": "drop"})
    assert declared["age"] == "categorical" and declared["plan"] == "drop"


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ({"nope": "drop"}, "data.columns: no column 'nope' in the source"),
        ({"customer_id": "drop", "country": "numeric"}, "data.columns.country = numeric: the"),
    ],
)
def test_kind_mistakes_are_one_line(
    table: pd.DataFrame, declared: dict[str, str], expected: str
) -> None:
    with pytest.raises(UserError) as caught:
        infer_kinds(table, ["customer_id", *FEATURES], declared)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


def _fitted(table: pd.DataFrame, one_hot_max: int = 16) -> Encoding:
    return Encoding.fit(table, infer_kinds(table, FEATURES, {}), one_hot_max, 10_000)


def test_fit_uses_the_train_split_only(table: pd.DataFrame) -> None:
    enc = _fitted(table)
    assert enc.numeric == ["age", "tenure_months"]
    assert enc.categorical == ["country", "plan", "channel"]
    assert enc.medians == [table["age"].median(), table["tenure_months"].median()]
    assert enc.indicators == ["age", "tenure_months"]  # both have gaps in this split
    assert enc.vocabularies[1] == table["plan"].value_counts().index.tolist()  # by frequency
    assert enc.one_hot == [True, True, False]  # 40 channels > 16: embedded
    assert enc.embedded == [(42, round(1.6 * 42**0.56))]
    # 2 numbers, 2 flags, one-hot 8+2 and 3+2, one embedded index
    assert enc.width == 2 + 2 + 10 + 5 + 1 == len(enc.names())


def test_the_widest_embedding_is_a_param_and_older_encodings_read_as_32(
    table: pd.DataFrame,
) -> None:
    kinds = infer_kinds(table, FEATURES, {})
    narrow = Encoding.fit(table, kinds, 4, 10_000, embedding_max=3)
    assert narrow.embedded == [(10, 3), (42, 3)]  # country and channel, each 3 wide
    older = {k: v for k, v in narrow.as_dict().items() if k != "embedding_max"}
    assert Encoding.from_dict(older).embedded == [(10, round(1.6 * 10**0.56)), (42, 13)]


def test_transform_imputes_flags_and_reserves_unseen_and_missing(table: pd.DataFrame) -> None:
    enc = _fitted(table)
    rows = pd.DataFrame(
        {"country": ["NO", "US", None], "plan": ["pro", "basic", "pro"],
         "channel": [CHANNELS[5], "partner-99", None], "age": [30.0, np.nan, 41.0],
         "tenure_months": [12.0, 3.0, np.nan]}
    )  # fmt: skip
    x, unseen = enc.transform(rows)
    names = enc.names()
    at = {n: i for i, n in enumerate(names)}
    assert x.dtype == np.float32 and x.shape == (3, enc.width)
    assert x[1, at["age"]] == np.float32(enc.medians[0]) and x[1, at["age.missing"]] == 1.0
    assert x[0, at["age"]] == 30.0 and x[0, at["age.missing"]] == 0.0
    assert x[0, at["country=NO"]] == 1.0 and x[1, at["country=<unseen>"]] == 1.0
    assert x[2, at["country=<missing>"]] == 1.0
    channel = x[:, at["channel.index"]]
    assert channel[0] == enc.vocabularies[2].index(CHANNELS[5]) + 2
    assert channel[1] == UNSEEN and channel[2] == MISSING
    assert unseen == {"country": 1, "plan": 0, "channel": 1}
    back = enc.raw(x)
    assert back["country"].tolist() == ["NO", None, None]
    assert back["channel"].tolist() == [CHANNELS[5], None, None]
    assert math.isnan(back["age"][1]) and back["age"][0] == 30.0
    assert str(back["age"].dtype) == "float64" and back["country"].dtype == object


def test_records_are_checked_and_encoded_as_frames(table: pd.DataFrame) -> None:
    enc = _fitted(table)
    good = {"country": "SE", "plan": "pro", "channel": CHANNELS[1], "age": None,
            "tenure_months": 7}  # fmt: skip
    x, _ = enc.records([good])
    frame = pd.DataFrame([good]).astype({"age": "float64", "tenure_months": "float64"})
    assert np.array_equal(x, enc.transform(frame)[0])
    bad = [
        ({**good, "age": "forty"}, "records[0].age: expected a number or null, not a string"),
        ({**good, "age": True}, "records[0].age: expected a number or null, not a boolean"),
        ({**good, "age": 10**400}, "records[0].age: "),
        ({**good, "plan": [1]}, "records[0].plan: expected a category (a string), not a list"),
        ({k: v for k, v in good.items() if k != "plan"}, "records[0]: missing column 'plan'"),
        ({**good, "extra": 1}, "records[0]: unknown column 'extra'"),
    ]
    for record, message in bad:
        with pytest.raises(RecordError) as caught:
            enc.records([record])
        assert str(caught.value).startswith(message)
    with pytest.raises(RecordError, match=r"records\[0\] must be an object"):
        enc.records(["x"])


def test_categories_read_alike_from_files_and_json() -> None:
    assert category(3) == category(3.0) == category(np.int64(3)) == "3"
    assert category(True) == "true" and category(None) is None and category(math.nan) is None
    assert category(2.5) == "2.5" and category("NO") == "NO"


def test_table_input_embeds_and_maps_bad_indices_to_unseen(table: pd.DataFrame) -> None:
    enc = _fitted(table, one_hot_max=4)  # country and channel embedded, plan one-hot
    x, _ = enc.transform(table)
    mean, std = [0.0] * enc.width, [1.0] * enc.width
    front = nets.TableInput(mean, std, enc.dense_width, enc.embedded)
    out = front(torch.from_numpy(x))
    assert out.shape == (len(table), enc.dense_width + sum(w for _, w in enc.embedded))
    hostile = torch.from_numpy(x[:2].copy())
    hostile[:, enc.dense_width :] = torch.tensor([[-5.0, 1e6], [1e9, -1.0]])
    unseen = torch.from_numpy(x[:2].copy())
    unseen[:, enc.dense_width :] = 0.0
    assert torch.equal(front(hostile), front(unseen))


def test_frames_from_outside_are_checked_by_column(table: pd.DataFrame) -> None:
    enc = _fitted(table)
    rows = table[FEATURES].head(5)
    x, _ = enc.read(rows.astype({"age": str}))  # numbers written as text still read
    assert np.array_equal(x, enc.transform(rows)[0])
    with pytest.raises(RecordError, match=r"^missing columns: plan$"):
        enc.read(rows.drop(columns=["plan"]))
    with pytest.raises(RecordError, match=r"^column age: expected numbers \(or missing\)$"):
        enc.read(rows.assign(age="forty"))

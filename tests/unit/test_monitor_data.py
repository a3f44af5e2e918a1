"""The two sides of a drift check: the training split found by its DVC md5 (cache first,
then the workspace) and the current rows, each refusal one line naming the file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.data import write_parquet
from mlops.errors import UserError
from mlops.lineage import dvc_md5
from mlops.monitoring.reference import (
    TRAIN_SPLIT,
    cached_file,
    class_indices,
    feature_matrix,
    load_reference,
    read_table,
)
from registry.db.store import Version

FEATURES = ["a", "b", "c"]


def frame(rows: int = 40, shift: float = 0.0) -> pd.DataFrame:
    values = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) + shift
    return pd.DataFrame(values, columns=FEATURES).assign(target=np.arange(rows) % 2)


def version(md5: str | None) -> Version:
    info = {"mlops.git_commit": "0123456789abcdef"}
    if md5 is not None:
        info["mlops.data.train.md5"] = md5
    return Version("digits", 3, "run", "models:/x", "sha", "asha", "production", 0.0, info)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "data" / "split").mkdir(parents=True)
    return tmp_path


def cache(root: Path, source: Path, where: Path | None = None) -> Path:
    md5 = dvc_md5(source)
    path = (where or root / ".dvc" / "cache") / "files" / "md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True)
    path.write_bytes(source.read_bytes())
    return path


def test_the_workspace_split_when_its_md5_is_the_recorded_one(root: Path) -> None:
    write_parquet(frame(), root / TRAIN_SPLIT)
    found = load_reference(root, version(dvc_md5(root / TRAIN_SPLIT)))
    assert found.origin == "workspace" and found.features == FEATURES
    assert len(found.frame) == 40


def test_the_dvc_cache_first_even_when_the_workspace_moved_on(root: Path) -> None:
    trained = root / "old.parquet"
    write_parquet(frame(), trained)
    cached = cache(root, trained)
    write_parquet(frame(shift=5.0), root / TRAIN_SPLIT)  # a later split in the workspace
    found = load_reference(root, version(dvc_md5(trained)))
    assert found.origin == "dvc cache" and found.path == cached
    assert found.frame["a"].iloc[0] == 0.0


def test_a_cache_dir_set_in_the_dvc_config(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("cache")
    (root / ".dvc" / "config").write_text(
        f"[core]\n    analytics = false\n[cache]\n    dir = {elsewhere}\n"
    )
    trained = root / "old.parquet"
    write_parquet(frame(), trained)
    copy = cache(root, trained, elsewhere)
    assert cached_file(root, dvc_md5(trained)) == copy
    assert cached_file(root, "not-an-md5") is None


def test_a_workspace_split_that_is_not_the_trained_one_is_refused(root: Path) -> None:
    write_parquet(frame(shift=5.0), root / TRAIN_SPLIT)
    with pytest.raises(UserError) as caught:
        load_reference(root, version("f" * 32))
    message = str(caught.value)
    assert "model digits version 3 was trained on data/split/train.parquet md5 ffffffff" in message
    assert "git checkout 0123456789 -- dvc.lock && dvc checkout" in message
    (root / TRAIN_SPLIT).unlink()
    with pytest.raises(UserError, match="the workspace's is missing"):
        load_reference(root, version("f" * 32))


def test_no_recorded_md5_uses_the_workspace_unverified(root: Path) -> None:
    with pytest.raises(UserError, match="no training split recorded"):
        load_reference(root, version(None))
    write_parquet(frame(), root / TRAIN_SPLIT)
    assert load_reference(root, version(None)).origin == "workspace (unverified)"


def test_feature_matrix_and_its_refusals() -> None:
    x = feature_matrix(frame().assign(extra="x"), FEATURES, "cur.csv", 30)
    assert x.dtype == np.float32 and x.shape == (40, 3)
    cases = {
        "none of the model's 3 feature columns (a, b, c); it has x, y": pd.DataFrame(
            {"x": [1.0], "y": [2.0]}
        ),
        "missing feature columns b, c": frame()[["a"]],
        "10 rows; a drift check needs at least 30": frame(10),
        "column b is not numeric": frame().assign(b="text"),
        "column c has 1 missing values": frame().assign(c=[np.nan] + [1.0] * 39),
        "no rows": frame(0),
    }
    for message, bad in cases.items():
        with pytest.raises(UserError, match="^" + re.escape(f"cur.csv: {message}")):
            feature_matrix(bad, FEATURES, "cur.csv", 30)


def test_read_table(tmp_path: Path) -> None:
    frame().to_csv(tmp_path / "rows.csv", index=False)
    write_parquet(frame(), tmp_path / "rows.parquet")
    assert read_table(tmp_path / "rows.csv").shape == read_table(tmp_path / "rows.parquet").shape
    (tmp_path / "rows.txt").write_text("a,b\n")
    (tmp_path / "broken.parquet").write_text("not parquet")
    for name, message in (
        ("missing.csv", "file not found"),
        ("rows.txt", "expected a .csv or .parquet file"),
        ("broken.parquet", "cannot read"),
    ):
        with pytest.raises(UserError, match=f"{name}: {message}"):
            read_table(tmp_path / name)


def test_class_indices_read_labels_as_files_hold_them() -> None:
    assert class_indices(pd.Series([3.0, 1.0]), [1, 3], "f").tolist() == [1, 0]
    assert class_indices(pd.Series(["b", "a"]), ["a", "b"], "f").tolist() == [1, 0]
    with pytest.raises(UserError, match="f: label '7' is not a class of the model"):
        class_indices(pd.Series([7]), [1, 3], "f")

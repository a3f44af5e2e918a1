"""Atomic deterministic writes, digests, and the error types' exit codes."""

from __future__ import annotations

import errno
import hashlib
import sqlite3
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import OperationalError

from mlops.errors import DataError, Interrupted, MlopsError, StoreError, UserError, full_disk
from mlops.io import atomic_path, file_digest, read_json, write_bytes, write_json, write_with


def test_write_json_is_sorted_and_deterministic(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"b": 1, "a": {"d": 2, "c": [1, 2]}})
    write_json(tmp_path / "b.json", {"a": {"c": [1, 2], "d": 2}, "b": 1})
    text = (tmp_path / "a.json").read_text()
    assert text == (tmp_path / "b.json").read_text()
    assert text.endswith("}\n")
    assert text.index('"a"') < text.index('"b"')
    assert read_json(tmp_path / "a.json") == {"a": {"c": [1, 2], "d": 2}, "b": 1}


def test_write_bytes_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "f.bin"
    write_bytes(target, b"one")
    write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def writer(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_with(target, writer)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_is_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "t.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp != target
        assert not target.exists()
        tmp.write_text("{}")
    assert target.read_text() == "{}"


def test_file_digest(tmp_path: Path) -> None:
    data = b"x" * (3 << 20)
    (tmp_path / "f").write_bytes(data)
    assert file_digest(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert file_digest(tmp_path / "f", "md5") == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize(
    ("cls", "code"), [(MlopsError, 1), (UserError, 2), (DataError, 1), (StoreError, 1)]
)
def test_error_exit_codes_and_message(cls: type[MlopsError], code: int) -> None:
    error = cls("params.yaml: train.epochs = 0: bad")
    assert error.exit_code == code
    assert str(error) == "params.yaml: train.epochs = 0: bad"
    assert error.message == str(error)
    assert isinstance(error, MlopsError)


def test_interrupted_is_not_an_exception() -> None:
    error = Interrupted(15)
    assert error.signum == 15
    assert not isinstance(error, Exception)
    assert "15" in str(error)


def test_full_disk_is_found_however_it_is_wrapped() -> None:

    assert full_disk(OSError(errno.ENOSPC, "No space left on device", "/m/x")) == (
        "no space left on the device writing /m/x: free some space and run the command again"
    )
    assert full_disk(OSError(errno.EDQUOT, "Disk quota exceeded")) is not None
    # MLflow keeps only the text of SQLAlchemy's error, which wraps SQLite's.
    driver = sqlite3.OperationalError("database or disk is full")
    wrapped = OperationalError("INSERT INTO runs ...", {}, driver)
    try:
        try:
            raise wrapped
        except OperationalError as exc:
            raise MlflowException(str(exc)) from None  # the chain is cut, the text stays
    except MlflowException as exc:
        assert full_disk(exc) is not None
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("while logging") from None
    except RuntimeError as exc:
        assert full_disk(exc) is not None  # found in the context of what was raised
    assert full_disk(ValueError("bad value")) is None
    assert full_disk(OSError(errno.EACCES, "Permission denied")) is None

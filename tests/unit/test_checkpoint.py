"""Training checkpoints: matched to their job by fingerprint, read without arbitrary pickle."""

from __future__ import annotations

import io
import os
import pickle
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch

from mlops.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from mlops.errors import UserError

SPEC = {"family": "mlp", "hyper": {"hidden_sizes": [8]}, "classes": [0, 1]}
TRAIN = {"epochs": 3, "learning_rate": 0.01, "model": {"family": "mlp"}}
DATA = {"train": "a" * 32, "val": "b" * 32}


def _state(job: str = "job") -> dict[str, Any]:
    torch.manual_seed(0)
    return {
        "fingerprint": job,
        "epoch": 3,
        "model": {"w": torch.randn(2, 3), "b": torch.zeros(2)},
        "rng_torch": torch.get_rng_state(),
        "history": [{"epoch": 1, "metrics": {"val_loss": 0.5, "lr": 0.1}}],
        "stopper": {"best": float("inf"), "best_epoch": 0},
    }


def _refused(path: Path, expected: str = "job") -> UserError:
    """Both modes refuse: None without `required`, a one-line UserError (exit 2) with it."""
    assert load_checkpoint(path, expected, required=False) is None
    with pytest.raises(UserError) as info:
        load_checkpoint(path, expected, required=True)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)
    return info.value


class _Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


# --------------------------------------------------------------------- save and load


def test_save_then_load_returns_the_state(tmp_path: Path) -> None:
    path = tmp_path / "train.ckpt"
    state = _state()
    save_checkpoint(path, state)
    for required in (False, True):
        loaded = load_checkpoint(path, "job", required=required)
        assert loaded is not None
        assert set(loaded) == set(state)
        assert loaded["epoch"] == 3
        assert loaded["history"] == state["history"]
        assert loaded["stopper"] == state["stopper"]
        assert torch.equal(loaded["rng_torch"], state["rng_torch"])
        for key, value in state["model"].items():
            assert torch.equal(loaded["model"][key], value)


def test_save_is_atomic_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "train.ckpt"
    save_checkpoint(path, _state())
    newer = {**_state(), "epoch": 4}
    save_checkpoint(path, newer)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    loaded = load_checkpoint(path, "job", required=True)
    assert loaded is not None
    assert loaded["epoch"] == 4


def test_other_fingerprint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.ckpt"
    save_checkpoint(path, _state("job-a"))
    error = _refused(path, expected="job-b")
    assert "another model, params or data" in str(error)
    assert path.is_file()  # refusing does not delete the user's file


def test_missing_checkpoint(tmp_path: Path) -> None:
    error = _refused(tmp_path / "nothing.ckpt")
    assert "no checkpoint" in str(error)


def test_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "dir.ckpt").mkdir()
    _refused(tmp_path / "dir.ckpt")


@pytest.mark.parametrize(
    "content",
    [{"epoch": 3}, [1, 2, 3], "job", {"fingerprint": None}],
    ids=["dict-without-fingerprint", "list", "str", "null-fingerprint"],
)
def test_state_without_the_fingerprint_is_foreign(tmp_path: Path, content: Any) -> None:
    path = tmp_path / "train.ckpt"
    save_checkpoint(path, content)
    assert "another model" in str(_refused(path))


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x80\x02", b"PK\x03\x04" + bytes(60), b"\x00\x00\x00", b"not a checkpoint\n"],
    ids=["empty", "pickle-header-only", "broken-zip", "zeros", "text"],
)
def test_unloadable_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "train.ckpt"
    path.write_bytes(content)
    assert "not a loadable checkpoint" in str(_refused(path))


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    data = _torch_bytes(_state())
    path = tmp_path / "train.ckpt"
    path.write_bytes(data[: len(data) // 2])
    _refused(path)


@pytest.mark.parametrize("content", [b"hello world", b"abc"], ids=["hello", "abc"])
def test_corrupt_file_raising_other_errors_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "train.ckpt"
    path.write_bytes(content)
    _refused(path)


# --------------------------------------------------------------------- no arbitrary pickle


def test_payload_is_live_under_plain_pickle(tmp_path: Path) -> None:
    """Guards the tests below: the payload really runs when unpickled unsafely."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
@pytest.mark.parametrize("required", [False, True])
def test_pickled_code_is_never_run(tmp_path: Path, writer: str, required: bool) -> None:
    marker = tmp_path / "pwned"
    state = {**_state(), "extra": _Payload(marker)}
    data = pickle.dumps(state) if writer == "pickle" else _torch_bytes(state)
    path = tmp_path / "train.ckpt"
    path.write_bytes(data)
    if required:
        with pytest.raises(UserError) as info:
            load_checkpoint(path, "job", required=True)
        assert info.value.exit_code == 2
    else:
        assert load_checkpoint(path, "job", required=False) is None
    assert not marker.exists()


def test_pickled_code_as_the_whole_state_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "train.ckpt"
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=0))
    _refused(path)
    assert not marker.exists()


# --------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_hex_sha256() -> None:
    one = fingerprint(SPEC, TRAIN, DATA)
    assert one == fingerprint(SPEC, TRAIN, DATA)
    assert len(one) == 64
    assert int(one, 16) >= 0
    reordered = {k: TRAIN[k] for k in reversed(list(TRAIN))}
    assert fingerprint(dict(reversed(list(SPEC.items()))), reordered, DATA) == one


@pytest.mark.parametrize(
    ("spec", "train", "data"),
    [
        ({**SPEC, "classes": [0, 1, 2]}, TRAIN, DATA),
        ({**SPEC, "hyper": {"hidden_sizes": [9]}}, TRAIN, DATA),
        (SPEC, {**TRAIN, "epochs": 4}, DATA),
        (SPEC, {**TRAIN, "learning_rate": 0.02}, DATA),
        (SPEC, {**TRAIN, "model": {"family": "cnn"}}, DATA),
        (SPEC, TRAIN, {**DATA, "val": "c" * 32}),
        (SPEC, TRAIN, {**DATA, "test": "d" * 32}),
        (TRAIN, SPEC, DATA),  # the same values in other roles
    ],
    ids=["classes", "hyper", "epochs", "lr", "family", "data-hash", "data-key", "swapped"],
)
def test_fingerprint_changes_with_any_input(
    spec: dict[str, Any], train: dict[str, Any], data: dict[str, str]
) -> None:
    assert fingerprint(spec, train, data) != fingerprint(SPEC, TRAIN, DATA)

"""TensorBoard files: where `mlops tensorboard` puts each run's files."""

from __future__ import annotations

import pytest

from mlops.board import folder_name


@pytest.mark.parametrize(
    ("stage", "run_id", "expected"),
    [
        ("train", "0123456789abcdef", "train-01234567"),
        ("trial 3", "abcdef0123", "trial-3-abcdef01"),
        ("../../etc", "../ab12cd34ef", "etc-ab12cd34"),
        ("", "ffffffffffffffff", "run-ffffffff"),
    ],
)
def test_tensorboard_folders_stay_under_their_folder(
    stage: str, run_id: str, expected: str
) -> None:
    assert folder_name(stage, run_id) == expected

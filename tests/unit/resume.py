"""A training job killed after its second epoch, then resumed from its checkpoint: what
the resume tests compare with the same job run straight through."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlops.training import Checkpointing, EpochCallback, EpochResult, TrainResult

Run = Callable[[EpochCallback | None, Checkpointing | None], TrainResult]


class Killed(Exception):
    """Raised from the epoch callback, as a kill mid-job would stop it."""


def straight_and_resumed(run: Run, tmp_path: Path) -> tuple[TrainResult, TrainResult]:
    """`run` straight through, and `run` killed when epoch 3 reports then resumed (the
    checkpoint holds epoch 2: the callback runs before an epoch's checkpoint)."""
    whole = run(None, None)
    checkpointing = Checkpointing(tmp_path / "train.ckpt", "job", every_seconds=0)

    def kill(result: EpochResult) -> None:
        if result.epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        run(kill, checkpointing)
    resumed = run(None, checkpointing)
    assert resumed.resumed_from == 2
    return whole, resumed

"""Data-parallel training with torchrun: 2 CPU processes (gloo) reach the same accuracy
band as 1 process, and the replicas hold identical weights at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(nproc: int, out: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", str(HERE / "ddp_job.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_two_processes_match_one(tmp_path: Path) -> None:
    single = _run(1, tmp_path / "one.json")
    double = _run(2, tmp_path / "two.json")
    assert double["world_size"] == 2
    assert single["accuracy"] >= 0.95
    assert double["accuracy"] >= 0.95
    assert abs(double["accuracy"] - single["accuracy"]) <= 0.03  # type: ignore[operator]
    ranks = double["weights_by_rank"]
    assert isinstance(ranks, list) and len(ranks) == 2 and ranks[0] == ranks[1]

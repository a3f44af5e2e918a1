"""How long does `dvc repro` take when nothing changed? (Goal: about a second.)

Runs the full pipeline once in a temporary copy of the repository, then times the
no-op `dvc repro` against two baselines measured in the same run: DVC's own start-up
(`dvc version`) and the full pipeline. Writes benchmarks/results/noop_repro.json.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import env, summary, time_command, write_result
from tests.e2e.project import copy_repo


def main() -> None:
    """Measure and write the result."""
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_repo(Path(tmp))
        start = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=project, env=env(), check=True, capture_output=True)
        full = time.perf_counter() - start
        noop = time_command(["dvc", "repro"], project, repeat)
        floor = time_command(["dvc", "version"], project, repeat)
    result = {
        "noop_repro": summary(noop),
        "dvc_startup": summary(floor),
        "full_repro_s": round(full, 2),
        "noop_over_dvc_startup": round(summary(noop)["median_s"] / summary(floor)["median_s"], 2),
        "noop_over_full_repro": round(summary(noop)["median_s"] / full, 4),
    }
    path = write_result("noop_repro", result)
    print(
        f"no-op dvc repro: {result['noop_repro']['median_s']:.2f} s median "
        f"({result['noop_over_dvc_startup']}x dvc start-up, "
        f"{result['noop_over_full_repro']:.1%} of a full repro of {full:.0f} s) -> {path}"
    )


if __name__ == "__main__":
    main()

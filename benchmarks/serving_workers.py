"""`mlops serve --workers 2` against one worker, at 16 concurrent clients.

The project of benchmarks/batched_serving.py (the digits CNN through `dvc repro`, a
forward pass that is not trivial); `mlops serve bench_cnn@1` with `--workers 1` and
`--workers 2`, CLIENTS clients (threads of this process, a keep-alive connection each,
batch-1 requests of test rows) for SECONDS after a warm-up: requests/s and p99.
Goal: 2 workers >= 1.7x the requests/s of one. The clients run on the same machine as
the server: on a machine with few cores they take CPU the workers would use, so the
ratio is a floor of what a separate load generator would see (the cores are recorded).

Configurations alternate within each of ROUNDS rounds; medians over rounds. Writes
results/serving_workers.json (`python benchmarks/serving_workers.py [ROUNDS]`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import batched_serving as bench
from benchmarks._timing import write_result

ROUNDS, CLIENTS = 3, 16


def main() -> None:
    """Both configurations per round, alternating; medians and the ratio."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    bench.CLIENTS = CLIENTS
    runs: dict[str, list[dict[str, float]]] = {"1": [], "2": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = bench._project(Path(tmp))
        bodies = bench._bodies(root)
        for i in range(rounds):
            for workers in list(runs)[i % 2 :] + list(runs)[: i % 2]:
                with bench.Server(root, "--workers", workers) as server:
                    runs[workers].append(bench._load(server.port, bodies))
                print("workers", workers, runs[workers][-1], flush=True)
    medians = {k: bench._median(v) for k, v in runs.items()}
    result: dict[str, Any] = {
        "rounds": rounds, "clients": CLIENTS, "seconds": bench.SECONDS, "cores": os.cpu_count(),
        "model": "digits CNN", "workers_1": medians["1"], "workers_2": medians["2"],
        "ratio": round(medians["2"]["requests_per_s"] / medians["1"]["requests_per_s"], 3),
        "p99_ratio": round(medians["2"]["p99_ms"] / medians["1"]["p99_ms"], 3),
    }  # fmt: skip
    print(result)
    print(f"-> {write_result('serving_workers', result)}")


if __name__ == "__main__":
    main()

"""Peak memory of a training job on a tabular set 10x larger than another: the large split
streams from its row groups, so memory must not grow with the data.

Two synthetic classification sets (32 float32 features, 10 classes from a linear rule),
200k and 2M training rows, written as the split stage writes them (Parquet, row groups of
about 4 MB). Each job runs in a fresh process, with the train stage's defaults (2
DataLoader workers, `stream_above_mb` 64 here so that only the large set streams): the
small set is held in memory and indexed directly, the large one streams. A monitor samples
the proportional set size (PSS: shared pages split between the processes that map them, so
forked DataLoader workers are not counted twice) of the job's whole process tree every
20 ms. Also reported: samples/s of each job, and of the small set when forced to stream.
Target: peak PSS of the 2M job <= 1.3x the 200k job's. Writes results/stream_memory.json
(`python benchmarks/stream_memory.py [ROUNDS]`).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import env, write_result

SMALL, LARGE, FEATURES, LIMIT_MB = 200_000, 2_000_000, 32, 64.0

MAKE = r"""
import sys
from pathlib import Path
import numpy as np, pandas as pd
from mlops.data import infer_schema, write_parquet
rows, out, features = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(rows)
weights = rng.normal(size=(features, 10)).astype(np.float32)
out.mkdir(parents=True, exist_ok=True)
for name, n in (("train", rows), ("val", 10_000)):
    x = rng.normal(size=(n, features)).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    frame["target"] = (x @ weights).argmax(axis=1).astype(np.int64)
    write_parquet(frame, out / f"{name}.parquet")
    if name == "train":
        infer_schema(frame.head(1000), "synthetic", "target").save(out / "schema.json")
        del frame, x
"""

JOB = r"""
import json, sys, time
from pathlib import Path
from mlops.data import Schema
from mlops.models import build_model, spec_for_data
from mlops.params import LoaderParams, TrainParams
from mlops.streaming import load_split, loading
from mlops.training import train_model
work, limit = Path(sys.argv[1]), float(sys.argv[2])
schema = Schema.load(work / "schema.json")
loader = LoaderParams(stream_above_mb=limit)
params = TrainParams.model_validate({
    "epochs": 1, "batch_size": 1024, "device": "cpu", "threads": 1,
    "schedule": {"name": "none"}, "early_stopping": {"patience": 0},
    "loader": loader.model_dump(), "model": {"mlp": {"hidden_sizes": [256, 128]}},
})
start = time.perf_counter()
train = load_split(work / "train.parquet", schema, loader, params.seed)
val = load_split(work / "val.parquet", schema, loader, params.seed)
spec = spec_for_data(params.model, schema, train)
result = train_model(lambda: build_model(spec), params, train, val)
seconds = time.perf_counter() - start
rows = len(train[0]) if isinstance(train, tuple) else len(train)
print(json.dumps({"loading": loading(train), "rows": rows, "samples_per_s": rows / seconds,
                  "val_accuracy": result.history[-1].metrics["val_accuracy"]}))
"""


def _tree_pss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_full_info().pss
    return total


def _job(work: Path, limit: float) -> dict[str, float | str]:
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(work), str(limit)], env=env(),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    peak = [0]
    handle = psutil.Process(proc.pid)

    def watch() -> None:
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], _tree_pss(handle))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"job failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1]) | {"peak_pss_mb": peak[0] / 2**20}


def main(rounds: int = 3) -> None:
    with tempfile.TemporaryDirectory(prefix="mlops-bench-stream-") as tmp:
        works = {"200k": Path(tmp) / "small", "2M": Path(tmp) / "large"}
        for rows, work in zip((SMALL, LARGE), works.values(), strict=True):
            subprocess.run([sys.executable, "-c", MAKE, str(rows), str(work), str(FEATURES)],
                           env=env(), check=True)  # fmt: skip
        cases = {"200k": (works["200k"], LIMIT_MB), "2M": (works["2M"], LIMIT_MB),
                 "200k_streamed": (works["200k"], 0.0)}  # fmt: skip
        runs: dict[str, list[dict[str, float | str]]] = {name: [] for name in cases}
        for i in range(rounds):
            for name, (work, limit) in cases.items():
                found = _job(work, limit)
                runs[name].append(found)
                print(
                    f"round {i + 1}: {name:14s} {found['loading']:6s} peak "
                    f"{found['peak_pss_mb']:7.0f} MB  {found['samples_per_s']:9.0f} rows/s"
                )
    med = {
        name: {
            "loading": r[0]["loading"],
            "peak_pss_mb": round(statistics.median(float(x["peak_pss_mb"]) for x in r), 1),
            "samples_per_s": round(statistics.median(float(x["samples_per_s"]) for x in r)),
            "val_accuracy": round(float(r[0]["val_accuracy"]), 4),
        }
        for name, r in runs.items()
    }
    setup = {
        "rows": {"small": SMALL, "large": LARGE}, "features": FEATURES,
        "stream_above_mb": LIMIT_MB, "dataloader_workers": 2, "epochs": 1,
        "batch_size": 1024, "rounds": rounds,
    }  # fmt: skip
    peak = {name: float(job["peak_pss_mb"]) for name, job in med.items()}
    speed = {name: float(job["samples_per_s"]) for name, job in med.items()}
    result = {
        "setup": setup,
        "jobs": med,
        "ratios": {
            "peak_memory_2M_over_200k": round(peak["2M"] / peak["200k"], 3),
            "throughput_200k_streamed_over_memory": round(
                speed["200k_streamed"] / speed["200k"], 3
            ),
        },
        "target": "peak_memory_2M_over_200k <= 1.3",
    }
    path = write_result("stream_memory", result)
    print(json.dumps(result["ratios"]), "->", path)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)

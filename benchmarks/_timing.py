"""Shared timing helpers for the benchmarks: wall-clock medians of whole commands."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def env() -> dict[str, str]:
    """This interpreter's bin first on PATH, no MLOPS_/DVC_ variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))}
    clean["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"
    return clean


def time_command(cmd: list[str], cwd: Path, repeat: int) -> list[float]:
    """Wall-clock seconds of `repeat` runs of a command (each must succeed)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env(), check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict[str, float]:
    """Median, min and max, rounded to milliseconds."""
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "runs": len(times),
    }


def now() -> str:
    """The current UTC time as results record it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write a result file with the machine it was measured on."""
    RESULTS.mkdir(exist_ok=True)
    result = {
        "benchmark": name,
        "measured_at": now(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path

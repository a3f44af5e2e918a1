"""How fast does `mlops --help` start? (Goal: no torch or mlflow import at start-up.)

Times `mlops --help` and `mlops version` against a bare Python start (the floor) and
against importing torch and mlflow (what a careless CLI would pay), in the same run.
Writes benchmarks/results/cli_startup.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import summary, time_command, write_result

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Measure and write the result."""
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    py = sys.executable
    cli = [py, "-c", "from mlops.cli import main; main()"]
    help_t = summary(time_command([*cli, "--help"], ROOT, repeat))
    version_t = summary(time_command([*cli, "version"], ROOT, repeat))
    bare = summary(time_command([py, "-c", "pass"], ROOT, repeat))
    heavy = summary(time_command([py, "-c", "import torch, mlflow"], ROOT, max(3, repeat // 3)))
    result = {
        "mlops_help": help_t,
        "mlops_version": version_t,
        "python_bare": bare,
        "import_torch_mlflow": heavy,
        "help_over_bare_python": round(help_t["median_s"] / bare["median_s"], 2),
        "help_over_heavy_imports": round(help_t["median_s"] / heavy["median_s"], 3),
    }
    path = write_result("cli_startup", result)
    print(
        f"mlops --help: {help_t['median_s']:.2f} s median "
        f"({result['help_over_heavy_imports']:.0%} of importing torch+mlflow, "
        f"{result['help_over_bare_python']}x bare python) -> {path}"
    )


if __name__ == "__main__":
    main()

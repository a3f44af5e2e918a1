"""How much smaller and faster is an int8 export than fp32, and what does it cost?

Issue 7 asks for the size and latency of int8 against fp32 (reported, no target). One
run, one registered digits MLP (64 → 256 → 10, trained on the train split): `mlops
export` to ONNX and TorchScript, each in fp32 and with `--quantize int8`. Each export
measures its own file size, the p50 latency of one-row calls on one thread (the same
measurement for every variant) and the accuracy on the test split, and checks parity.

Writes benchmarks/results/export_size.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import env, write_result
from registry.promotion import change_stage
from registry.stages import Ref
from tests.integration.registry_project import context, register_small, write_project

NAME = "digits"
HIDDEN = 256
VARIANTS = {
    "onnx": ["--format", "onnx"],
    "onnx_int8": ["--format", "onnx", "--quantize", "int8"],
    "torchscript": ["--format", "torchscript"],
    "torchscript_int8": ["--format", "torchscript", "--quantize", "int8"],
}


def _project(root: Path) -> int:
    """A project with one registered digits MLP in production."""

    write_project(root)
    ctx = context(root)
    version = int(register_small(ctx, NAME, seed=0, steps=300, hidden=HIDDEN).version)
    change_stage(ctx, NAME, Ref(version=version), "production", reason="benchmark")
    return version


def _export(root: Path, args: list[str]) -> dict[str, Any]:
    mlops = str(Path(sys.executable).parent / "mlops")
    done = subprocess.run(
        [mlops, "export", f"{NAME}@production", *args, "--json"],
        cwd=root, env=env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    exported, base = report["exported"], report["baseline"]
    return {
        "size_kb": round(exported["size_bytes"] / 1000, 1),
        "p50_ms": round(exported["p50_ms"], 4),
        "accuracy": round(exported["metric"], 4),
        "accuracy_delta_points": round(report["parity"]["delta"] * 100, 2),
        "agreement": round(report["parity"]["agreement"], 4),
        "pytorch_size_kb": round(base["size_bytes"] / 1000, 1),
        "pytorch_p50_ms": round(base["p50_ms"], 4),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        root = Path(tmp)
        _project(root)
        found = {name: _export(root, args) for name, args in VARIANTS.items()}
    ratios = {
        fmt: {
            "size_int8_over_fp32": round(
                found[f"{fmt}_int8"]["size_kb"] / found[fmt]["size_kb"], 2
            ),
            "p50_int8_over_fp32": round(found[f"{fmt}_int8"]["p50_ms"] / found[fmt]["p50_ms"], 2),
            "accuracy_int8_minus_fp32_points": round(
                (found[f"{fmt}_int8"]["accuracy"] - found[fmt]["accuracy"]) * 100, 2
            ),
        }
        for fmt in ("onnx", "torchscript")
    }
    path = write_result(
        "export_size",
        {
            "model": f"{NAME} MLP (64 features, {HIDDEN} hidden, 10 classes)",
            "variants": found,
            "ratios": ratios,
        },
    )
    print(json.dumps({"variants": found, "ratios": ratios}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

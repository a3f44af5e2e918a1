"""How fast is the registry with 1,000 versions of one model?

Goal (issue: registry): with 1,000 versions in the store, `list`, `show`, `promote`
(gates excluded) and `history` each within 2x the bare MLflow client call(s) they
build on, measured in one process; and `mlops registry list|show|history` as whole
commands at most 0.2x the time of `mlflow --help`.

Baselines (bare MLflow, same store, same run):
- list: `search_model_versions("name = 'm'")` (what a listing of one model needs);
- show: `get_model_version(m, v)`;
- promote: the calls a hand-written promotion makes to reach the same state: set the
  alias, tag the new holder's stage, retag the displaced holder;
- history: MLflow keeps no history, so the nearest call is `search_model_versions`
  (every version with its tags, from which a person would reconstruct one).

Writes benchmarks/results/registry_speed.json.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._timing import summary, time_command, write_result
from mlops import tracking
from mlops.models import build_model, make_spec, save_model
from mlops.params import MLPParams, ModelParams
from mlops.settings import Settings
from registry import mlflow_port, queries
from registry.context import Context
from registry.promotion import change_stage
from registry.registration import register_model, sync
from registry.stages import Ref

ROOT = Path(__file__).resolve().parents[1]
N_VERSIONS = 1000
NAME = "bench"
PARAMS = "registry:\n  gates: {}\n"


def _median(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches, open connections
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fill(project: Path) -> None:
    """One real logged model, then N_VERSIONS versions of it, recorded in both stores."""
    import torch

    settings = Settings.from_env(env={}, cwd=project)
    ctx = Context.load(settings)
    ctx.connect_mlflow()
    spec = make_spec(
        ModelParams(mlp=MLPParams(hidden_sizes=[8])), [0, 1], [0.0] * 4, [1.0] * 4, [4]
    )
    torch.manual_seed(0)
    model = build_model(spec).eval()
    weights = project / "weights"
    sha = save_model(model, spec, weights)
    example = np.zeros((4, 4), dtype=np.float32)
    with tracking.stage_run(settings, NAME, "register"):
        first = register_model(ctx, model, NAME, weights, sha, example, {})
    base = mlflow_port.get_version(NAME, 1)
    assert base is not None
    client = mlflow_port.client()
    tags = {k: v for k, v in base.tags.items()}
    for _ in range(N_VERSIONS - 1):
        client.create_model_version(NAME, first.source, run_id=first.run_id, tags=tags)
    sync(ctx, NAME)


def in_process(project: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Median seconds of each registry operation and its bare MLflow baseline."""

    ctx = Context.load(Settings.from_env(env={}, cwd=project))
    ctx.connect_mlflow()
    client = mlflow_port.client()
    mid = str(N_VERSIONS // 2)
    turn = {"n": 0}

    def ours_promote() -> None:
        turn["n"] += 1
        change_stage(ctx, NAME, Ref(version=1 + turn["n"] % 2), "production")

    def bare_promote() -> None:
        turn["n"] += 1
        new, old = str(3 + turn["n"] % 2), str(3 + (turn["n"] + 1) % 2)
        client.set_registered_model_alias(NAME, "champion", new)
        client.set_model_version_tag(NAME, new, "bench.stage", "champion")
        client.set_model_version_tag(NAME, old, "bench.stage", "none")

    pairs = {
        "list": (
            lambda: queries.list_versions(ctx, NAME),
            lambda: client.search_model_versions(f"name = '{NAME}'", max_results=10_000),
        ),
        "show": (
            lambda: queries.show(ctx, NAME, Ref(version=int(mid))),
            lambda: client.get_model_version(NAME, mid),
        ),
        "promote": (ours_promote, bare_promote),
        "history": (
            lambda: queries.history(ctx, NAME),
            lambda: client.search_model_versions(f"name = '{NAME}'", max_results=10_000),
        ),
    }
    results = {}
    for op, (ours, bare) in pairs.items():
        o, b = _median(ours, repeat), _median(bare, repeat)
        results[op] = {
            "ours_s": round(o, 4),
            "bare_mlflow_s": round(b, 4),
            "ratio": round(o / b, 2),
        }
    return results


def main() -> None:
    """Measure and write the result."""
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / ".dvc").mkdir()
        (project / "params.yaml").write_text(PARAMS)
        os.chdir(project)
        start = time.perf_counter()
        _fill(project)
        fill_s = time.perf_counter() - start
        ops = in_process(project, repeat)
        py = sys.executable
        cli = [py, "-c", "from mlops.cli import main; main()", "registry"]
        mlflow_help = summary(time_command([py, "-m", "mlflow", "--help"], project, repeat))
        commands = {}
        for label, args in (
            ("list", ["list", NAME]),
            ("show", ["show", NAME, "500"]),
            ("history", ["history", NAME]),
        ):
            t = summary(time_command([*cli, *args], project, repeat))
            commands[label] = t | {
                "over_mlflow_help": round(t["median_s"] / mlflow_help["median_s"], 3)
            }
    result = {
        "versions": N_VERSIONS,
        "fill_s": round(fill_s, 1),
        "in_process": ops,
        "mlflow_help": mlflow_help,
        "commands": commands,
    }
    path = write_result("registry_speed", result)
    for op, r in ops.items():
        print(
            f"{op:8s} ours {r['ours_s'] * 1000:7.1f} ms  bare MLflow "
            f"{r['bare_mlflow_s'] * 1000:7.1f} ms  ratio {r['ratio']:.2f} (goal <= 2)"
        )
    for label, t in commands.items():
        print(
            f"mlops registry {label}: {t['median_s']:.2f} s = {t['over_mlflow_help']:.2f}x "
            f"`mlflow --help` ({mlflow_help['median_s']:.2f} s) (goal <= 0.2)"
        )
    print(f"-> {path}")


if __name__ == "__main__":
    main()

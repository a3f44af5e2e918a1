"""A registry project for tests: the digits test split on disk (as the pipeline writes
it), params.yaml with a `registry:` section, and small real models, trained in a second
and registered in a real MLflow store through the same service the pipeline uses."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mlops import tracking
from mlops.data import (
    Schema,
    features_and_target,
    infer_schema,
    load_source,
    read_parquet,
    write_parquet,
)
from mlops.models import ModelSpec, build_model, feature_stats, make_spec, save_model
from mlops.params import MLPParams, ModelParams, SplitParams
from mlops.settings import Settings
from mlops.splitting import stratified_split
from registry.context import Context
from registry.registration import RegisteredVersion, register_model

# Gates that every small model passes, so tests choose what they exercise.
OPEN_GATES = """
registry:
  gates:
    staging: {integrity: true}
    production: {integrity: true, signature: true}
"""
NO_GATES = """
registry:
  gates: {}
"""


def write_project(root: Path, params_yaml: str = OPEN_GATES) -> None:
    """Make `root` a project: `.dvc/`, params.yaml, the digits schema and test split."""

    (root / ".dvc").mkdir(parents=True, exist_ok=True)
    (root / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    (root / "params.yaml").write_text(params_yaml)
    frame = load_source("builtin:digits", "target", root)
    schema = infer_schema(frame, "builtin:digits", "target")
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (root / "data" / "split").mkdir(parents=True, exist_ok=True)
    schema.save(root / "data" / "raw" / "schema.json")
    schema.save(root / "data" / "split" / "schema.json")  # nothing to fit for digits
    train, _val, test = stratified_split(frame, SplitParams())
    write_parquet(test, root / "data" / "split" / "test.parquet")
    write_parquet(train, root / "data" / "split" / "train.parquet")


def _arrays(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    schema = Schema.load(root / "data" / "raw" / "schema.json")
    x, y = features_and_target(read_parquet(root / "data" / "split" / f"{part}.parquet"), schema)
    return np.asarray(x), np.asarray(y)


def train_small(
    root: Path, seed: int = 0, steps: int = 150, hidden: int = 32
) -> tuple[Any, ModelSpec]:
    """An MLP trained full-batch on the train split: ~0.95+ test accuracy at 150 steps,
    much less at 5."""
    import torch

    x, y = _arrays(root, "train")
    mean, std = feature_stats(x)
    schema = Schema.load(root / "data" / "raw" / "schema.json")
    spec = make_spec(
        ModelParams(mlp=MLPParams(hidden_sizes=[hidden], dropout=0.0)),
        list(range(10)),
        mean,
        std,
        [64],
        features=schema.features,
        target=schema.target,
    )
    torch.manual_seed(seed)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval(), spec


def register_small(
    ctx: Context,
    name: str = "digits",
    seed: int = 0,
    steps: int = 150,
    hidden: int = 32,
    tags: dict[str, Any] | None = None,
) -> RegisteredVersion:
    """Train a small model and register it as a new version of `name`."""
    model, spec = train_small(ctx.settings.root, seed, steps, hidden)
    x, _ = _arrays(ctx.settings.root, "test")
    with tempfile.TemporaryDirectory() as tmp:
        sha = save_model(model, spec, tmp)
        with tracking.stage_run(ctx.settings, name, "register"):
            return register_model(
                ctx,
                model,
                name,
                Path(tmp),
                sha,
                x[:8],
                {"mlops.git_commit": f"commit{seed}", **(tags or {})},
            )


def context(root: Path, env: dict[str, str] | None = None) -> Context:
    """The registry context of `root`, with `env`'s MLOPS_* settings."""
    settings = Settings.from_env(env=env or {}, cwd=root)
    ctx = Context.load(settings)
    ctx.connect_mlflow()
    return ctx


def cli(
    root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `mlops ARGS…` in `root` as a separate process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))}
    return subprocess.run(
        [sys.executable, "-c", "from mlops.cli import main; main()", *args],
        cwd=root,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )

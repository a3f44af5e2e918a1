"""Versions registered before models-from-code were logged with `mlflow.pytorch`, which
pickles the network by its class path (`mlops.nets.…`). Those classes stay where they
are: a fresh interpreter still loads such a model with `mlflow.pytorch.load_model` and
gets the same outputs, for every family."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow.pytorch
import torch

from mlops.models import build_model, make_spec
from mlops.params import ModelParams, load_params

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ["mlp", "cnn", "rnn", "transformer"]
SHAPE = [1, 8, 8]

LOAD = """
import json, sys
import mlflow.pytorch, torch
found = {}
for path in sys.argv[1:]:
    model = mlflow.pytorch.load_model(path)
    torch.manual_seed(1)
    with torch.no_grad():
        out = model(torch.randn(3, 64))
    found[path] = {"modules": sorted({type(m).__module__ for m in model.modules()}),
                   "out": out.tolist()}
print(json.dumps(found))
"""


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.randn(3, 64))  # type: ignore[no-any-return]


def test_pickled_versions_load_in_a_fresh_interpreter(tmp_path: Path) -> None:
    data = load_params(REPO / "params.yaml").train.model.model_dump()
    n = math.prod(SHAPE)
    expected = {}
    for family in FAMILIES:
        params = ModelParams.model_validate({**data, "family": family})
        torch.manual_seed(0)
        spec = make_spec(params, list(range(10)), [0.0] * n, [1.0] * n, SHAPE)
        model = build_model(spec).eval()
        saved = str(tmp_path / family)
        # Pickled, as older versions were logged (MLflow 3's default is a traced graph).
        mlflow.pytorch.save_model(model, saved, serialization_format="pickle")
        expected[saved] = _outputs(model)

    done = subprocess.run(
        [sys.executable, "-c", LOAD, *expected],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for saved, out in expected.items():
        assert "mlops.nets" in found[saved]["modules"], (saved, found[saved]["modules"])
        assert torch.allclose(torch.tensor(found[saved]["out"]), out, atol=1e-5), saved

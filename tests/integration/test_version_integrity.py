"""A version is the unit of truth: it carries what turns a request into a prediction, every
file it holds is verified against the manifest recorded at registration wherever it is
loaded, MLflow's own loader answers as `mlops serve` does, and a version whose files lie
outside the artifact store is never read.

A real project (digits, two small versions in a real MLflow store); the commands run as
their own processes, as a user runs them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlops.errors import DataError, UserError
from mlops.serving.model import load_version
from registry import mlflow_port
from registry.context import Context
from registry.loading import fetch, resolve
from registry.stages import Ref
from tests.integration.registry_project import _arrays, cli, context, register_small, write_project

MODEL = "digits"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("integrity")
    write_project(root)
    ctx = context(root)
    versions = [register_small(ctx, MODEL, seed=seed) for seed in (0, 1)]
    x, y = _arrays(root, "test")
    frame = pd.DataFrame(
        x, columns=json.loads((root / "data/raw/schema.json").read_text())["features"]
    )
    frame["target"] = y
    frame.to_csv(root / "current.csv", index=False)
    return {"root": root, "ctx": ctx, "versions": versions}


def client(ctx: Context) -> MlflowClient:
    uri = ctx.settings.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def version_folder(ctx: Context, version: int) -> Path:
    """The version's folder inside the artifact store (what an attacker with write access
    to the store would edit)."""
    uri = client(ctx).get_model_version_download_uri(MODEL, str(version))
    assert uri.startswith("file://"), uri
    return Path(uri.removeprefix("file://"))


@contextlib.contextmanager
def edited(path: Path, change: Any) -> Iterator[None]:
    """`path` changed by `change(text) -> text` for the duration of the block."""
    original = path.read_bytes()
    path.write_text(change(original.decode()))
    try:
        yield
    finally:
        path.write_bytes(original)


def one_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


# --- what travels with a version ---------------------------------------------------------


def test_a_version_carries_its_features_and_a_manifest_of_every_file(
    project: dict[str, Any], tmp_path: Path
) -> None:
    ctx = project["ctx"]
    version = resolve(ctx, MODEL, Ref(version=1))
    directory, spec = fetch(ctx, version, tmp_path)
    schema = json.loads((project["root"] / "data/raw/schema.json").read_text())
    assert spec.features == schema["features"] and spec.target == "target"
    assert spec.classes == list(range(10)) and spec.task == "classification"
    files = json.loads(version.info["mlops.manifest"])
    for name in ("MLmodel", "artifacts/model.json", "artifacts/model.safetensors",
                 "mlops_model.py", "requirements.txt"):  # fmt: skip
        assert name in files, sorted(files)
    # the signature names the columns, in the version's order
    mlmodel = yaml.safe_load((directory / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [c["name"] for c in inputs] == schema["features"]
    assert "python_model.pkl" not in files and not any(f.endswith(".pth") for f in files)


def test_mlflow_pyfunc_answers_as_mlops_serve_does(project: dict[str, Any], tmp_path: Path) -> None:

    ctx = project["ctx"]
    served = load_version(ctx, resolve(ctx, MODEL, Ref(version=1)), "torch", tmp_path, 64)
    x, _ = _arrays(project["root"], "test")
    names = served.input.features
    frame = pd.DataFrame(x[:50].astype(np.float64), columns=names)
    body, _ = served.predict(np.ascontiguousarray(x[:50]))

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    labels = model.predict(frame)
    assert labels.tolist() == np.asarray(body["predictions"]).tolist()
    proba = model.predict(frame, params={"output": "probabilities"})
    assert list(proba.columns) == [str(c) for c in range(10)]
    np.testing.assert_allclose(proba.to_numpy(), body["probabilities"], atol=1e-6)
    # columns are read by name: another order gives the same answers
    shuffled = frame[list(reversed(names))]
    assert model.predict(shuffled).tolist() == labels.tolist()


# --- every file verified, everywhere --------------------------------------------------


def _shift_mean(text: str) -> str:
    spec = json.loads(text)
    spec["mean"] = [m + 3.0 for m in spec["mean"]]
    return json.dumps(spec)


def _swap_classes(text: str) -> str:
    spec = json.loads(text)
    spec["classes"] = list(reversed(spec["classes"]))
    return json.dumps(spec)


def _signature(text: str) -> str:
    return text.replace('"name": "px_0_0"', '"name": "px_zero"')


@pytest.mark.parametrize(
    ("file", "change"),
    [
        ("artifacts/model.json", _shift_mean),
        ("artifacts/model.json", _swap_classes),
        ("MLmodel", _signature),
        ("mlops_model.py", lambda text: text + "\nimport os\n"),
    ],
)
def test_an_edited_file_is_refused_when_loaded(
    project: dict[str, Any], file: str, change: Any, tmp_path: Path
) -> None:
    ctx = project["ctx"]
    version = resolve(ctx, MODEL, Ref(version=1))
    with (
        edited(version_folder(ctx, 1) / file, change),
        pytest.raises(DataError, match=file.replace(".", r"\.")),
    ):
        fetch(ctx, version, tmp_path)


def test_an_edited_file_is_refused_by_every_door(project: dict[str, Any]) -> None:
    root, ctx = project["root"], project["ctx"]
    file = "artifacts/model.json"
    with edited(version_folder(ctx, 1) / file, _swap_classes):
        for args in (
            ["export", f"{MODEL}@1", "--format", "onnx"],
            ["serve", f"{MODEL}@1", "--port", "0"],
            ["registry", "compare", MODEL, "1", "2"],
            ["monitor", "drift", f"{MODEL}@1", "--input", "current.csv"],
        ):
            line = one_error(cli(root, *args), 1)
            assert file in line and "version 1" in line, (args, line)
        # the integrity gate measures it, refuses, and nothing is deserialised
        done = cli(root, "registry", "promote", MODEL, "1", "--to", "staging")
        assert "artifact integrity" in one_error(done, 1)
    assert ctx.store.version(MODEL, 1).stage == "none"  # type: ignore[union-attr]


# --- sources outside the artifact store ------------------------------------------------------


@pytest.mark.parametrize("source", ["file:///etc", "/", "../../../etc"])
def test_a_source_outside_the_store_is_never_copied(
    project: dict[str, Any], source: str, tmp_path: Path
) -> None:
    ctx = project["ctx"]
    run_id = project["versions"][0].run_id
    forged = client(ctx).create_model_version(MODEL, source, run_id=run_id)
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match="outside the artifact store"):
        mlflow_port.download(MODEL, int(forged.version), dest)
    assert not dest.exists() or not any(dest.rglob("*"))  # nothing was copied


def test_a_source_outside_the_store_is_never_read(project: dict[str, Any], tmp_path: Path) -> None:
    root, ctx = project["root"], project["ctx"]
    run_id = project["versions"][0].run_id
    forged = client(ctx).create_model_version(MODEL, "/etc/ssl", run_id=run_id)
    number = int(forged.version)

    done = cli(root, "registry", "sync", MODEL)
    assert done.returncode == 0, done.stderr
    assert f"version {number}: its source" in done.stderr and "outside" in done.stderr
    assert ctx.store.version(MODEL, number) is None  # not recorded
    line = one_error(cli(root, "export", f"{MODEL}@{number}", "--format", "onnx"), 2)
    assert "outside the artifact store" in line
    line = one_error(cli(root, "serve", f"{MODEL}@{number}", "--port", "0"), 2)
    assert "outside the artifact store" in line


def test_a_promotion_writes_the_stage_change_into_the_version_card(
    project: dict[str, Any],
) -> None:
    root, ctx = project["root"], project["ctx"]
    done = cli(root, "registry", "promote", MODEL, "2", "--to", "staging", "--reason", "card")
    assert done.returncode == 0, done.stderr
    card = client(ctx).get_model_version(MODEL, "2").description
    assert card.startswith("**digits version 2**") and "Stage **staging**" in card
    section = card.split("**Stages and gates**", 1)[1]
    assert "promote → **staging**" in section and "1/1 gates passed" in section
    assert "— card" in section

"""A folder of images (circles, squares and triangles drawn here with Pillow, as PNG, JPEG
and WebP in class subfolders) goes through `dvc repro` by params.yaml alone, to a
registered CNN that `mlops serve` answers over JSON and `curl -F file=@…`, that ONNX
export and `mlflow.pyfunc` answer the same way; bad images are stopped by `validate`."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import ImageOps
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlops.exposure import free_port
from tests.e2e.project import clean_env, copy_repo, run
from tests.servers import serving
from tests.shapes import CLASSES, draw, make_folder, png_bytes

pytestmark = pytest.mark.e2e

PARAMS = {
    "pipeline": {"name": "shapes"},
    "data": {"source": "data/external/shapes", "image": {"size": [32, 32], "channels": 3}},
    "train": {
        "epochs": 15,
        "early_stopping": {"patience": 0},
        "tensorboard": True,
        "model": {"family": "cnn"},
    },
    "registry": {"gates": {"production": {"thresholds": {"accuracy": 0.5}}}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repo on 300 images after one complete `dvc repro`."""
    root = copy_repo(tmp_path_factory.mktemp("images"), PARAMS)
    make_folder(root / "data" / "external" / "shapes", per_class=100)
    done = run(["dvc", "repro"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


def test_the_folder_trains_a_registered_cnn(project: Path) -> None:
    schema = json.loads((project / "data" / "raw" / "schema.json").read_text())
    assert schema["classes"] == list(CLASSES)
    assert schema["features"] == ["image"] and schema["input_shape"] == [3, 32, 32]
    report = json.loads((project / "reports" / "validation.json").read_text())
    names = {c["name"]: c["passed"] for c in report["checks"]}
    assert names["images.readable"] and names["images.mode"] and names["images.min_size"]
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.8, metrics["test"]
    spec = json.loads((project / "models" / "model.json").read_text())
    assert spec["image"] == {"column": "image", "size": [32, 32], "channels": 3}
    assert len(spec["mean"]) == 3 and len(spec["std"]) == 3  # per channel, from train
    registered = json.loads((project / "reports" / "registered.json").read_text())
    assert registered["name"] == "shapes" and registered["version"] == "1"


def test_changing_one_image_reruns_ingest(project: Path, tmp_path: Path) -> None:
    image = next((project / "data" / "external" / "shapes" / "circle").glob("*.png"))
    before = image.read_bytes()
    try:
        image.write_bytes(png_bytes("circle", seed=99))
        status = run(["dvc", "status", "--json"], project)
        assert status.returncode == 0, status.stderr
        assert "ingest" in json.loads(status.stdout)
    finally:
        image.write_bytes(before)
    assert "ingest" not in json.loads(run(["dvc", "status", "--json"], project).stdout)


def _post(port: int, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/predict", body, {"Content-Type": content_type})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def _curl(port: int, *files: Path) -> dict[str, Any]:
    form = [arg for f in files for arg in ("-F", f"file=@{f}")]
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", *form, f"http://127.0.0.1:{port}/predict"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module", params=["torch", "onnx"])
def server(request: pytest.FixtureRequest, project: Path) -> Iterator[int]:
    """`mlops serve shapes@1` on each backend, ready."""
    with serving(project, "shapes@1", "--backend", request.param) as port:
        yield port


def _files(tmp_path: Path) -> list[Path]:
    paths = []
    for i, kind in enumerate(CLASSES):
        path = tmp_path / f"{kind}.png"
        path.write_bytes(png_bytes(kind, seed=100 + i))
        paths.append(path)
    return paths


def _pyfunc(project: Path, files: list[Path]) -> tuple[list[str], list[list[float]]]:
    uri = f"sqlite:///{project / '.mlops' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/shapes/1")
    frame = pd.DataFrame({"image": [f.read_bytes() for f in files]})
    labels = [str(v) for v in model.predict(frame)]
    proba = model.predict(frame, params={"output": "probabilities"})
    return labels, proba.to_numpy().tolist()


def test_serve_answers_uploads_and_base64_records_as_pyfunc_does(
    server: int, project: Path, tmp_path: Path
) -> None:
    files = _files(tmp_path)
    uploaded = _curl(server, *files)
    assert uploaded["model"] == "shapes" and len(uploaded["predictions"]) == 3
    assert set(uploaded["predictions"]) <= set(CLASSES)
    records = {"records": [{"image": base64.b64encode(f.read_bytes()).decode()} for f in files]}
    status, answered = _post(server, json.dumps(records).encode(), "application/json")
    assert status == 200, answered
    assert answered["predictions"] == uploaded["predictions"]
    labels, proba = _pyfunc(project, files)
    assert labels == uploaded["predictions"]
    for mine, theirs in zip(proba, uploaded["probabilities"], strict=True):
        assert mine == pytest.approx(theirs, abs=1e-4)


def test_an_undecodable_image_is_a_4xx_naming_it(server: int, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    good = _files(tmp_path)[0]
    done = subprocess.run(
        ["curl", "-sS", "-F", f"file=@{good}", "-F", f"file=@{bad}", "-w", "\n%{http_code}",
         f"http://127.0.0.1:{server}/predict"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    body, code = done.stdout.rsplit("\n", 1)
    assert code == "422", done.stdout
    assert "notes.png" in json.loads(body)["error"]
    record = {"records": [{"image": base64.b64encode(b"GIF89a....").decode()}]}
    status, answer = _post(server, json.dumps(record).encode(), "application/json")
    assert status == 422 and "records[0].image" in answer["error"], answer
    status, answer = _post(server, b'{"records": [{"image": "%%%"}]}', "application/json")
    assert status == 422 and "base64" in answer["error"], answer


def test_bad_images_stop_validate_naming_the_files(tmp_path: Path) -> None:
    root = copy_repo(tmp_path, PARAMS)
    folder = root / "data" / "external" / "shapes"
    make_folder(folder, per_class=12)
    truncated = folder / "square" / "0000.png"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    (folder / "circle" / "fake.jpg").write_text("not a jpeg")
    done = run(["dvc", "repro", "validate"], root)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("validate: error:")]
    assert len(lines) == 1, done.stderr
    assert "images.readable" in lines[0]
    assert "square/0000.png" in lines[0] and "circle/fake.jpg" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_vision_transformer_with_augmentation_trains_and_exports(tmp_path: Path) -> None:
    vit = {
        "pipeline": {"name": "shapes_vit"},
        "data": PARAMS["data"],
        "train": {
            "epochs": 25,
            "early_stopping": {"patience": 0},
            "augment": {"flip": True, "crop_scale": [0.7, 1.0]},
            "model": {"family": "transformer", "transformer": {"patch_size": 4}},
        },
    }
    root = copy_repo(tmp_path, vit)
    make_folder(root / "data" / "external" / "shapes", per_class=100)
    done = run(["dvc", "repro"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    spec = json.loads((root / "models" / "model.json").read_text())
    assert spec["family"] == "transformer" and spec["hyper"]["patch_size"] == 4
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.7, metrics["test"]
    exported = run([sys.executable, "-m", "mlops", "export", "shapes_vit@1", "--format", "onnx",
                    "--json"], root)  # fmt: skip
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-2000:]
    report = json.loads(exported.stdout)
    assert report["passed"] is True, report


TRAIN = [sys.executable, "-m", "pipelines.train", "--checkpoint-every", "0"]


def test_a_streamed_job_killed_mid_epoch_resumes_to_the_same_model(
    tmp_path: Path, mlflow_client: Any
) -> None:
    streamed = {
        **PARAMS,
        "train": {
            "epochs": 8,
            "early_stopping": {"patience": 0},
            "augment": {"flip": True, "crop_scale": [0.8, 1.0]},
            "loader": {"workers": 2, "shuffle_buffer": 64, "stream_above_mb": 0.0},
            "model": {"family": "cnn"},
        },
    }
    root = copy_repo(tmp_path, streamed)
    make_folder(root / "data" / "external" / "shapes", per_class=50)
    done = run(["dvc", "repro", "split"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    straight = run(TRAIN, root)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = (root / "models" / "model.safetensors").read_bytes()

    proc = subprocess.Popen(
        TRAIN, cwd=root, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # a checkpoint exists once epoch 3 has printed
        if "epoch   4/" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its DataLoader workers
    proc.wait(timeout=30)
    resumed = run([*TRAIN, "--resume"], root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (root / "models" / "model.safetensors").read_bytes() == expected

    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("shapes").experiment_id
    runs = client.search_runs([experiment], "tags.`mlops.stage` = 'train'")
    assert {r.data.tags["mlops.data.loading"] for r in runs} == {"stream"}
    latest = max(runs, key=lambda r: r.info.start_time)
    assert int(latest.data.tags["mlops.resumed_from_epoch"]) >= 3


def test_fine_tuning_a_registered_version_on_a_new_class_set(tmp_path: Path) -> None:
    train = {**PARAMS["train"], "epochs": 12, "tensorboard": False}
    root = copy_repo(tmp_path, {**PARAMS, "train": train})
    make_folder(root / "data" / "external" / "shapes", per_class=80)
    done = run(["dvc", "repro"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parent = json.loads((root / "reports" / "registered.json").read_text())

    # the new data: two of the classes only, other pictures; start from version 1
    shutil.rmtree(root / "data" / "external" / "shapes")
    make_folder(root / "data" / "external" / "shapes", per_class=80, seed=5)
    shutil.rmtree(root / "data" / "external" / "shapes" / "triangle")
    params = root / "params.yaml"
    text = params.read_text().replace("init_from: null", "init_from: shapes@1")
    params.write_text(text.replace("freeze: []", "freeze: [conv.0]"))
    done = run(["dvc", "repro"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "train: starting from shapes version 1" in done.stdout
    child = json.loads((root / "reports" / "registered.json").read_text())
    assert child["version"] == "2"
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.65, metrics["test"]  # two classes: chance is 0.5

    # the frozen first block is the parent's, bit for bit; the head has two outputs now
    uri = f"sqlite:///{root / '.mlops' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    weights = {}
    for version in ("1", "2"):
        path = mlflow.artifacts.download_artifacts(
            f"models:/shapes/{version}", dst_path=str(tmp_path / version)
        )
        weights[version] = load_file(str(Path(path) / "artifacts" / "model.safetensors"))
    conv = [k for k in weights["1"] if k.startswith("1.net.0.")]
    assert conv and all(torch.equal(weights["1"][k], weights["2"][k]) for k in conv)
    head = max(
        (k for k in weights["2"] if k.endswith(".weight")), key=lambda k: int(k.split(".")[2])
    )
    assert weights["2"][head].shape[0] == 2 and weights["1"][head].shape[0] == 3

    shown = run(
        [sys.executable, "-m", "mlops", "registry", "lineage", "shapes", "2", "--json"], root
    )
    assert shown.returncode == 0, shown.stderr
    chain = json.loads(shown.stdout)
    assert chain["parent"] == {
        "model": "shapes", "version": "1", "sha256": parent["sha256"], "head": "replaced",
    }  # fmt: skip
    assert chain["ancestors"]["1"].startswith("shapes v1")


def _events(folder: Path) -> Any:
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_files_parse_and_mlops_tensorboard_serves_them(
    project: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{project / '.mlops' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("shapes").experiment_id
    found = {}
    for stage in ("train", "evaluate"):
        run = client.search_runs([experiment], f"tags.`mlops.stage` = '{stage}'")[0]
        found[stage] = Path(
            client.download_artifacts(run.info.run_id, "tensorboard", str(tmp_path / stage))
        )
    train = _events(found["train"] / "train")
    tags = train.Tags()
    assert {"loss/train", "loss/val", "accuracy/val", "lr"} <= set(tags["scalars"])
    assert len(train.Scalars("loss/val")) == 15  # one per epoch
    assert "train/examples" in tags["images"] and train.Graph() is not None
    assert "_hparams_/session_start_info" in train.PluginTagToContent("hparams")  # HParams
    assert "hparam/val_accuracy" in tags["scalars"]
    evaluate = _events(found["evaluate"] / "evaluate").Tags()
    assert "test/misclassified" in evaluate["images"]  # test accuracy < 1: some are wrong
    assert "test/misclassified/text_summary" in evaluate["tensors"]

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlops", "tensorboard", "--port", str(port)], cwd=project,
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        runs: list[str] = []
        while time.monotonic() < deadline and len(runs) < 2:
            assert process.poll() is None, process.communicate()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/data/runs")
                runs = json.loads(conn.getresponse().read())
            except (OSError, ValueError):
                time.sleep(0.5)
        assert any(r.startswith("train-") for r in runs), runs
        assert any(r.startswith("evaluate-") for r in runs), runs
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


def _image_table(path: Path, shift: bool) -> None:
    rows = []
    for i in range(90):
        kind = CLASSES[i % 3]
        image = draw(kind, random.Random(500 + i), 48)
        if shift:  # a camera that inverts colours and shoots larger pictures
            image = ImageOps.invert(image).resize((80, 80))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        rows.append((buffer.getvalue(), kind))
    pd.DataFrame(rows, columns=["image", "target"]).to_parquet(path)


@pytest.mark.parametrize("shift", [False, True])
def test_drift_on_images_compares_intensity_size_and_embeddings(
    project: Path, tmp_path: Path, shift: bool
) -> None:
    table = tmp_path / "current.parquet"
    _image_table(table, shift)
    done = run([sys.executable, "-m", "mlops", "monitor", "drift", "shapes@1", "--input",
                str(table), "--json"], project)  # fmt: skip
    assert done.returncode == (1 if shift else 0), done.stderr[-2000:]  # 1: drift found
    report = json.loads(done.stdout)
    features = {f["name"]: f for f in report["features"]}
    assert {"intensity.red", "contrast", "embedding.pc1", "width", "height"} <= set(features)
    drifted = {name for name, f in features.items() if f["drifted"]}
    if shift:
        assert report["drift"] is True
        assert {"intensity.red", "width", "embedding.pc1"} <= drifted
    else:
        assert report["drift"] is False and not drifted

"""`mlops export` as a user runs it, on a real MLflow store: an int8 ONNX export in its
own process (JSON), a TorchScript one and a pruned one through the CLI in-process, the
file and report attached to the version's run with tags whose sha256 matches, a parity
failure refused with nothing written, bad input refused with one line, and the
`require_export` gate blocking a promotion until an ONNX export passes."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from mlflow.tracking import MlflowClient

from mlops.cli import main
from mlops.errors import DataError
from mlops.exposure import free_port
from mlops.io import file_digest
from registry.context import Context
from registry.export import parity as export_parity
from registry.export.records import exported_file, records
from tests.integration.registry_project import _arrays, cli, context, register_small, write_project

MODEL = "digits"
GATED = """
registry:
  gates:
    staging: {integrity: true}
    production: {integrity: true, signature: true, require_export: onnx}
"""


def mlops(root: Path, *args: str, patch: dict[str, Any] | None = None) -> tuple[int, str, str]:
    """`mlops ARGS…` in this process (much faster than a new one): exit code, out, err."""

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key in [k for k in os.environ if k.startswith(("MLOPS_", "DVC_"))]:
            mp.delenv(key)
        mp.setattr(sys, "argv", ["mlops", *args])
        for name, value in (patch or {}).items():
            mp.setattr(export_parity, name, value)
        code: int | str | None = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as done:
                code = done.code
    return int(code or 0), out.getvalue(), err.getvalue()


def export_tags(ctx: Context, version: int = 1) -> dict[str, dict[str, str]]:
    """Variant → the export's record, read from the version's tags."""
    return records(MlflowClient().get_model_version(MODEL, str(version)).tags)


def exported_paths(ctx: Context, run_id: str) -> list[str]:
    client, found, todo = MlflowClient(), list[str](), ["exports"]
    while todo:
        for item in client.list_artifacts(run_id, todo.pop()):
            (todo if item.is_dir else found).append(item.path)
    return sorted(found)


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Version 1 (a 256-unit MLP); promotion to production refused for want of an ONNX
    export, the int8 ONNX export in its own process, the promotion again, then a
    TorchScript export of digits@production and a pruned one."""
    root = tmp_path_factory.mktemp("export")
    write_project(root, GATED)
    ctx = context(root)
    registered = register_small(ctx, MODEL, seed=0, hidden=256)
    seen: dict[str, Any] = {"ctx": ctx, "root": root, "run_id": registered.run_id}
    seen["refused_promotion"] = mlops(root, "registry", "promote", MODEL, "1", "--to",
                                      "production")  # fmt: skip
    seen["onnx"] = cli(root, "export", f"{MODEL}@1", "--format", "onnx", "--quantize", "int8",
                       "--json")  # fmt: skip
    seen["promotion"] = mlops(root, "registry", "promote", MODEL, "1", "--to", "production")
    seen["torchscript"] = mlops(root, "export", f"{MODEL}@production", "--format", "torchscript")
    seen["pruned"] = mlops(root, "export", f"{MODEL}@1", "--format", "torchscript", "--prune",
                           "0.3", "--max-drop", "100", "--json")  # fmt: skip
    return seen


def test_int8_onnx_export_prints_its_parity_report(flow: dict[str, Any]) -> None:
    done = flow["onnx"]
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["variant"] == "onnx-int8" and report["quantize"] == "int8"
    parity = report["parity"]
    assert parity["agreement"] >= export_parity.INT8_MIN_AGREEMENT
    assert parity["delta"] >= -export_parity.MAX_DROP and parity["metric"] == "accuracy"
    assert 0.0 < parity["max_abs_diff"] < 0.5
    assert 0.9 < report["baseline"]["metric"] <= 1.0 and report["rows"] == 270
    assert report["exported"]["size_bytes"] < report["baseline"]["size_bytes"]
    assert report["exported"]["p50_ms"] > 0 and report["baseline"]["p50_ms"] > 0
    assert [c["check"] for c in parity["checks"]] == ["label agreement", "accuracy delta"]


def test_the_file_and_report_are_attached_with_tags(flow: dict[str, Any], tmp_path: Path) -> None:
    ctx, run_id = flow["ctx"], flow["run_id"]
    report = json.loads(flow["onnx"].stdout)
    tags = export_tags(ctx)
    where = f"exports/{MODEL}-v1/onnx-int8"
    assert f"{where}/model.onnx" in exported_paths(ctx, run_id)
    assert f"{where}/export.json" in exported_paths(ctx, run_id)
    assert tags["onnx-int8"]["artifact"] == f"runs:/{run_id}/{where}/model.onnx"
    assert tags["onnx-int8"]["parity"] == "passed"
    assert tags["onnx-int8"]["sha256"] == report["sha256"]
    assert tags["onnx-int8"]["size_bytes"] == str(report["exported"]["size_bytes"])
    local = MlflowClient().download_artifacts(run_id, f"{where}/model.onnx", str(tmp_path))
    assert file_digest(local) == report["sha256"]
    attached = json.loads(
        Path(
            MlflowClient().download_artifacts(run_id, f"{where}/export.json", str(tmp_path))
        ).read_text()
    )
    assert attached["sha256"] == report["sha256"] and attached["passed"]


def test_exported_file_downloads_and_verifies(flow: dict[str, Any], tmp_path: Path) -> None:
    ctx = flow["ctx"]
    version = ctx.store.version(MODEL, 1)
    path = exported_file(ctx, version, "onnx", "int8", tmp_path / "a")
    assert path is not None and path.name == "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    assert exported_file(ctx, version, "onnx", None, tmp_path / "b") is None  # not exported
    tags = export_tags(ctx)
    stored = tags["onnx-int8"]["artifact"].split("/", 3)[3]
    on_disk = next((flow["root"] / ".mlops").rglob(stored))
    original = on_disk.read_bytes()
    try:
        on_disk.write_bytes(original + b"\0")
        with pytest.raises(DataError, match="differs from the recorded"):
            exported_file(ctx, version, "onnx", "int8", tmp_path / "c")
    finally:
        on_disk.write_bytes(original)


def test_torchscript_export_prints_a_table(flow: dict[str, Any]) -> None:
    code, out, err = flow["torchscript"]
    assert code == 0, err
    for text in ("digits version 1 → torchscript", "pytorch", "model.safetensors", "model.pt",
                 "p50 latency", "accuracy delta", "max abs diff", "agreement", "Parity",
                 "attached: runs:/"):  # fmt: skip
        assert text in out, out
    assert export_tags(flow["ctx"])["torchscript"]["parity"] == "passed"


def test_pruned_export_reports_sparsity(flow: dict[str, Any]) -> None:
    code, out, err = flow["pruned"]
    assert code == 0, err
    report = json.loads(out)
    assert report["variant"] == "torchscript-pruned30"
    assert report["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert report["parity"]["max_abs_diff"] <= export_parity.FP32_MAX_ABS_DIFF
    assert export_tags(flow["ctx"])["torchscript-pruned30"]["sparsity"].startswith("0.3")


def test_require_export_gate_blocks_then_allows(flow: dict[str, Any]) -> None:
    code, _, err = flow["refused_promotion"]
    assert code == 1 and "refused by gate 'export': none (needs a passing onnx export)" in err
    code, out, err = flow["promotion"]
    assert code == 0, err
    assert "onnx-int8" in out
    assert flow["ctx"].store.holders(MODEL).get("production") == 1


def test_a_parity_failure_is_refused_and_writes_nothing(flow: dict[str, Any]) -> None:
    ctx, run_id = flow["ctx"], flow["run_id"]
    before = export_tags(ctx), exported_paths(ctx, run_id)
    code, out, err = mlops(flow["root"], "export", f"{MODEL}@1", "--format", "onnx",
                           patch={"FP32_MAX_ABS_DIFF": -1.0})  # fmt: skip
    assert code == 1
    # the steps it went through (plain lines in a log), then one error line
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0]
    assert "onnx export refused by parity check 'max abs diff'" in errors[0]
    assert "Traceback" not in err
    assert "FAIL" in out and "attached" not in out
    assert (export_tags(ctx), exported_paths(ctx, run_id)) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["digits@1", "--format", "tflite"], "--format 'tflite'"),
        (["digits@1", "--quantize", "int4"], "--quantize 'int4'"),
        (["digits@1", "--prune", "1.5"], "--prune 1.5"),
        (["digits@9"], "model digits: no version 9"),
        (["nosuch@1"], "model nosuch: not registered (registered models: digits)"),
        (["digits@staging"], "no version holds staging"),
        (["digits@nostage"], "stage 'nostage': unknown"),
        (["digits"], "expected MODEL@STAGE or MODEL@VERSION"),
    ],
)
def test_bad_input_is_one_line_exit_2(flow: dict[str, Any], args: list[str], message: str) -> None:
    ctx, run_id = flow["ctx"], flow["run_id"]
    before = export_tags(ctx), exported_paths(ctx, run_id)
    code, out, err = mlops(flow["root"], "export", *args)
    assert (code, out) == (2, "") and err.count("\n") == 1 and message in err, err
    assert (export_tags(ctx), exported_paths(ctx, run_id)) == before


def test_serve_the_int8_export_by_name(flow: dict[str, Any], tmp_path: Path) -> None:
    """`mlops serve --backend onnx --export onnx-int8` serves that file (its answers are
    the int8 file's own, which differ from fp32's) and says so in /metadata; a variant the
    version has no passing export of is refused with one line."""

    root, ctx = flow["root"], flow["ctx"]
    x, _ = _arrays(root, "test")
    rows = np.ascontiguousarray(x[:32])
    int8 = exported_file(ctx, ctx.store.version(MODEL, 1), "onnx", "int8", tmp_path / "f")
    assert int8 is not None
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: rows})[0]

    port = free_port()
    cmd = [sys.executable, "-c", "from mlops.cli import main; main()", "serve", f"{MODEL}@1",
           "--backend", "onnx", "--export", "onnx-int8", "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline, meta = time.monotonic() + 120, None
        while meta is None and time.monotonic() < deadline:
            assert server.poll() is None, server.communicate()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/metadata")
                meta = json.loads(conn.getresponse().read())
            except OSError:
                time.sleep(0.2)
        assert meta is not None
        served = (meta["backend"], meta["source"], meta["export"])
        assert served == ("onnx", "exported", "onnx-int8")
        assert meta["file_sha256"] == records(flow_tags(ctx))["onnx-int8"]["sha256"]
        body = json.dumps({"inputs": rows.tolist()})
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
    finally:
        server.terminate()
        server.communicate(timeout=30)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        answer["probabilities"], shifted / shifted.sum(axis=1, keepdims=True), atol=1e-6
    )
    code, _, err = mlops(root, "serve", f"{MODEL}@1", "--backend", "onnx", "--export",
                         "onnx-pruned50", "--port", "0")  # fmt: skip
    assert code == 1 and "no passing onnx-pruned50 export" in err and "onnx-int8" in err, err
    code, _, err = mlops(root, "serve", f"{MODEL}@1", "--export", "onnx-int8")
    assert code == 2 and "needs --backend onnx" in err, err


def flow_tags(ctx: Context) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(MODEL, "1").tags)

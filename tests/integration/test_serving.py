"""`mlops serve` as a user runs it: real server processes (torch and ONNX Runtime) on a
project with two registered versions in a real MLflow store.

Predictions equal the registry model's own; a dozen kinds of malformed request get a 4xx
with one line and the server stays up; hostile bodies are refused before they are parsed
(or even read to their end) while /health keeps answering; a bearer token guards a server
bound beyond loopback, and one bound there without it warns; /metrics parses with
prometheus_client's parser;
the sink receives the sampled rows; a promotion under four threads of load swaps the
served version without one failed request; SIGTERM stops the server with exit code 0.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops.errors import DataError
from mlops.exposure import free_port
from mlops.serving.model import load_version
from mlops.serving.sink import read_sink
from mlops.training import predict_proba
from registry.context import Context
from registry.loading import load, resolve
from registry.promotion import change_stage
from registry.stages import Ref
from tests.integration.registry_project import (
    _arrays,
    context,
    register_small,
    write_project,
)
from tests.servers import wait_ready

MODEL = "digits"
POLL_S = 0.5
MAX_BATCH = ("--max-batch", "64")


# --- a small HTTP client --------------------------------------------------------------


class Client:
    """One keep-alive connection (TCP_NODELAY, as a load balancer would keep it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.connect()
        assert self.conn.sock is not None
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(
        self, method: str, path: str, body: bytes | None = None, ctype: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:  # fmt: skip
        headers = (headers or {}) | ({} if ctype is None else {"Content-Type": ctype})
        self.conn.request(method, path, body, headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def get(self, path: str) -> Any:
        status, answer = self.call("GET", path)
        assert status == 200, (path, status, answer)
        return answer if path == "/metrics" else json.loads(answer)

    def predict(self, doc: Any) -> Any:
        status, answer = self.call("POST", "/predict", json.dumps(doc).encode(), JSON)
        assert status == 200, answer
        return json.loads(answer)

    def close(self) -> None:
        self.conn.close()


# --- the project and its servers ------------------------------------------------------


def _env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))}
    return clean | {"PYTHONUNBUFFERED": "1"}


def start_server(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    cmd = [sys.executable, "-c", "from mlops.cli import main; main()", "serve",
           f"{MODEL}@production", "--port", str(port), *args]  # fmt: skip
    process = subprocess.Popen(
        cmd, cwd=root, env=_env() | (env or {}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    return process, port


def stop(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """v1 in production served by torch (sink at 100%) and by ONNX Runtime, both
    following the stage."""

    root = tmp_path_factory.mktemp("serving")
    write_project(root)
    ctx = context(root)
    versions = [register_small(ctx, MODEL, seed=seed) for seed in (0, 1)]
    change_stage(ctx, MODEL, Ref(version=1), "production", reason="first")
    sink = root / "sink.db"
    torch_server, torch_port = start_server(
        root, "--poll", str(POLL_S), "--log-inputs", "1.0", "--sink", str(sink), *MAX_BATCH
    )
    onnx_server, onnx_port = start_server(
        root, "--backend", "onnx", "--poll", str(POLL_S), *MAX_BATCH
    )
    try:
        wait_ready(torch_server, torch_port)
        wait_ready(onnx_server, onnx_port)
        yield {
            "root": root, "ctx": ctx, "versions": versions, "sink": sink,
            "torch": (torch_server, torch_port), "onnx": (onnx_server, onnx_port),
        }  # fmt: skip
    finally:
        for process in (torch_server, onnx_server):
            stop(process)


def registry_proba(ctx: Context, version: int, x: np.ndarray, tmp: Path) -> np.ndarray:
    """Probabilities of the version rebuilt by the registry itself (verified load)."""

    loaded = load(ctx, resolve(ctx, MODEL, Ref(version=version)), tmp)
    return np.asarray(predict_proba(loaded.module, x))


def test_predictions_equal_the_registry_models(served: dict[str, Any], tmp_path: Path) -> None:
    x, _ = _arrays(served["root"], "test")
    rows = x[:40]
    expected = registry_proba(served["ctx"], 1, rows, tmp_path)
    client = Client(served["torch"][1])
    answer = client.predict({"inputs": rows.tolist()})
    assert (answer["model"], answer["version"]) == (MODEL, 1)
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)
    assert answer["predictions"] == expected.argmax(axis=1).tolist()
    features = client.get("/metadata")["features"]
    assert features[:2] == ["px_0_0", "px_0_1"]
    records = [dict(zip(features, map(float, row), strict=True)) for row in rows[:5]]
    by_name = client.predict({"records": records})
    np.testing.assert_allclose(by_name["probabilities"], expected[:5], atol=1e-5)


def test_metadata_names_the_verified_version(served: dict[str, Any]) -> None:
    meta = Client(served["torch"][1]).get("/metadata")
    first = served["versions"][0]
    assert (meta["model"], meta["version"], meta["stage"]) == (MODEL, 1, "production")
    assert meta["sha256"] == first.sha256
    assert meta["backend"] == "torch"
    # the version's own signature: its 64 feature columns by name, in its order
    inputs = meta["signature"]["inputs"]
    assert [c["name"] for c in inputs] == meta["features"] and len(inputs) == 64
    assert meta["classes"] == list(range(10))


def test_onnx_backend_gives_the_same_predictions(served: dict[str, Any]) -> None:
    x, _ = _arrays(served["root"], "test")
    rows = x[:64].tolist()
    by_torch = Client(served["torch"][1]).predict({"inputs": rows})
    onnx = Client(served["onnx"][1])
    by_onnx = onnx.predict({"inputs": rows})
    np.testing.assert_allclose(by_onnx["probabilities"], by_torch["probabilities"], atol=1e-4)
    assert by_onnx["predictions"] == by_torch["predictions"]
    meta = onnx.get("/metadata")
    assert meta["backend"] == "onnx" and len(meta["file_sha256"]) == 64


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_weights_that_differ_from_the_record_are_never_served(
    served: dict[str, Any], backend: str, tmp_path: Path
) -> None:

    ctx = served["ctx"]
    tampered = replace(resolve(ctx, MODEL, Ref(version=1)), sha256="0" * 64)
    with pytest.raises(DataError, match="differs from the registered 000000000000"):
        load_version(ctx, tampered, backend, tmp_path, max_batch=8)


ROW = [0.0] * 64
JSON = "application/json"


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


MALFORMED: dict[str, tuple[bytes, str | None, int]] = {
    "invalid JSON": (b'{"inputs": [[0.0, 1.0', JSON, 400),
    "not an object": (b"[[0.0]]", JSON, 400),
    "no inputs": (b"{}", JSON, 400),
    "unknown key": (b'{"input": [[0.0]]}', JSON, 400),
    "inputs and records": (body({"inputs": [ROW], "records": [{}]}), JSON, 400),
    "a NaN": (b'{"inputs": [[NaN]]}', JSON, 400),
    "wrong content type": (body({"inputs": [ROW]}), "text/plain", 415),
    "no content type": (body({"inputs": [ROW]}), None, 415),
    "batch over the limit": (body({"inputs": [ROW] * 65}), JSON, 413),
    "empty batch": (b'{"inputs": []}', JSON, 422),
    "row too short": (body({"inputs": [ROW[:63]]}), JSON, 422),
    "ragged rows": (body({"inputs": [ROW, ROW[:3]]}), JSON, 422),
    "a string": (body({"inputs": [["1.0", *ROW[1:]]]}), JSON, 422),
    "a null": (body({"inputs": [[None, *ROW[1:]]]}), JSON, 422),
    "a boolean": (body({"inputs": [[True, *ROW[1:]]]}), JSON, 422),
    "beyond float32": (body({"inputs": [[1e39, *ROW[1:]]]}), JSON, 422),
    "not a list of rows": (body({"inputs": ROW}), JSON, 422),
    "nested too deep": (body({"inputs": [[[ROW]]]}), JSON, 422),
    "missing feature": (b'{"records": [{"px_0_0": 1.0}]}', JSON, 422),
    "unknown feature": (body({"records": [{"nope": 1.0}]}), JSON, 422),
}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_malformed_requests_get_4xx_and_the_server_stays_up(
    served: dict[str, Any], backend: str
) -> None:
    client = Client(served[backend][1])
    for case, (data, ctype, expected) in MALFORMED.items():
        status, answer = client.call("POST", "/predict", data, ctype)
        assert status == expected, (case, status, answer)
        error = json.loads(answer)["error"]
        assert error and "\n" not in error, (case, error)
    assert client.call("GET", "/predict")[0] == 405
    assert client.call("GET", "/nowhere")[0] == 404
    assert client.get("/health") == {"status": "ok"}
    assert client.predict({"inputs": [ROW]})["version"] == 1


# Within the byte limit of 64 rows of 64 values (about 1.2 MB), so only its shape gives it
# away: 300,000 empty rows (before the fix: parsed whole, on the event loop, then refused).
HOSTILE = b'{"inputs": [' + b",".join([b"[]"] * 300_000) + b"]}"


def test_a_hostile_body_is_refused_before_it_is_all_sent(served: dict[str, Any]) -> None:
    """The 413 comes while the client still holds most of the body back, so nothing of it
    was parsed; the rest is drained and the connection serves the next request."""
    with socket.create_connection(("127.0.0.1", served["torch"][1]), timeout=60) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n" % len(HOSTILE))  # fmt: skip
        sock.sendall(HOSTILE[: 128 * 1024])
        first = http.client.HTTPResponse(sock)
        first.begin()
        refused = json.loads(first.read())
        assert first.status == 413 and "refused before parsing" in refused["error"], refused
        sock.sendall(HOSTILE[128 * 1024 :])
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        second = http.client.HTTPResponse(sock)
        second.begin()
        assert (second.status, json.loads(second.read())) == (200, {"status": "ok"})


def test_health_answers_while_hostile_bodies_are_refused(served: dict[str, Any]) -> None:
    """Four clients send hostile bodies without pause; /health answers every time in the
    meantime, and every hostile body is refused by its shape, unparsed."""
    port = served["torch"][1]
    stop_flood = threading.Event()
    refusals: list[tuple[int, str]] = []

    def flood() -> None:
        client = Client(port)
        while not stop_flood.is_set():
            status, answer = client.call("POST", "/predict", HOSTILE, JSON)
            refusals.append((status, json.loads(answer)["error"]))
        client.close()

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while len(refusals) < 4:  # the flood is under way
            assert time.monotonic() < deadline, "no hostile body was answered"
            time.sleep(0.01)
        before = len(refusals)
        health = Client(port)
        for _ in range(20):
            assert health.get("/health") == {"status": "ok"}
        during = len(refusals) - before
        health.close()
    finally:
        stop_flood.set()
        for t in threads:
            t.join(60)
    assert during > 0, "the flood stopped while /health was asked"
    assert {status for status, _ in refusals} == {413}
    assert all("refused before parsing" in error for _, error in refusals), refusals[0]
    assert Client(port).predict({"inputs": [ROW]})["version"] >= 1


def test_a_token_guards_a_server_bound_beyond_loopback(served: dict[str, Any]) -> None:
    """`--host 0.0.0.0` without a token warns in one line; with `--auth-token-env` it
    does not, and /predict, /metadata and /metrics need the bearer token."""
    root, token = served["root"], secrets.token_urlsafe(32)
    exposed, exposed_port = start_server(root, "--host", "0.0.0.0", "--poll", "0")
    guarded, port = start_server(root, "--host", "0.0.0.0", "--poll", "0",
                                 "--auth-token-env", "SERVE_TOKEN",
                                 env={"SERVE_TOKEN": token})  # fmt: skip
    try:
        wait_ready(exposed, exposed_port)
        wait_ready(guarded, port)
        assert Client(exposed_port).predict({"inputs": [ROW]})["model"] == MODEL
        client = Client(port)
        bearer = {"Authorization": f"Bearer {token}"}
        data = body({"inputs": [ROW]})
        for headers in ({}, {"Authorization": f"Bearer {token[:-1]}"}, {"Authorization": token}):
            for method, path, sent in (("POST", "/predict", data), ("GET", "/metadata", None),
                                       ("GET", "/metrics", None)):  # fmt: skip
                status, answer = client.call(method, path, sent, JSON, headers)
                assert status == 401, (headers, path, status)
                assert "bearer token" in json.loads(answer)["error"]
            assert client.call("GET", "/health", headers=headers) == (200, b'{"status":"ok"}')
            assert client.call("GET", "/ready", headers=headers) == (200, b'{"ready":true}')
        status, answer = client.call("POST", "/predict", data, JSON, bearer)
        assert status == 200 and json.loads(answer)["model"] == MODEL
        status, answer = client.call("GET", "/metadata", headers=bearer)
        assert status == 200 and json.loads(answer)["model"] == MODEL
        status, answer = client.call("GET", "/ready", headers=bearer)
        assert status == 200 and json.loads(answer).keys() == {"ready", "model", "version"}
    finally:
        results = {"exposed": stop(exposed), "guarded": stop(guarded)}
    for name, (code, out, err) in results.items():
        assert code == 0, (name, err)
        assert token not in out + err
    warnings = [line for line in results["exposed"][2].splitlines() if line.startswith("warning")]
    assert len(warnings) == 1, results["exposed"][2]
    assert f"on 0.0.0.0:{exposed_port} (every interface) without authentication" in warnings[0]
    assert "--auth-token-env" in warnings[0]
    assert not [line for line in results["guarded"][2].splitlines() if line.startswith("warning")]
    assert "bearer token from SERVE_TOKEN" in results["guarded"][1]


def test_metrics_parse_as_prometheus_text(served: dict[str, Any]) -> None:
    client = Client(served["onnx"][1])
    client.predict({"inputs": [ROW] * 3})
    client.call("POST", "/predict", b"{}", "application/json")
    text = client.get("/metrics").decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["endpoint"], s.labels["status"]): s.value
                for s in families["mlops_requests"].samples}  # fmt: skip
    assert requests[("/predict", "200")] >= 1 and requests[("/predict", "400")] >= 1
    latency = families["mlops_request_latency_seconds"]
    assert latency.type == "histogram"
    assert any(s.name.endswith("_bucket") and s.labels.get("le") == "+Inf"
               for s in latency.samples)  # fmt: skip
    batch = {s.labels.get("le"): s.value for s in families["mlops_batch_size"].samples
             if s.name.endswith("_bucket")}  # fmt: skip
    assert batch["2.0"] < batch["4.0"]  # the batch of 3 fell between them
    predicted = families["mlops_predictions"].samples
    assert {s.labels["version"] for s in predicted} == {"1"}
    assert sum(s.value for s in predicted) >= 3
    (info,) = families["mlops_model_info"].samples
    assert info.labels["version"] == "1" and info.labels["backend"] == "onnx"


def test_sink_receives_the_sampled_rows(served: dict[str, Any]) -> None:
    x, _ = _arrays(served["root"], "test")
    rows = x[100:107]
    answer = Client(served["torch"][1]).predict({"inputs": rows.tolist()})
    columns = [f"px_{r}_{c}" for r in range(8) for c in range(8)]
    deadline = time.monotonic() + 10
    while True:  # the sink writes in the background
        tail = read_sink(served["sink"], MODEL).tail(len(rows))
        if len(tail) == len(rows) and np.allclose(tail[columns], rows):
            break
        assert time.monotonic() < deadline, tail
        time.sleep(0.1)
    assert tail["prediction"].tolist() == answer["predictions"]
    assert set(tail["version"]) == {1} and set(tail["model"]) == {MODEL}


def test_promotion_under_load_swaps_without_a_failed_request(served: dict[str, Any]) -> None:
    """Four threads on the torch server and two on the ONNX one (which converts the new
    version in a child process) while v2 is promoted to production."""

    ports = {"torch": served["torch"][1], "onnx": served["onnx"][1]}
    stop_load = threading.Event()
    seen: dict[str, list[int]] = {"torch": [], "onnx": []}
    failures: list[str] = []

    def load(backend: str) -> None:
        client = Client(ports[backend])
        data = body({"inputs": [ROW, ROW]})
        while not stop_load.is_set():
            try:
                status, answer = client.call("POST", "/predict", data, JSON)
            except OSError as exc:
                failures.append(f"{backend}: {exc!r}")
                client = Client(ports[backend])
                continue
            if status != 200:
                failures.append(f"{backend}: {status} {answer[:200]!r}")
            else:
                seen[backend].append(json.loads(answer)["version"])
            time.sleep(0.002)  # steady load that leaves CPU for the swap's conversion
        client.close()

    threads = [threading.Thread(target=load, args=(b,)) for b in ["torch"] * 4 + ["onnx"] * 2]
    for t in threads:
        t.start()
    metas: dict[str, Any] = {}
    try:
        time.sleep(0.5)
        change_stage(served["ctx"], MODEL, Ref(version=2), "production", reason="swap")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            metas = {b: Client(port).get("/metadata") for b, port in ports.items()}
            if all(m["version"] == 2 for m in metas.values()):
                break
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop_load.set()
        for t in threads:
            t.join(30)
    assert failures == []
    for backend, meta in metas.items():
        assert meta["version"] == 2 and meta["sha256"] == served["versions"][1].sha256
        assert [(s["from"], s["to"]) for s in meta["swaps"]] == [(1, 2)]
        versions = seen[backend]
        assert len(versions) >= 20 and versions.count(1) > 0 and versions[-1] == 2, backend
        metrics = Client(ports[backend]).get("/metrics").decode()
        assert 'mlops_model_swaps_total{model="digits"} 1.0' in metrics
        assert 'mlops_model_version{model="digits"} 2.0' in metrics


def test_sigterm_stops_the_server_cleanly(served: dict[str, Any]) -> None:
    process, _port = served["onnx"]
    code, out, err = stop(process)
    assert code == 0, err
    assert "Traceback" not in err
    assert "Server stopped" in out


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["nope"], {}, "expected MODEL@STAGE"),
        (["digits@production", "--backend", "tf"], {}, "--backend 'tf'"),
        (["digits@production", "--log-inputs", "2"], {}, "--log-inputs"),
        (["digits@nowhere"], {}, "nowhere"),
        (
            ["digits@production", "--auth-token-env", "NO_SUCH_TOKEN"],
            {},
            "--auth-token-env NO_SUCH_TOKEN: NO_SUCH_TOKEN is not set",
        ),
        (
            ["digits@production", "--auth-token-env", "SERVE_TOKEN"],
            {"SERVE_TOKEN": "short"},
            "at least 32 characters",
        ),
        (
            ["digits@production", "--auth-token-env", "SERVE_TOKEN"],
            {"SERVE_TOKEN": "a b" * 16},
            "only letters, digits",
        ),
    ],
)
def test_bad_input_is_one_line(
    served: dict[str, Any], args: list[str], env: dict[str, str], needle: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from mlops.cli import main; main()", "serve", *args],
        cwd=served["root"], env=_env() | env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()  # progress lines ("Loading …"), then the error
    assert lines[-1].startswith("error: ") and needle in lines[-1], lines
    assert all(line.startswith("Loading ") for line in lines[:-1]), lines
    assert "Traceback" not in done.stdout + done.stderr

"""How fast does `mlops serve` answer, next to `mlflow models serve` on the same version?

Goal (issue 7, serving): on the digits MLP, at batch 1 with one keep-alive client on
loopback, the ONNX backend answers at least 2x the requests/s of `mlflow models serve`,
with a p99 no higher and a server peak RSS no larger.

One run, one registered version, four servers: `mlops serve` with the torch backend, with
the onnx backend (converting the model at start), `mlflow models serve -m
models:/NAME/VERSION --env-manager local --workers 1` (uvicorn, as MLflow runs it), and,
once `mlops export` has attached a verified ONNX file to the version, `mlops serve
--backend onnx` again (`mlops_onnx_exported`: it loads that file, nothing is converted).
They start one after the other and stay up (idle servers take no CPU). Each gets the
same bounded load from this process on its own keep-alive connection (TCP_NODELAY):
WARMUP requests, then REQUESTS timed ones at batch 1 and at batch 32, in ROUNDS rounds
that alternate between the servers, so a busy moment of the machine falls on all of
them alike (requests/s: requests over the summed latencies). Peak RSS is sampled over
each server's process tree (psutil, every 20 ms) from its start to its stop, so the
converting ONNX server's peak includes its converter child; `rss_after_load_mb` is the
tree after the load. The servers' answers must agree (same classes).

Writes benchmarks/results/serving_speed.json.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from benchmarks._timing import env, write_result
from mlops.settings import Settings
from registry.promotion import change_stage
from registry.stages import Ref
from tests.integration.registry_project import _arrays, context, register_small, write_project

ROOT = Path(__file__).resolve().parents[1]
NAME = "digits"
WARMUP = 300
REQUESTS = 3000
ROUNDS = 5
BATCHES = (1, 32)


def _project(root: Path) -> tuple[int, Any]:
    """A project with one registered digits MLP in production; its test rows."""

    write_project(root)
    ctx = context(root)
    version = int(register_small(ctx, NAME, seed=0).version)
    change_stage(ctx, NAME, Ref(version=version), "production", reason="benchmark")
    x, _ = _arrays(root, "test")
    return version, x


class Peak(threading.Thread):
    """The largest RSS of a process and its children, sampled until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        top = psutil.Process(self.pid)
        while not self.done.wait(0.02):
            try:
                tree = [top, *top.children(recursive=True)]
                self.peak = max(self.peak, sum(_rss(p) for p in tree))
            except psutil.NoSuchProcess:
                return


def _tree_rss(pid: int) -> int:
    top = psutil.Process(pid)
    return sum(_rss(p) for p in [top, *top.children(recursive=True)])


def _rss(process: Any) -> int:
    try:
        return int(process.memory_info().rss)
    except Exception:  # a child that just exited
        return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(port: int, path: str, process: subprocess.Popen[bytes], timeout: float = 180) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


class Server:
    """One server process under test, its keep-alive connection and its memory."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, extra: dict[str, str]) -> None:
        self.name, self.port = name, _free_port()
        self.mlflow = name == "mlflow"
        self.path = "/invocations" if self.mlflow else "/predict"
        self.cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.process = subprocess.Popen(
            self.cmd, cwd=cwd, env=env() | extra, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.peak = Peak(self.process.pid)
        self.peak.start()
        self.ready_s = _wait(self.port, "/ping" if self.mlflow else "/ready", self.process)
        self.conn = self._connect()
        self.latencies: dict[int, list[float]] = {b: [] for b in BATCHES}
        self.answers: dict[int, Any] = {}

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def call(self, body: bytes) -> bytes:
        try:
            self.conn.request("POST", self.path, body, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self.conn.close()  # closed by the server while idle: once more on a new one
            self.conn = self._connect()
            self.conn.request("POST", self.path, body, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{self.name}: {response.status} {data[:200]!r}")
        return data

    def timed(self, batch: int, body: bytes, n: int) -> None:
        times = self.latencies[batch]
        # A keep-alive connection left idle while the other servers were timed may have
        # been closed by this one (uvicorn: 5 s): a fresh one, warmed, before the timing.
        self.conn.close()
        self.conn = self._connect()
        self.call(body)
        for _ in range(n):
            start = time.perf_counter()
            self.call(body)
            times.append(time.perf_counter() - start)

    def classes(self, batch: int) -> list[int]:
        # Both answer labels: the version's pyfunc model does what `mlops serve` does.
        return [int(c) for c in self.answers[batch]["predictions"]]

    def stop(self) -> dict[str, Any]:
        rss_now = _tree_rss(self.process.pid)
        self.conn.close()
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.peak.done.set()
        self.peak.join()
        found: dict[str, Any] = {
            "command": " ".join([Path(self.cmd[0]).name, *self.cmd[1:]]),
            "ready_s": round(self.ready_s, 2),
        }
        for batch, times in self.latencies.items():
            if not times:  # the load never reached it (an earlier failure)
                continue
            ordered = sorted(times)
            found[f"batch_{batch}"] = {
                "requests_per_s": round(len(times) / sum(times), 1),
                "p50_ms": round(statistics.median(ordered) * 1000, 3),
                "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 3),
            }
        found["rss_after_load_mb"] = round(rss_now / 2**20, 1)
        found["peak_rss_mb"] = round(self.peak.peak / 2**20, 1)
        return found


def _body(server: Server, rows: Any, names: list[str]) -> bytes:
    """The same rows as each server reads them: MLflow's scoring server takes the version's
    named columns (its signature), `mlops serve` rows in the version's order."""
    if server.mlflow:
        split = {"columns": names, "data": rows.tolist()}
        return json.dumps({"dataframe_split": split}).encode()
    return json.dumps({"inputs": rows.tolist()}).encode()


def _drive(servers: list[Server], x: Any, names: list[str]) -> None:
    """The same load on every server, in rounds that alternate between them, so that
    whatever else the machine does falls on all of them alike."""
    for batch in BATCHES:
        bodies = {server.name: _body(server, x[:batch], names) for server in servers}
        for server in servers:
            body = bodies[server.name]
            server.answers[batch] = json.loads(server.call(body))
            for _ in range(WARMUP):
                server.call(body)
        for _ in range(ROUNDS):
            for server in servers:
                server.timed(batch, bodies[server.name], REQUESTS // ROUNDS)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        root = Path(tmp)
        version, x = _project(root)
        names = json.loads((root / "data" / "raw" / "schema.json").read_text())["features"]
        mlops = str(Path(sys.executable).parent / "mlops")
        mlflow = str(Path(sys.executable).parent / "mlflow")
        tracking = Settings.from_env(env={}, cwd=root).tracking_uri
        serve = [mlops, "serve", f"{NAME}@production", "--port", "{port}", "--poll", "0"]
        commands = {
            "mlops_torch": serve,
            "mlops_onnx": [*serve, "--backend", "onnx"],
            "mlflow": [mlflow, "models", "serve", "-m", f"models:/{NAME}/{version}",
                       "--env-manager", "local", "--host", "127.0.0.1", "--port", "{port}",
                       "--workers", "1"],
        }  # fmt: skip
        extra = {"MLFLOW_TRACKING_URI": tracking, "MLFLOW_REGISTRY_URI": tracking}
        servers: list[Server] = []
        try:
            for name, cmd in commands.items():  # one at a time: start-up is measured too
                servers.append(Server(name, cmd, root, extra))
            # The same version once `mlops export` attached a verified ONNX file to it:
            # the server loads that file instead of converting at start.
            subprocess.run([mlops, "export", f"{NAME}@production", "--format", "onnx"],
                           cwd=root, env=env(), check=True, capture_output=True)  # fmt: skip
            servers.append(Server("mlops_onnx_exported", commands["mlops_onnx"], root, {}))
            _drive(servers, x, names)
        finally:
            results = {server.name: server.stop() for server in servers}
        for name, found in results.items():
            print(name, json.dumps(found), flush=True)
    for batch in BATCHES:
        classes = {json.dumps(server.classes(batch)) for server in servers}
        assert len(classes) == 1, f"the servers disagree at batch {batch}"
    base = results["mlflow"]
    ratios = {}
    for server in ("mlops_torch", "mlops_onnx", "mlops_onnx_exported"):
        mine = results[server]
        ratios[server] = {
            "throughput_over_mlflow_batch_1": round(
                mine["batch_1"]["requests_per_s"] / base["batch_1"]["requests_per_s"], 2
            ),
            "p99_over_mlflow_batch_1": round(
                mine["batch_1"]["p99_ms"] / base["batch_1"]["p99_ms"], 2
            ),
            "throughput_over_mlflow_batch_32": round(
                mine["batch_32"]["requests_per_s"] / base["batch_32"]["requests_per_s"], 2
            ),
            "peak_rss_over_mlflow": round(mine["peak_rss_mb"] / base["peak_rss_mb"], 2),
        }
    goals = {}
    for server in ("mlops_onnx", "mlops_onnx_exported"):
        onnx = ratios[server]
        goals[server] = {
            "throughput_at_least_2x": onnx["throughput_over_mlflow_batch_1"] >= 2.0,
            "p99_at_most_mlflow": onnx["p99_over_mlflow_batch_1"] <= 1.0,
            "peak_rss_at_most_mlflow": onnx["peak_rss_over_mlflow"] <= 1.0,
        }
    path = write_result(
        "serving_speed",
        {
            "model": f"{NAME} MLP (64 features, 32 hidden, 10 classes)",
            "load": {
                "warmup": WARMUP,
                "requests": REQUESTS,
                "rounds": ROUNDS,
                "batches": list(BATCHES),
                "client": "one keep-alive http.client connection per server, TCP_NODELAY",
            },
            "servers": results,
            "ratios": ratios,
            "goals": goals,
        },
    )
    print(json.dumps({"ratios": ratios, "goals": goals}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

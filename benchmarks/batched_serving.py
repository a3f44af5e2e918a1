"""Batched serving and a shadow challenger, measured against the same server without them.

One project goes through `dvc repro` twice (the digits CNN, one epoch, `train.seed` 0 then
1), so the registry holds two versions of a model whose forward pass is not trivial; v2 is
promoted to staging.

- Batching: `mlops serve bench_cnn@1` with and without `--batch-max 32` under CLIENTS
  concurrent clients (threads of this process, one keep-alive connection each, batch-1
  requests of test rows) for SECONDS after a warm-up; requests/s and p99 latency.
  Goal: batched >= 2x the requests/s, p99 no worse.
- Shadow: the same server with and without `--shadow bench_cnn@staging --feedback`, one
  client sending batch-1 requests one after another (a server that is not saturated, where
  the shadow's work could show in the primary's latency); p50 and p99. Goal: within 10%.

Configurations alternate within each of ROUNDS rounds; medians over rounds. Writes
results/batched_serving.json (`python benchmarks/batched_serving.py [ROUNDS]`).
"""

from __future__ import annotations

import http.client
import json
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

import yaml

from benchmarks._timing import env, write_result
from tests.e2e.project import copy_repo

ROUNDS, CLIENTS, SECONDS, WARMUP_S = 3, 32, 8.0, 2.0
SEQUENTIAL = 1500  # timed requests of the one-client shadow run (after 200 untimed)
PARAMS = {
    "pipeline": {"name": "bench_cnn"},
    "train": {"epochs": 1, "early_stopping": {"patience": 0}, "model": {"family": "cnn"}},
    "registry": {"gates": {"production": {"thresholds": {"accuracy": 0.0}}}},
}
HEADERS = {"Content-Type": "application/json"}


def _project(base: Path) -> Path:
    root = copy_repo(base / "cnn", PARAMS)
    for seed in (0, 1):
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["train"]["seed"] = seed
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run(["dvc", "repro", "-q"], cwd=root, env=env(), check=True)
    subprocess.run([sys.executable, "-m", "mlops", "registry", "promote", "bench_cnn", "2",
                    "--to", "staging"], cwd=root, env=env(), check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return root


def _bodies(root: Path) -> list[bytes]:
    import pandas as pd

    test = pd.read_parquet(root / "data" / "split" / "test.parquet")
    rows = test.drop(columns=["target"]).to_numpy().tolist()
    return [json.dumps({"inputs": [row]}).encode() for row in rows]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connect(port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _post(conn: http.client.HTTPConnection, body: bytes) -> None:
    conn.request("POST", "/predict", body, HEADERS)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")


class Server:
    """`mlops serve bench_cnn@1 ARGS` on a free port, until the block ends."""

    def __init__(self, root: Path, *args: str) -> None:
        self.port = _port()
        cmd = [sys.executable, "-m", "mlops", "serve", "bench_cnn@1", "--port", str(self.port),
               "--poll", "0", *args]  # fmt: skip
        self.process = subprocess.Popen(cmd, cwd=root, env=env(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}")
            try:
                conn = _connect(self.port)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server not ready in 180 s")

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _load(port: int, bodies: list[bytes]) -> dict[str, float]:
    """CLIENTS threads sending without pause: requests/s and p99 over SECONDS."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    start = time.perf_counter() + WARMUP_S
    stop = start + SECONDS

    def client(k: int) -> None:
        conn, i = _connect(port), k
        while (now := time.perf_counter()) < stop:
            _post(conn, bodies[i % len(bodies)])
            i += CLIENTS
            if now >= start:
                latencies[k].append(time.perf_counter() - now)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found = sorted(x for per in latencies for x in per)
    return {"requests_per_s": len(found) / SECONDS, "p99_ms": 1000 * found[int(0.99 * len(found))]}


def _sequential(port: int, bodies: list[bytes]) -> dict[str, float]:
    """One client, one request after another: p50 and p99."""
    conn = _connect(port)
    seconds = []
    for i in range(200 + SEQUENTIAL):
        begin = time.perf_counter()
        _post(conn, bodies[i % len(bodies)])
        if i >= 200:
            seconds.append(time.perf_counter() - begin)
    seconds.sort()
    return {"p50_ms": 1000 * seconds[len(seconds) // 2],
            "p99_ms": 1000 * seconds[int(0.99 * len(seconds))]}  # fmt: skip


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def main() -> None:
    """Both comparisons, configurations alternating per round; medians and ratios."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    batching: dict[str, list[dict[str, float]]] = {"unbatched": [], "batched": []}
    shadow: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = _project(Path(tmp))
        bodies = _bodies(root)
        args = {
            "unbatched": (),
            "batched": ("--batch-max", "32", "--batch-wait-ms", "2"),
            "off": ("--feedback", "--sink", "off.db"),
            "on": ("--feedback", "--sink", "on.db", "--shadow", "bench_cnn@staging"),
        }
        for i in range(rounds):
            for kind in list(batching)[i % 2 :] + list(batching)[: i % 2]:
                with Server(root, *args[kind]) as server:
                    batching[kind].append(_load(server.port, bodies))
                print("batching", kind, batching[kind][-1], flush=True)
            for kind in list(shadow)[i % 2 :] + list(shadow)[: i % 2]:
                with Server(root, *args[kind]) as server:
                    shadow[kind].append(_sequential(server.port, bodies))
                print("shadow", kind, shadow[kind][-1], flush=True)
    b = {k: _median(v) for k, v in batching.items()}
    s = {k: _median(v) for k, v in shadow.items()}
    result: dict[str, Any] = {
        "rounds": rounds, "clients": CLIENTS, "seconds": SECONDS, "model": "digits CNN",
        "batching": b | {
            "ratio": round(b["batched"]["requests_per_s"] / b["unbatched"]["requests_per_s"], 3),
            "p99_ratio": round(b["batched"]["p99_ms"] / b["unbatched"]["p99_ms"], 3),
        },
        "shadow": s | {
            "p50_ratio": round(s["on"]["p50_ms"] / s["off"]["p50_ms"], 3),
            "p99_ratio": round(s["on"]["p99_ms"] / s["off"]["p99_ms"], 3),
        },
    }  # fmt: skip
    print(result)
    print(f"-> {write_result('batched_serving', result)}")


if __name__ == "__main__":
    main()

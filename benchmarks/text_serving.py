"""Does tokenization dominate serving? `mlops serve` on a text model against a numeric
model of the same network, requests/s at batch 1.

Two projects go through `dvc repro` (one epoch each; speed, not accuracy, is measured):
the digits set read as 64 numeric features (`data.input_shape: [64]`: one token per
feature) and the installed packages' description paragraphs (tests/corpus.py) with
`data.tokenizer.max_length: 64`, both with the default transformer: the same encoder
over at most 64 tokens. The text model adds its tokenizer and token embeddings in front,
and reads as many tokens as the text has (the server cuts a batch after its longest
row's last token; a numeric row always has its 64). Each model is served on the torch
and on the ONNX backend, one server at a time, and gets WARMUP requests, then REQUESTS
timed ones at batch 1 on one keep-alive connection, in ROUNDS rounds that alternate the
models: the digits model with `{"inputs": [[64 numbers]]}`, the text model with
`{"records": [{"text": "<a paragraph of the test split>"}]}` (rows in turn).
Requests/s = requests over the summed client-side latencies. Target: text >= 0.8x numeric
on each backend. Writes results/text_serving.json
(`python benchmarks/text_serving.py [ROUNDS]`).
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import env, write_result
from tests.corpus import package_texts
from tests.e2e.project import copy_repo

WARMUP, REQUESTS, ROUNDS = 200, 1000, 3
BACKENDS = ("torch", "onnx")
TRAIN = {"epochs": 1, "early_stopping": {"patience": 0}, "model": {"family": "transformer"}}
OPEN = {"registry": {"gates": {"production": {"thresholds": {"accuracy": 0.0}}}}}
PROJECTS = {
    # 64 features, one token each (data.input_shape [64]): 64 tokens, as the text model's
    "numeric": {"pipeline": {"name": "bench_digits"}, "data": {"input_shape": [64]},
                "train": TRAIN, **OPEN},
    "text": {
        "pipeline": {"name": "bench_text"},
        "data": {"source": "data/external/packages.csv", "target": "topic", "text": "text",
                 "columns": {"package": "drop"}, "tokenizer": {"max_length": 64}},
        "train": TRAIN,
        **OPEN,
    },
}  # fmt: skip


def _repro(base: Path, kind: str) -> Path:
    root = copy_repo(base / kind, PROJECTS[kind])
    if kind == "text":
        package_texts().to_csv(root / "data" / "external" / "packages.csv", index=False)
    subprocess.run(["dvc", "repro", "-q"], cwd=root, env=env(), check=True)
    return root


def _bodies(root: Path, kind: str) -> list[bytes]:
    import pandas as pd

    test = pd.read_parquet(root / "data" / "split" / "test.parquet")
    if kind == "text":
        return [json.dumps({"records": [{"text": t}]}).encode() for t in test["text"]]
    rows = test.drop(columns=["target"]).to_numpy().tolist()
    return [json.dumps({"inputs": [row]}).encode() for row in rows]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connect(port: int, process: subprocess.Popen[bytes]) -> http.client.HTTPConnection:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/ready")
            if conn.getresponse().read() and True:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
                return conn
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server not ready in 180 s")


def _serve(root: Path, name: str, backend: str, bodies: list[bytes]) -> list[float]:
    """Start the server, send the requests, stop it: each timed request's seconds."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlops", "serve", f"{name}@1", "--port", str(port),
           "--backend", backend, "--poll", "0"]  # fmt: skip
    process = subprocess.Popen(cmd, cwd=root, env=env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        conn = _connect(port, process)
        headers = {"Content-Type": "application/json"}
        seconds = []
        for i in range(WARMUP + REQUESTS):
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            conn.request("POST", "/predict", body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{name}: HTTP {response.status}")
            if i >= WARMUP:
                seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    """Both models on both backends, rounds alternating; median requests/s and ratios."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    names = {"numeric": "bench_digits", "text": "bench_text"}
    found: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {kind: _repro(Path(tmp), kind) for kind in PROJECTS}
        bodies = {kind: _bodies(roots[kind], kind) for kind in PROJECTS}
        for backend in BACKENDS:
            rates: dict[str, list[float]] = {kind: [] for kind in PROJECTS}
            for i in range(rounds):
                order = list(PROJECTS)[i % 2 :] + list(PROJECTS)[: i % 2]
                for kind in order:
                    seconds = _serve(roots[kind], names[kind], backend, bodies[kind])
                    rates[kind].append(len(seconds) / sum(seconds))
                    print(backend, kind, round(rates[kind][-1], 1), flush=True)
            found[backend] = rates
    result: dict[str, Any] = {"rounds": rounds, "requests": REQUESTS, "backends": {}}
    for backend, rates in found.items():
        numeric, text = (statistics.median(rates[k]) for k in ("numeric", "text"))
        result["backends"][backend] = {
            "numeric_requests_per_s": round(numeric, 1),
            "text_requests_per_s": round(text, 1),
            "ratio": round(text / numeric, 3),
        }
    print(result)
    print(f"-> {write_result('text_serving', result)}")


if __name__ == "__main__":
    main()

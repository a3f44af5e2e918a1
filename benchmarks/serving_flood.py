"""Can one client stall `mlops serve`? `/health` latency while hostile bodies flood it.

Goal (issue 17, item 12): while FLOODERS clients send hostile bodies back to back,
`/health` answers within 100 ms at p99, against the same server when nobody floods it.
(Before the fix a 3 MB body of a million empty rows took 1.3 s of parsing on the event
loop before its 413, and 16 such requests made `/health` wait 28.8 s.)

One registered digits MLP in production, served by `mlops serve` (torch backend, the
default `--max-batch 1024`). A prober asks `/health` every PROBE_GAP_S on its own
keep-alive connection: PROBES times with nobody else, then PROBES times while FLOODERS
separate processes (so that their sending never holds the prober's interpreter) each send
one kind of body without pause on their own keep-alive connection, the kinds in turn:

- `empty_rows`: a million empty rows, 3 MB: within the byte limit, refused by its shape;
- `strings`: 1024 rows of 64 long strings, the largest body within every raw bound:
  parsed, then refused (422): the most parsing one request can cost;
- `full_batch`: the largest legitimate batch, 1024 rows of 64 numbers: answered (200).

Reports p50, p99 and the maximum of `/health` in both phases, and each kind's requests
and statuses. Writes benchmarks/results/serving_flood.json.

    python benchmarks/serving_flood.py            # the measurement (a quiet machine)
    python benchmarks/serving_flood.py --quick    # a check that it runs (nothing written)
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
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import env, write_result
from benchmarks.serving_speed import _free_port, _project, _wait

NAME = "digits"
FLOODERS = 16
PROBES = 500
PROBE_GAP_S = 0.02
GOAL_P99_MS = 100.0
KINDS = ("empty_rows", "strings", "full_batch")


def body(kind: str) -> bytes:
    """The body a flooder of `kind` sends (see the module doc)."""
    if kind == "empty_rows":
        return b'{"inputs": [' + b",".join([b"[]"] * 1_000_000) + b"]}"
    if kind == "strings":
        row = "[" + ",".join(['"' + "x" * 40 + '"'] * 64) + "]"
        return ('{"inputs": [' + ",".join([row] * 1024) + "]}").encode()
    row = "[" + ",".join(f"{0.123456789012345 + i:.15f}" for i in range(64)) + "]"
    return ('{"inputs": [' + ",".join([row] * 1024) + "]}").encode()


def connect(port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def flood(port: int, kind: str) -> None:
    """A flooder process: send `kind` bodies until a line arrives on stdin, then print
    the statuses it got as JSON."""
    data = body(kind)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    conn, statuses = connect(port), Counter[int]()
    print("flooding", flush=True)
    while not stop.is_set():
        conn.request("POST", "/predict", data, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        statuses[response.status] += 1
        if response.getheader("connection", "").lower() == "close":
            conn.close()
            conn = connect(port)
    print(json.dumps({"kind": kind, "statuses": dict(statuses)}), flush=True)


def probe(port: int, count: int) -> list[float]:
    """Seconds of each of `count` `/health` requests, PROBE_GAP_S apart."""
    conn, times = connect(port), []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - start)
        if response.status != 200:
            raise RuntimeError(f"/health answered {response.status}")
        time.sleep(PROBE_GAP_S)
    conn.close()
    return times


def latency(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "probes": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def serve(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    mlops = str(Path(sys.executable).parent / "mlops")
    process = subprocess.Popen(
        [mlops, "serve", f"{NAME}@production", "--port", str(port), "--poll", "0"],
        cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    _wait(port, "/ready", process)
    return process, port


def run(flooders: int, probes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="serving-flood-") as tmp:
        root = Path(tmp)
        _project(root)
        server, port = serve(root)
        procs: list[subprocess.Popen[str]] = []
        try:
            quiet = probe(port, probes)
            for i in range(flooders):
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--flood", str(port), KINDS[i % len(KINDS)]],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env(),
                ))  # fmt: skip
            for proc in procs:  # every flooder has its body built and is sending
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "flooding":
                    raise RuntimeError("a flooder did not start")
            start = time.perf_counter()
            flooded = probe(port, probes)
            seconds = time.perf_counter() - start
            found = [json.loads(p.communicate("stop\n", timeout=300)[0]) for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(60)
    kinds: dict[str, dict[str, Any]] = {}
    for f in found:
        seen = kinds.setdefault(f["kind"], {"flooders": 0, "statuses": Counter()})
        seen["flooders"] += 1
        seen["statuses"].update(f["statuses"])
    for seen in kinds.values():
        seen["statuses"] = dict(seen["statuses"])
        seen["requests_per_s"] = round(sum(seen["statuses"].values()) / seconds, 1)
    during, alone = latency(flooded), latency(quiet)
    return {
        "model": f"{NAME} MLP served by `mlops serve` (torch, --max-batch 1024)",
        "load": {"flooders": flooders, "probe_gap_s": PROBE_GAP_S, "flood_s": round(seconds, 1)},
        "health_quiet": alone,
        "health_flooded": during,
        "flood": kinds,
        "p99_flooded_over_quiet": round(during["p99_ms"] / alone["p99_ms"], 2),
        "goals": {"health_p99_within_100ms": during["p99_ms"] <= GOAL_P99_MS},
    }


def main() -> None:
    if sys.argv[1:2] == ["--flood"]:
        flood(int(sys.argv[2]), sys.argv[3])
        return
    quick = "--quick" in sys.argv[1:]
    result = run(flooders=3 if quick else FLOODERS, probes=20 if quick else PROBES)
    print(json.dumps(result, indent=2))
    if quick:
        print("quick run: nothing written")
        return
    print(f"wrote {write_result('serving_flood', result)}")


if __name__ == "__main__":
    main()

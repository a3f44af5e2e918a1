"""`mlops serve --workers 2`: two processes on one port, a real registry behind them.

Both workers answer (each its own id prefix) and `/metrics` counts every request the same
whichever worker takes the scrape; a label sent right after its answer is joined whichever
worker gets it; a promotion swaps both (metrics show the new version only); a worker
killed with SIGKILL is replaced and its counts are kept; SIGTERM stops them all.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry.promotion import change_stage
from registry.stages import Ref
from tests.integration.registry_project import (
    _arrays,
    cli,
    context,
    register_small,
    write_project,
)
from tests.integration.test_serving import JSON, MODEL, Client, start_server, stop
from tests.servers import wait_ready


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    client = Client(port)  # a new connection: any worker may take it
    try:
        text = client.get("/metrics").decode()
    finally:
        client.close()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _predicted(port: int) -> int:
    key = ("mlops_requests_total", (("endpoint", "/predict"), ("status", "200")))
    return int(_samples(port).get(key, 0))


def _answer(port: int, row: list[float]) -> dict[str, Any]:
    client = Client(port)
    try:
        return dict(client.predict({"inputs": [row]}))
    finally:
        client.close()


def _workers(process: Any) -> list[psutil.Process]:
    return [p for p in psutil.Process(process.pid).children() if "mlops.serving.workers" in
            " ".join(p.cmdline())]  # fmt: skip


def _until_listening(process: Any, port: int, workers: int, timeout: float = 180.0) -> None:
    """Until `workers` worker processes listen on `port` (each listens once it has loaded
    the model; on a busy machine the second may take a while longer than the first)."""
    deadline = time.monotonic() + timeout
    while True:
        listening = [
            w for w in _workers(process)
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in w.net_connections(kind="tcp"))
        ]  # fmt: skip
        if len(listening) >= workers:
            return
        assert time.monotonic() < deadline, f"{len(listening)} of {workers} workers listening"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("workers")
    write_project(root)
    ctx = context(root)
    register_small(ctx, MODEL, seed=0)
    register_small(ctx, MODEL, seed=1)
    change_stage(ctx, MODEL, Ref(version=1), "production")
    process, port = start_server(root, "--workers", "2", "--feedback", "--poll", "0.5")
    try:
        wait_ready(process, port)  # the first worker listening answers /ready
        _until_listening(process, port, 2)
        x, y = _arrays(root, "test")
        yield {"root": root, "ctx": ctx, "process": process, "port": port, "x": x, "y": y}
    finally:
        stop(process)


def test_both_workers_answer_and_metrics_count_every_request(pool: dict[str, Any]) -> None:
    port, x = pool["port"], pool["x"]
    assert len(_workers(pool["process"])) == 2
    before = _predicted(port)
    with ThreadPoolExecutor(16) as threads:
        answers = list(threads.map(lambda i: _answer(port, x[i].tolist()), range(160)))
    prefixes = {a["ids"][0].rsplit("-", 1)[0] for a in answers}
    assert len(prefixes) == 2, "one worker took every connection"
    for _ in range(6):  # whichever worker takes the scrape
        assert _predicted(port) - before == 160


def test_a_label_right_after_its_answer_joins_whichever_worker_gets_it(
    pool: dict[str, Any],
) -> None:
    port, x, y = pool["port"], pool["x"], pool["y"]
    for i in range(30):
        rid = _answer(port, x[i].tolist())["ids"][0]
        client = Client(port)
        try:
            body = json.dumps({"labels": [{"id": rid, "label": int(y[i])}]}).encode()
            status, answer = client.call("POST", "/feedback", body, JSON)
        finally:
            client.close()
        assert status == 200, answer


def test_a_killed_worker_is_replaced_and_its_counts_kept(pool: dict[str, Any]) -> None:
    port, x = pool["port"], pool["x"]
    before = _predicted(port)
    victim = _workers(pool["process"])[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    deadline = time.monotonic() + 60
    while len(_workers(pool["process"])) < 2 or victim.pid in {
        p.pid for p in _workers(pool["process"])
    }:
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.2)
    _until_listening(pool["process"], port, 2)
    for i in range(20):
        _answer(port, x[i].tolist())
    assert _predicted(port) >= before + 20


def test_a_promotion_swaps_every_worker(pool: dict[str, Any]) -> None:
    port, x, ctx = pool["port"], pool["x"], pool["ctx"]
    change_stage(ctx, MODEL, Ref(version=2), "production")
    deadline, streak = time.monotonic() + 60, 0
    while streak < 40:
        assert time.monotonic() < deadline, "not every worker swapped"
        streak = streak + 1 if _answer(port, x[0].tolist())["version"] == 2 else 0
    samples = _samples(port)
    assert samples[("mlops_model_version", (("model", MODEL),))] == 2
    info = {dict(labels)["version"]: v for (name, labels), v in samples.items()
            if name == "mlops_model_info"}  # fmt: skip
    assert info["2"] == 1 and info.get("1", 0) == 0


def test_sigterm_stops_every_worker(pool: dict[str, Any]) -> None:
    workers = _workers(pool["process"])
    code, _out, err = stop(pool["process"])
    assert code == 0 and "Traceback" not in err, err
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive and len(gone) == 2


def test_a_sink_the_workers_cannot_write_is_one_line(pool: dict[str, Any]) -> None:
    done = cli(pool["root"], "serve", f"{MODEL}@production", "--workers", "2", "--feedback",
               "--sink", "/proc/no-such-dir/sink.db", "--port", "0")  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert done.returncode == 2 and len(errors) == 1 and "--sink" in errors[0], done.stderr

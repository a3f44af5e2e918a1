"""Batched serving on a real server (`--batch-max 32`): 32 clients at once, each sending
requests of 1 to 4 rows; every caller gets its own rows back, in order (the registry
model's own answers), while the server answers them in fewer model calls than requests.
A lone request is not held back waiting for company."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry.promotion import change_stage
from registry.stages import Ref
from tests.integration.registry_project import _arrays, context, register_small, write_project
from tests.integration.test_serving import MODEL, Client, registry_proba, start_server, stop
from tests.servers import wait_ready

CLIENTS, ROUNDS = 32, 8


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("batching")
    write_project(root)
    ctx = context(root)
    register_small(ctx, MODEL, seed=0)
    change_stage(ctx, MODEL, Ref(version=1), "production", reason="first")
    process, port = start_server(root, "--batch-max", "32", "--batch-wait-ms", "50", "--poll", "0")
    try:
        wait_ready(process, port)
        yield {"root": root, "ctx": ctx, "port": port}
    finally:
        stop(process)


def _metric(client: Client, name: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return math.nan


def test_each_caller_gets_its_own_rows_in_order_under_concurrent_load(
    batched: dict[str, Any], tmp_path: Path
) -> None:
    x, _ = _arrays(batched["root"], "test")
    expected = registry_proba(batched["ctx"], 1, x, tmp_path)
    before = _metric(Client(batched["port"]), "mlops_model_calls_total")
    failures: list[str] = []
    start = threading.Barrier(CLIENTS)

    def client(k: int) -> None:
        conn = Client(batched["port"])
        start.wait()
        for r in range(ROUNDS):
            size = 1 + (k + r) % 4
            rows = [(k * 7 + r * 13 + j) % len(x) for j in range(size)]
            answer = conn.predict({"inputs": x[rows].tolist()})
            want = expected[rows]
            if answer["predictions"] != want.argmax(axis=1).tolist() or not np.allclose(
                answer["probabilities"], want, atol=1e-5
            ) or len(answer["ids"]) != size:  # fmt: skip
                failures.append(f"client {k} round {r}: rows {rows} got {answer['predictions']}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:5]
    calls = _metric(Client(batched["port"]), "mlops_model_calls_total") - before
    assert 0 < calls < CLIENTS * ROUNDS * 0.8, calls  # coalesced: fewer calls than requests


def test_a_lone_request_does_not_wait_for_company(batched: dict[str, Any]) -> None:
    client = Client(batched["port"])
    x, _ = _arrays(batched["root"], "test")
    client.predict({"inputs": x[:1].tolist()})
    took = []
    for i in range(20):
        begin = time.perf_counter()
        client.predict({"inputs": x[i : i + 1].tolist()})
        took.append(time.perf_counter() - begin)
    # --batch-wait-ms 50: a lone request that waited would take 50 ms more every time
    assert float(np.median(took)) < 0.025, took

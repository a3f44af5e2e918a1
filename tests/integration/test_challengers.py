"""A challenger on live traffic, on real servers: `--shadow` scores every request off the
response path (the primary's answers unchanged, the shadow's scores recorded beside
them), `--canary` answers its share of requests; `mlops registry compare --live` compares
the two on the labelled pairs, and a `require_live` gate refuses a promotion until
enough labelled pairs show the challenger right more often, then lets it through, its
evidence in the ledger."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops.live import labelled, paired
from registry.promotion import change_stage
from registry.stages import Ref
from tests.integration.registry_project import _arrays, cli, context, register_small, write_project
from tests.integration.test_serving import JSON, MODEL, Client, registry_proba, start_server, stop
from tests.servers import wait_ready

MIN_PAIRS = 60
GATED = f"""
registry:
  gates:
    staging: {{integrity: true}}
    production:
      integrity: true
      require_live: {{min_labelled_pairs: {MIN_PAIRS}, max_p_value: 0.05, sink: sink.db}}
"""


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """v1 in production served with v2 (staging) as its shadow, answers recorded."""
    root = tmp_path_factory.mktemp("challengers")
    write_project(root, GATED)
    ctx = context(root)
    for seed in (0, 1):
        register_small(ctx, MODEL, seed=seed)
    change_stage(ctx, MODEL, Ref(version=1), "production", reason="first")
    change_stage(ctx, MODEL, Ref(version=2), "staging", reason="challenger")
    process, port = start_server(
        root, "--shadow", f"{MODEL}@staging", "--feedback", "--sink", "sink.db",
        "--poll", "0.5", "--max-batch", "64",
    )  # fmt: skip
    try:
        wait_ready(process, port)
        yield {"root": root, "ctx": ctx, "port": port, "sink": root / "sink.db"}
    finally:
        stop(process)


def _metric(client: Client, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return math.nan


def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _send(client: Client, x: np.ndarray) -> dict[str, Any]:
    """Each row in its own request, as live traffic comes: the answers, merged."""
    merged: dict[str, list[Any]] = {"ids": [], "predictions": [], "versions": []}
    for row in x:
        answer = client.predict({"inputs": [row.tolist()]})
        merged["ids"] += answer["ids"]
        merged["predictions"] += answer["predictions"]
        merged["versions"].append(answer["version"])
    return merged


def test_a_shadow_scores_every_request_without_changing_the_answers(
    shadowed: dict[str, Any], tmp_path: Path
) -> None:
    client = Client(shadowed["port"])
    x, _ = _arrays(shadowed["root"], "test")
    rows = x[:40]
    answers = _send(client, rows)
    assert set(answers["versions"]) == {1}
    own = registry_proba(shadowed["ctx"], 1, rows, tmp_path).argmax(axis=1)
    assert answers["predictions"] == own.tolist()  # the primary's answers, untouched
    _until(lambda: _metric(client, "mlops_shadow_scored_total") >= 40)
    assert _metric(client, "mlops_shadow_dropped_total") == 0
    meta = client.get("/metadata")
    assert meta["challenger"]["role"] == "shadow" and meta["challenger"]["version"] == 2
    info = _metric(client, "mlops_model_info", version="2", role="shadow", stage="staging")
    assert info == 1


def test_live_comparison_and_a_gate_that_waits_for_labelled_pairs(
    shadowed: dict[str, Any], tmp_path: Path
) -> None:
    root, sink = shadowed["root"], shadowed["sink"]
    client = Client(shadowed["port"])
    x, _ = _arrays(root, "test")
    rows = x[40:270]
    answers = _send(client, rows)
    theirs = registry_proba(shadowed["ctx"], 2, rows, tmp_path).argmax(axis=1).tolist()
    # The users' labels here are the challenger's answers: where the two differ, v2 is right.
    ids = answers["ids"]

    def label(part: slice) -> None:
        entries = [{"id": i, "label": t} for i, t in zip(ids[part], theirs[part], strict=True)]
        fresh = Client(shadowed["port"])  # the commands between take longer than keep-alive
        for start in range(0, len(entries), 64):
            body = json.dumps({"labels": entries[start : start + 64]}).encode()
            status, answer = fresh.call("POST", "/feedback", body, JSON)
            assert status == 200, answer

    label(slice(0, 20))  # right after the answers; too few labelled pairs yet
    # the labels count for the shadow's scores as soon as /feedback has answered
    fresh = Client(shadowed["port"])
    assert _metric(fresh, "mlops_live_labelled", version="1") == 20
    assert _metric(fresh, "mlops_live_labelled", version="2") == 20
    _until(lambda: _metric(fresh, "mlops_shadow_scored_total") >= 40 + len(rows))
    refused = cli(root, "registry", "promote", MODEL, "2", "--to", "production", "--json")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "live evidence" in refused.stdout + refused.stderr
    shown = cli(root, "registry", "compare", MODEL, "@production", "@staging", "--live",
                "--sink", str(sink), "--json")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    live = json.loads(shown.stdout)["live"]
    assert live["pairs"] >= len(rows) and live["labelled_pairs"] == 20
    agree = np.mean(np.array(answers["predictions"]) == np.array(theirs))
    assert live["candidate_accuracy"] == 1.0
    label(slice(20, len(rows)))
    differ = int(np.sum(np.array(answers["predictions"]) != np.array(theirs)))
    assert differ >= 8, f"the two versions differ on {differ} rows only: no evidence to test"
    shown = cli(root, "registry", "compare", MODEL, "@production", "@staging", "--live",
                "--sink", str(sink), "--json")  # fmt: skip
    live = json.loads(shown.stdout)["live"]
    assert live["labelled_pairs"] == len(rows) and live["only_candidate_right"] == differ
    pairs = paired(sink, MODEL, 1, 2)  # both versions' answers to the same rows, in order
    assert pairs.a[-len(rows) :] == answers["predictions"] and pairs.b[-len(rows) :] == theirs
    assert live["pairs"] == len(pairs)
    assert live["agreement"] == pytest.approx(np.mean(np.array(pairs.a) == np.array(pairs.b)))
    assert agree < 1.0
    assert live["mcnemar_p"] < 0.05
    assert labelled(sink, MODEL, 2).labels == theirs  # the shadow's scores are labelled too
    done = cli(root, "registry", "promote", MODEL, "2", "--to", "production", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    history = json.loads(cli(root, "registry", "history", MODEL, "--json").stdout)
    gate = next(
        g for entry in history
        if entry.get("to_stage") == "production" and entry["version"] == 2
        and entry["evidence"].get("passed")
        for g in entry["evidence"]["gates"] if g["gate"] == "live evidence"
    )  # fmt: skip
    assert gate["passed"] and f"{len(rows)} labelled pairs vs v1" in gate["value"], gate


def test_a_canary_answers_its_share_of_requests(shadowed: dict[str, Any]) -> None:
    process, port = start_server(
        shadowed["root"], "--canary", f"{MODEL}@1:30%", "--poll", "0",  # v1: the old holder
        "--sink", "canary.db", "--feedback",
    )  # fmt: skip
    try:
        wait_ready(process, port)
        client = Client(port)
        x, _ = _arrays(shadowed["root"], "test")
        n = 400
        versions = _send(client, x[np.arange(n) % len(x)])["versions"]
        staging = client.get("/metadata")["challenger"]["version"]
        share = versions.count(staging) / n
        # 30% of 400: four standard deviations are about ±9 points (a false alarm in
        # 16,000 runs)
        assert abs(share - 0.30) < 4 * math.sqrt(0.3 * 0.7 / n), share
        assert set(versions) == {staging, client.get("/metadata")["version"]}
        counted = _metric(client, "mlops_predictions_total", version=str(staging))
        assert math.isnan(counted) or counted >= 0  # classes counted under each version
    finally:
        stop(process)


def test_challenger_options_are_checked_before_anything_loads(shadowed: dict[str, Any]) -> None:
    root = shadowed["root"]
    for args, error in [
        (
            ("--canary", "digits@staging"),
            "--canary 'digits@staging': expected MODEL@STAGE:PERCENT%",
        ),
        (("--canary", "digits@staging:0%"), "expected MODEL@STAGE:PERCENT% with 0 < PERCENT < 100"),
        (("--shadow", "other@staging"), "--shadow other@staging: a challenger of digits"),
        (("--shadow", "digits@staging", "--canary", "digits@staging:5%"), "give one challenger"),
    ]:
        done = cli(root, "serve", f"{MODEL}@production", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert error in done.stderr and "Traceback" not in done.stderr, done.stderr

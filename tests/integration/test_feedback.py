"""Live labels on a real server (`mlops serve --feedback`): every answer carries one id
per row; `/feedback` joins labels to those answers (late, partial, repeated: the last one
wins; an unknown id or a label that is not a class refuses the whole request, nothing
written); `/metrics` shows the live accuracy over the window; `mlops monitor performance`
prints it with its interval, the confusion matrix and the trend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops.monitoring.performance import wilson
from registry.promotion import change_stage
from registry.stages import Ref
from tests.integration.registry_project import _arrays, cli, context, register_small, write_project
from tests.integration.test_serving import JSON, MODEL, Client, start_server, stop
from tests.servers import wait_ready

WINDOW = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """digits v1 in production, served with --feedback into its own sink."""
    root = tmp_path_factory.mktemp("feedback")
    write_project(root)
    ctx = context(root)
    register_small(ctx, MODEL, seed=0)
    change_stage(ctx, MODEL, Ref(version=1), "production", reason="first")
    sink = root / "sink.db"
    process, port = start_server(
        root, "--feedback", "--sink", str(sink), "--live-window", str(WINDOW), "--poll", "0",
        "--max-batch", "64",
    )  # fmt: skip
    try:
        wait_ready(process, port)
        yield {"root": root, "sink": sink, "port": port}
    finally:
        stop(process)


def _feedback(client: Client, doc: Any) -> tuple[int, dict[str, Any]]:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    status, answer = client.call("POST", "/feedback", raw, JSON)
    return status, json.loads(answer)


def _live(client: Client) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").decode()):
        for sample in family.samples:
            if sample.name.startswith(("mlops_live_", "mlops_feedback_labels")):
                found[sample.name] = sample.value
    return found


def test_answers_carry_one_id_per_row(server: dict[str, Any]) -> None:
    client = Client(server["port"])
    x, _ = _arrays(server["root"], "test")
    first = client.predict({"inputs": x[:5].tolist()})
    second = client.predict({"inputs": x[5:8].tolist()})
    ids = first["ids"] + second["ids"]
    assert len(first["ids"]) == 5 and len(second["ids"]) == 3
    assert len(set(ids)) == 8 and all(isinstance(i, str) and i for i in ids)


def test_labels_join_late_partial_and_repeated_the_last_one_wins(
    server: dict[str, Any], tmp_path: Path
) -> None:
    client = Client(server["port"])
    x, y = _arrays(server["root"], "test")
    answer = client.predict({"inputs": x[20:60].tolist()})  # 40 rows
    ids, predicted = answer["ids"], answer["predictions"]
    client.predict({"inputs": x[60:70].tolist()})  # later traffic: the labels come late
    truth = [int(v) for v in y[20:60]]
    wrong = [(t + 1) % 10 for t in truth]
    # partial: 30 of the 40 rows, the first 10 of them labelled wrongly at first
    first = [{"id": i, "label": w} for i, w in zip(ids[:10], wrong[:10], strict=True)]
    first += [{"id": i, "label": t} for i, t in zip(ids[10:30], truth[10:30], strict=True)]
    status, done = _feedback(client, {"labels": first})
    assert status == 200 and done == {"accepted": 30, "replaced": 0}, done
    fixed = [{"id": i, "label": str(t)} for i, t in zip(ids[:10], truth[:10], strict=True)]
    status, done = _feedback(client, {"labels": fixed})  # the class as a string works too
    assert status == 200 and done == {"accepted": 10, "replaced": 10}, done
    expected = float(np.mean(np.array(predicted[:30]) == np.array(truth[:30])))
    live = _live(client)
    assert live[["mlops_live_labelled", 'model="digits",version="1"}'][0]] == 30
    assert live["mlops_live_accuracy"] == pytest.approx(expected)
    assert live["mlops_feedback_labels_total"] == 40
    shown = cli(server["root"], "monitor", "performance", f"{MODEL}@production",
                "--sink", str(server["sink"]), "--buckets", "3", "--json")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["version"] == 1 and report["labelled"] == 30 and report["answered"] >= 50
    assert report["metrics"]["accuracy"] == pytest.approx(expected)
    low, high = wilson(round(expected * 30), 30)
    assert report["metrics"]["low"] == pytest.approx(low)
    assert report["metrics"]["high"] == pytest.approx(high)
    matrix = np.array(report["confusion"])
    assert matrix.sum() == 30 and np.trace(matrix) == round(expected * 30)
    assert [w["labelled"] for w in report["trend"]] == [10, 10, 10]
    assert Path(report["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(report["plot"]).name == "digits-v1.png"
    bad = cli(server["root"], "monitor", "performance", MODEL, "--sink", str(server["sink"]),
              "--plot", str(tmp_path / "p.jpg"))  # fmt: skip
    assert bad.returncode == 2 and "the plot is a PNG" in bad.stderr, bad.stderr
    table = cli(server["root"], "monitor", "performance", MODEL, "--sink", str(server["sink"]))
    assert table.returncode == 0, table.stderr
    assert f"Live accuracy {expected:.4f}" in table.stdout and "Confusion" in table.stdout
    assert "Plot: " in table.stdout
    again, port = start_server(server["root"], "--feedback", "--sink", str(server["sink"]),
                               "--poll", "0")  # fmt: skip
    try:  # a restart on the same sink shows the window at once, before any new label
        wait_ready(again, port)
        restarted = _live(Client(port))
        assert restarted["mlops_live_labelled"] == 30
        assert restarted["mlops_live_accuracy"] == pytest.approx(expected)
    finally:
        stop(again)


@pytest.mark.parametrize(
    ("doc", "status", "error"),
    [
        (b"{not json", 400, "body is not JSON"),
        ({"labels": []}, 422, "labels: a non-empty list"),
        ({"labels": [{"id": 3, "label": 1}]}, 422, "labels[0].id: the id a /predict answer"),
        ({"labels": [{"id": "x"}]}, 422, "labels[0]: an object with exactly `id` and `label`"),
        ({"labels": [{"id": "x", "label": None}]}, 422, "labels[0].label: a class or a number"),
        ({"rows": []}, 422, 'send {"labels"'),
        ({"labels": [{"id": "x", "label": 1}] * 65}, 413, "labels: 65 entries, over 64"),
    ],
)
def test_malformed_feedback_is_one_line(
    server: dict[str, Any], doc: Any, status: int, error: str
) -> None:
    got, answer = _feedback(Client(server["port"]), doc)
    assert got == status and answer["error"].startswith(error), answer
    assert "\n" not in answer["error"]


def test_an_unknown_id_or_a_foreign_label_refuses_the_whole_request(
    server: dict[str, Any],
) -> None:
    client = Client(server["port"])
    x, _ = _arrays(server["root"], "test")
    ids = client.predict({"inputs": x[80:83].tolist()})["ids"]
    before = _live(client).get("mlops_feedback_labels_total", 0.0)
    status, answer = _feedback(
        client, {"labels": [{"id": ids[0], "label": 1}, {"id": "nope-1", "label": 2}]}
    )
    assert status == 422
    assert answer["error"].startswith("labels[1].id: unknown id 'nope-1'"), answer
    status, answer = _feedback(
        client, {"labels": [{"id": ids[1], "label": 3}, {"id": ids[2], "label": "eleven"}]}
    )
    assert status == 422
    assert answer["error"].startswith("labels[1].label: 'eleven' is not a class of digits"), answer
    assert _live(client).get("mlops_feedback_labels_total", 0.0) == before  # nothing written
    status, answer = client.call("GET", "/feedback")
    assert status == 405
    body = json.dumps({"labels": [{"id": ids[1], "label": 3}]}).encode()
    status, answer = client.call("POST", "/feedback", body, "text/plain")  # a cross-site form
    assert status == 415 and "application/json" in json.loads(answer)["error"]


def test_feedback_without_the_flag_says_how_to_turn_it_on(server: dict[str, Any]) -> None:
    process, port = start_server(server["root"], "--poll", "0")
    try:
        wait_ready(process, port)
        status, answer = _feedback(Client(port), {"labels": [{"id": "a-1", "label": 1}]})
        assert status == 409 and "--feedback" in answer["error"], answer
    finally:
        stop(process)

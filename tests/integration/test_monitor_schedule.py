"""A monitor schedule closes the loop: `mlops schedule add watch --monitor
digits@production --every 1h`, a real server recording answers and labels, and
`mlops schedule run-now` as the scheduler would fire it.

Clean traffic triggers nothing; a shifted stream (inverted images) with its labels
crosses both the drift and the live-accuracy thresholds, and the run snapshots the
labelled rows under data/ (versioned with `dvc add`), retrains on train + snapshot and
registers one challenger, its md5 in the lineage, production untouched. A second trigger
within the cooldown is recorded as skipped, as is one while a run holds the schedule.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlops.io import file_digest
from mlops.scheduling.store import ScheduleStore
from registry.promotion import change_stage
from registry.stages import Ref
from tests.integration.registry_project import _arrays, cli, context, register_small
from tests.integration.sweep_project import write_project
from tests.integration.test_serving import JSON, Client, start_server, stop
from tests.servers import wait_ready

PARAMS = """
pipeline: {name: digits}
train:
  seed: 42
  epochs: 2
  batch_size: 256
  threads: 1
  device: cpu
  early_stopping: {patience: 0}
  model: {family: mlp, mlp: {hidden_sizes: [16], dropout: 0.0}}
registry:
  gates: {staging: {integrity: true}, production: {integrity: true}}
monitor:
  cooldown: 3600
  min_live_accuracy: 0.8
  min_labelled: 60
  drift: {min_rows: 60}
"""


def _send(client: Client, x: Any, y: Any) -> None:
    """Answers for the rows of `x`, then their labels."""
    ids: list[str] = []
    for start in range(0, len(x), 20):
        ids += client.predict({"inputs": x[start : start + 20].tolist()})["ids"]
    labels = [{"id": i, "label": int(label)} for i, label in zip(ids, y, strict=True)]
    status, answer = client.call("POST", "/feedback", json.dumps({"labels": labels}).encode(), JSON)
    assert status == 200, answer


def _run_now(root: Path) -> dict[str, Any]:
    done = cli(root, "schedule", "run-now", "watch", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("watch")
    write_project(root, PARAMS)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    ctx = context(root)
    register_small(ctx, "digits", seed=0)
    change_stage(ctx, "digits", Ref(version=1), "production")
    added = cli(root, "schedule", "add", "watch", "--monitor", "digits@production", "--every", "1h")
    assert added.returncode == 0, added.stderr
    x, y = _arrays(root, "test")
    seen: dict[str, Any] = {"root": root, "ctx": ctx}
    process, port = start_server(root, "--feedback", "--log-inputs", "1.0", "--poll", "0")
    try:
        wait_ready(process, port)
        _send(Client(port), x[:100], y[:100])
        seen["clean"] = _run_now(root)
        _send(Client(port), 16.0 - x[100:], y[100:])  # the same digits, inverted
        seen["rows"] = len(x)
        seen["shifted"] = _run_now(root)
        seen["again"] = _run_now(root)
    finally:
        stop(process)
    yield seen


def test_clean_traffic_triggers_nothing(loop: dict[str, Any]) -> None:
    run = loop["clean"]
    trigger = json.loads(run["trigger"])
    assert run["status"] == "succeeded" and run["registered_version"] == ""
    assert trigger["crossed"] == [] and trigger["watched"] == "digits v1"
    assert trigger["drift"]["drift"] is False and trigger["live"]["labelled"] == 100
    assert trigger["live"]["value"] >= 0.8


def test_a_shifted_stream_retrains_once_and_registers_a_challenger(loop: dict[str, Any]) -> None:
    run, root, ctx = loop["shifted"], loop["root"], loop["ctx"]
    trigger = json.loads(run["trigger"])
    assert run["status"] == "succeeded", run["error"]
    assert run["registered_version"] == "2"
    assert trigger["drift"]["drift"] is True
    assert any("live accuracy" in c for c in trigger["crossed"])
    assert any(c.startswith("drift") for c in trigger["crossed"])
    # the snapshot: every labelled row (the whole test split), under data/, added to
    # DVC, its md5 in the lineage
    snapshot = root / "data" / "feedback" / "digits.parquet"
    md5 = file_digest(snapshot, "md5")
    assert trigger["snapshot"] == {
        "path": "data/feedback/digits.parquet",
        "md5": md5,
        "rows": loop["rows"],
    }
    dvc_file = yaml.safe_load((root / "data" / "feedback" / "digits.parquet.dvc").read_text())
    assert dvc_file["outs"][0]["md5"] == md5
    tags = MlflowClient().get_model_version("digits", "2").tags
    lineage = json.loads(tags["mlops.lineage"])
    assert lineage["mlops.data.feedback.md5"] == md5 and tags["mlops.role"] == "challenger"
    assert lineage["mlops.watched"] == "digits@1" and "live accuracy" in lineage["mlops.trigger"]
    assert ctx.store.holders("digits") == {"production": 1}, "a monitor never promotes"
    shown = cli(root, "registry", "lineage", "digits", "2")
    assert shown.returncode == 0 and md5[:8] in shown.stdout, shown.stdout


def test_a_trigger_within_the_cooldown_is_skipped(loop: dict[str, Any]) -> None:
    run, ctx = loop["again"], loop["ctx"]
    assert run["status"] == "skipped" and run["registered_version"] == ""
    assert run["error"].startswith("cooldown: run") and "monitor.cooldown 3600" in run["error"]
    assert [v.version for v in ctx.store.versions("digits")] == [2, 1]


def test_a_trigger_while_a_run_is_going_is_skipped(loop: dict[str, Any]) -> None:
    root, ctx = loop["root"], loop["ctx"]
    store = ScheduleStore(ctx.settings.database_url)
    schedule = store.get("watch")
    assert schedule is not None
    now = time.time()
    held = store.start_run(schedule, "manual", None, now, 0, now + 600)  # a retrain going
    assert held is not None
    try:
        done = cli(root, "schedule", "run-now", "watch")
        assert done.returncode == 1 and f"run {held}" in done.stderr, done.stderr
    finally:
        store.finish_run(held, "succeeded", time.time())
        store.release("watch", held)
    history = cli(root, "schedule", "history", "watch", "--json")
    runs = json.loads(history.stdout)
    # clean, shifted, cooldown, the held run, the trigger while it was going
    assert [r["status"] for r in runs] == ["succeeded", "succeeded", "skipped", "succeeded",
                                           "skipped"]  # fmt: skip
    assert runs[4]["error"] == f"run {held} ({runs[3]['owner']}) is still going"
    table = cli(root, "schedule", "history", "watch")
    assert "triggered by" in table.stdout and "cooldown" in table.stdout, table.stdout

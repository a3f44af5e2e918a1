"""`mlops ui` serves the pipeline's runs and registered model from the embedded store on
127.0.0.1 and a free port, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.project import clean_env

pytestmark = pytest.mark.e2e


def _get(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read().decode()
    return json.loads(raw) if raw.lstrip().startswith("{") else raw


def test_ui_serves_runs_and_models(pipeline: Path) -> None:
    proc = subprocess.Popen(
        ["mlops", "ui"], cwd=pipeline, env=clean_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url = None
    deadline = time.monotonic() + 180
    lines = []
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "mlops ui exited early:\n" + "".join(lines)
        lines.append(line)
        found = re.search(r"MLflow UI: (http://127\.0\.0\.1:(\d+))", line)
        url = found.group(1) if found else None
    assert url, "no URL printed:\n" + "".join(lines)
    try:
        api = f"{url}/api/2.0/mlflow"
        experiment = _get(f"{api}/experiments/get-by-name?experiment_name=digits")["experiment"]
        runs = _get(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        stages = {t["value"] for r in runs for t in r["data"]["tags"] if t["key"] == "mlops.stage"}
        assert stages == {"ingest", "validate", "split", "train", "evaluate", "register"}
        versions = _get(f"{api}/model-versions/search?filter=name%3D%27digits%27")
        assert "1" in {v["version"] for v in versions["model_versions"]}
        page = _get(url)
        assert "<title>MLflow</title>" in page
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the server still listens after stop"

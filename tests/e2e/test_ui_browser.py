"""The MLflow UI, browsed for real: headless Chromium (driven by Playwright) on `mlops ui`
and on `mlops server start`, over the store `dvc repro` filled, shows the experiment's
runs, the train run's metrics and the registered model with its stage alias.

Screenshots of every page are saved as test artifacts (`MLOPS_TEST_ARTIFACTS`, else
`build/test-artifacts/`). The browser is the system Chromium (`apt-get install
chromium`; `.ci/run` installs it): Playwright's own browser download is not used.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect, sync_playwright

from registry.registration import version_info
from tests.e2e.project import REPO, clean_env, run

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium keeps calling home on a closed network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# The UI's first-visit extras, dismissed as a returning user would have: the assistant
# panel, the model registry's promo dialog; and the "Model training" view, not GenAI.
QUIET_UI = """
for (const [key, value] of Object.entries({
    "mlflow.workflowType_v1": '"machine_learning"',
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "_mlflow_model_registry_promo_modal_dismissed_v1": "true",
})) window.localStorage.setItem(key, value);
"""
STAGES = {"ingest", "validate", "split", "train", "evaluate", "register"}
MODEL = "digits"
METRIC = "test_accuracy"
METRICS = (METRIC, "test_f1_macro")
TIMEOUT_MS = 120_000  # the UI's JS bundle is large and the machine small


def artifacts_dir() -> Path:
    """Where the screenshots go: `$MLOPS_TEST_ARTIFACTS/ui-browser`, else the repo's
    `build/test-artifacts/ui-browser` (git-ignored)."""
    root = Path(os.environ.get("MLOPS_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts")
    folder = root / "ui-browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _api(url: str, path: str, body: dict[str, Any] | None = None, **query: str) -> Any:
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _expected(url: str) -> dict[str, Any]:
    """What the server's REST API says the pages must show."""
    experiment = _api(url, "experiments/get-by-name", experiment_name=MODEL)["experiment"]
    runs = _api(url, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    names = {}  # stage → the run's name, as the runs list shows it
    for found in runs:
        tags = {t["key"]: t["value"] for t in found["data"].get("tags", [])}
        if "mlops.stage" in tags:
            names[tags["mlops.stage"]] = found["info"]["run_name"]
    model = _api(url, "registered-models/get", name=MODEL)["registered_model"]
    version = _api(url, "model-versions/get", name=MODEL, version="1")["model_version"]
    tags = {t["key"]: t["value"] for t in version["tags"]}
    train_id = version_info(tags)["mlops.train_run_id"]
    train = _api(url, "runs/get", run_id=train_id)["run"]
    metric = next(m["value"] for m in train["data"]["metrics"] if m["key"] == METRIC)
    return {
        "experiment_id": experiment["experiment_id"],
        "run_names": names,
        "train_run_id": train_id,
        "metric": float(metric),
        "aliases": sorted(a["alias"] for a in model.get("aliases", []) if a["version"] == "1"),
    }


def _runs_page(page: Page, url: str, want: dict[str, Any], shot: Path) -> None:
    """The runs table: every stage's run, the train run's children expanded, the test
    metrics added as columns (and the Dataset column, empty here, hidden to make room)."""

    page.goto(
        f"{url}/#/experiments/{want['experiment_id']}/runs?workflowType=machine_learning",
        timeout=TIMEOUT_MS,
    )

    def link(name: str) -> Any:
        return page.get_by_role("link", name=name, exact=True)

    expect(link(want["run_names"]["train"]).first, f"the runs table ({shot})").to_be_visible()
    dataset = page.get_by_role("columnheader", name="Dataset", exact=True)
    hidden = ["Dataset"] if dataset.count() else []
    page.get_by_role("button", name="Columns").click()
    for name in [*METRICS, *hidden]:
        page.get_by_placeholder("Search columns").fill(name)
        page.get_by_test_id("column-selector-tree").get_by_text(name, exact=True).click()
    page.keyboard.press("Escape")
    trains = page.get_by_role("row").filter(has=link(want["run_names"]["train"]))
    for i in range(trains.count()):
        expand = trains.nth(i).get_by_role("button")  # the +/- of its child runs
        if expand.count():
            expand.first.click()
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for name in sorted(want["run_names"].values()):
        expect(link(name).first, f"run {name} in the runs table ({shot})").to_be_visible()
    for name in METRICS:
        header = page.get_by_role("columnheader", name=name, exact=True).first
        expect(header, f"metric column {name} in the runs table ({shot})").to_be_visible()


def _run_page(page: Page, url: str, want: dict[str, Any], shot: Path) -> None:
    """The train run's page: the metric, with the value the REST API reports."""

    page.goto(
        f"{url}/#/experiments/{want['experiment_id']}/runs/{want['train_run_id']}",
        timeout=TIMEOUT_MS,
    )
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=METRIC, exact=True))
    expect(row, f"{METRIC} in the train run's metrics ({shot})").to_be_visible()
    shown = row.get_by_role("cell").nth(1).inner_text().strip()
    assert math.isclose(float(shown), want["metric"], rel_tol=1e-9), (
        f"{METRIC} shown {shown}, the API says {want['metric']} ({shot})"
    )


def _aliases_in(row: Locator, want: dict[str, Any], shot: Path) -> None:
    for alias in want["aliases"]:
        tag = row.get_by_text(re.compile(rf"^@\s*{re.escape(alias)}$"))
        expect(tag, f"alias @{alias} of {MODEL} version 1 ({shot})").to_be_visible()


def _models_page(page: Page, url: str, want: dict[str, Any], shot: Path) -> None:
    """The registered models: the model's row names its aliased versions (`@ staging :
    Version 1`), whichever version is the latest."""

    page.goto(f"{url}/#/models", timeout=TIMEOUT_MS)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=MODEL, exact=True))
    expect(row, f"registered model {MODEL} ({shot})").to_be_visible()
    aliased = row.get_by_role("link", name=re.compile(r"Version 1$"))
    expect(aliased.first, f"{MODEL} version 1 ({shot})").to_be_visible()
    _aliases_in(row, want, shot)


def _model_page(page: Page, url: str, want: dict[str, Any], shot: Path) -> None:
    """The registered model's page: its versions, version 1 with its aliases."""

    page.goto(f"{url}/#/models/{MODEL}", timeout=TIMEOUT_MS)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Version 1", exact=True))
    expect(row, f"{MODEL} version 1 ({shot})").to_be_visible()
    _aliases_in(row, want, shot)


PAGES = {"runs": _runs_page, "train-run": _run_page, "models": _models_page, "model": _model_page}


def check_ui(browser: Browser, url: str, label: str) -> list[Path]:
    """Browse the runs table, the train run and the registered model at `url` as a user
    would, asserting what each page shows against the REST API. Every page is saved as
    `<artifacts>/<label>-<page>.png`, also when its check fails; returns the paths."""
    want = _expected(url)
    assert set(want["run_names"]) == STAGES, want["run_names"]
    # each run reads in the list: what it did, then the commit it ran at
    assert all(name.startswith(stage + " ") for stage, name in want["run_names"].items())
    assert want["aliases"], f"{MODEL} version 1 has no alias to look for"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(QUIET_UI)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    shots = []
    try:
        for name, check in PAGES.items():
            shot = artifacts_dir() / f"{label}-{name}.png"
            try:
                check(page, url, want, shot)
            finally:
                page.screenshot(path=str(shot))
            shots.append(shot)
    finally:
        context.close()
    return shots


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """The system Chromium, headless (it must be installed: CI installs it)."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive the system Chromium; install it "
            "with `apt-get install -y chromium` (.ci/run does) or set MLOPS_CHROMIUM"
        )

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def staged(pipeline: Path) -> Path:
    """The pipeline's store with version 1 promoted to staging by the real CLI (so the UI
    has a stage alias to show); promotions leave the other e2e checks true."""

    uri = f"sqlite:///{pipeline / '.mlops' / 'mlflow.db'}"
    aliases = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(MODEL).aliases
    if "1" not in {str(v) for v in aliases.values()}:
        done = run(
            ["mlops", "registry", "promote", MODEL, "1", "--to", "staging", "--reason", "ui"],
            pipeline,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return pipeline


def _wait_for_url(proc: subprocess.Popen[str], pattern: str, timeout: float = 180) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "the command exited early:\n" + "".join(lines)
        lines.append(line)
        found = re.search(pattern, line)
        if found:
            return found.group(1)
    raise AssertionError("no URL printed:\n" + "".join(lines))


def test_mlops_ui_in_a_browser(browser: Browser, staged: Path) -> None:
    proc = subprocess.Popen(
        ["mlops", "ui"], cwd=staged, env=clean_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = _wait_for_url(proc, r"MLflow UI: (http://127\.0\.0\.1:\d+)")
        shots = check_ui(browser, url, "mlops-ui")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert all(p.stat().st_size > 10_000 for p in shots), shots


def test_mlops_server_in_a_browser(browser: Browser, staged: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    started = run(["mlops", "server", "start", "--port", port], staged, timeout=240)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        found = re.search(r"MLflow server: (http://127\.0\.0\.1:\d+)", started.stdout)
        assert found, started.stdout
        status = run(["mlops", "server", "status", "--json"], staged)
        assert status.returncode == 0, status.stdout + status.stderr
        shots = check_ui(browser, found.group(1), "mlops-server")
    finally:
        stopped = run(["mlops", "server", "stop"], staged, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(port))) != 0, "the server still listens"
    assert all(p.stat().st_size > 10_000 for p in shots), shots

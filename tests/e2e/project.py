"""Helpers of the end-to-end tests: copies of the repo, commands run as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

# A small slice of digits and a short training: the whole pipeline in well under a minute.
SLICE = {
    "data": {"max_rows": 600},
    "train": {
        "epochs": 40,
        "early_stopping": {"patience": 0},
        "model": {"mlp": {"hidden_sizes": [64]}},
    },
}


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: this interpreter's bin first, no MLOPS_/DVC_ leaks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def copy_repo(dest: Path, params: dict[str, Any] | None = None) -> Path:
    """Copy the tracked and unignored files of the repo to `dest`, override params, and
    commit it as a fresh git repo (DVC and the lineage tags need one)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if params:
        current = yaml.safe_load((dest / "params.yaml").read_text())
        (dest / "params.yaml").write_text(yaml.safe_dump(_merge(current, params), sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command as a user would, capturing its output."""
    return subprocess.run(
        cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )


def dvc_outs(project: Path) -> dict[str, str]:
    """Every output path of dvc.lock with its md5."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }


def point_at_file(project: Path, file: str, target: str, name: str | None = None) -> None:
    """Edit params.yaml as a user would (in place, comments kept) to read
    `data/external/<file>` with `target` as its target column, optionally renaming the
    pipeline (and so its experiment and registered model)."""
    path = project / "params.yaml"
    text = path.read_text()
    text = text.replace("source: builtin:digits", f"source: data/external/{file}", 1)
    text = text.replace("target: target", f"target: {target}", 1)
    if name is not None:
        text = text.replace("name: digits", f"name: {name}", 1)
    path.write_text(text)


def assert_plots(data: dict[str, Any], epochs: int, score: str) -> None:
    """`dvc plots show --json`'s data holds the plots of either task, none of them empty:
    the losses and the validation score per epoch, the confusion matrix (of classes, or of
    the target's bins for a regression) and the two images."""
    for name in ("losses", "val_score", "reports/confusion.json"):
        assert [p["type"] for p in data.get(name, [])] == ["vega"], name
        assert data[name][0]["content"]["data"]["values"], f"{name}: no data"
    scores = data["val_score"][0]["content"]["data"]["values"]
    assert len(scores) == epochs and all(v["metric"] == score for v in scores), scores[:2]
    for name in ("reports/plots/test_predictions.png", "reports/plots/learning_curves.png"):
        assert [p["type"] for p in data.get(name, [])] == ["image"], name

"""The import contract of `make lint` (import-linter, `[tool.importlinter]` in
pyproject.toml) holds on the code, and fails naming the chain when an upward import is
planted in a copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def _copy(dest: Path) -> Path:
    for name in ("platform", "registry", "pipelines"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{root / 'platform'}{os.pathsep}{root}"}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_code_keeps_its_layers_and_an_upward_import_breaks_them(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    kept = _lint(root)
    assert kept.returncode == 0, kept.stdout[-3000:] + kept.stderr[-3000:]
    assert "0 broken" in kept.stdout
    # The training engine reaching up into serving: the contract names the import.
    engine = root / "platform" / "mlops" / "training.py"
    engine.write_text(engine.read_text() + "\nimport mlops.serving.app  # planted\n")
    broken = _lint(root)
    assert broken.returncode == 1, broken.stdout[-3000:]
    assert "mlops.training -> mlops.serving.app" in broken.stdout


def test_the_registry_never_imports_tuning(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    gates = root / "registry" / "gates.py"
    gates.write_text(gates.read_text() + "\nimport mlops.tuning.objective  # planted\n")
    broken = _lint(root)
    assert broken.returncode == 1, broken.stdout[-3000:]
    assert "registry.gates -> mlops.tuning.objective" in broken.stdout

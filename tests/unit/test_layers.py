"""The import contract of `make lint` (import-linter, `[tool.importlinter]` in
pyproject.toml) holds on the code, and fails naming the chain when an upward import is
planted in a copy of it; and no modules import each other in a circle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

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


def _cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (Tarjan's strongly
    connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in imports[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_in_a_circle() -> None:
    """Every first-party import counts, lazy ones inside functions too."""
    graph = grimp.build_graph("mlops", "registry", "pipelines", cache_dir=None)
    imports = {
        m: {d for d in graph.find_modules_directly_imported_by(m) if d in graph.modules}
        for m in graph.modules
    }
    assert _cycles(imports) == []


def test_a_circle_is_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

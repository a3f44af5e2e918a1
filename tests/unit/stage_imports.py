"""The first-party code each `dvc.yaml` stage runs, read from the source (no imports).

A stage's command is `python -m pipelines.NAME`; the code it runs is that module and,
transitively, every first-party module it imports, at module level or inside a function
(a lazy import runs too when the stage takes that path), with the `__init__.py` of every
package on the way (Python executes them), and every module it starts as a process with
`python -m NAME` (a `"-m", "NAME"` pair in an argument list; a package runs its
`__main__.py`). First-party modules live under the source
roots `platform/` (the `mlops` package), `registry/` and `pipelines/`.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

MODULE_CMD = re.compile(r"^python -m ([\w.]+)$")


def source_roots(root: Path) -> list[Path]:
    """Where first-party top-level packages are found: `platform/` and the root itself."""
    return [root / "platform", root]


def module_file(root: Path, name: str) -> Path | None:
    """The file of first-party module `name` (a package's `__init__.py`), or None."""
    parts = name.split(".")
    if parts[0] not in ("mlops", "registry", "pipelines"):
        return None
    for base in source_roots(root):
        stem = base.joinpath(*parts)
        if (stem / "__init__.py").is_file():
            return stem / "__init__.py"
        if stem.with_suffix(".py").is_file():
            return stem.with_suffix(".py")
    return None


def _package_of(root: Path, path: Path) -> str:
    """The dotted package that `path` (a module file) belongs to."""
    for base in source_roots(root):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] in ("mlops", "registry", "pipelines"):
            parts = list(rel.with_suffix("").parts)
            return ".".join(parts if path.name == "__init__.py" else parts[:-1])
    raise ValueError(f"{path} is not first-party")


def imported_names(root: Path, path: Path) -> set[str]:
    """Every dotted module name that `path` imports (candidates: `from a import b` yields
    both `a` and `a.b`, since `b` may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(root, path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.List | ast.Tuple):
            names.update(_launched(node.elts))
    return names


def _launched(items: list[ast.expr]) -> set[str]:
    """The modules an argument list starts: `"-m", "NAME"` gives NAME and NAME.__main__."""
    words = [e.value if isinstance(e, ast.Constant) else None for e in items]
    return {
        name
        for flag, module in itertools.pairwise(words)
        if flag == "-m" and isinstance(module, str)
        for name in (module, f"{module}.__main__")
    }


def _with_parents(name: str) -> Iterable[str]:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def stage_files(root: Path, module: str) -> set[Path]:
    """The first-party files that running `python -m module` executes (transitively)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for candidate in _with_parents(name):
            path = module_file(root, candidate)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_names(root, path))
    return seen


def covered(path: Path, deps: Iterable[Path]) -> bool:
    """Whether a dep is `path` itself or a folder holding it."""
    return any(path == dep or dep in path.parents for dep in deps)


def missing_deps(root: Path, dvc_yaml: Path | None = None) -> dict[str, list[str]]:
    """For each stage of `dvc.yaml`, the first-party files its command runs that its `deps`
    do not cover (relative paths, sorted); stages with none missing are left out."""
    config: dict[str, Any] = yaml.safe_load((dvc_yaml or root / "dvc.yaml").read_text())
    missing: dict[str, list[str]] = {}
    for stage, spec in config["stages"].items():
        match = MODULE_CMD.match(spec["cmd"].strip())
        if match is None:
            raise ValueError(f"stage {stage}: command {spec['cmd']!r} is not python -m MODULE")
        deps = [root / str(d) for d in spec.get("deps", [])]
        runs = stage_files(root, match.group(1))
        if not runs:
            raise ValueError(f"stage {stage}: module {match.group(1)} not found")
        lacking = sorted(str(p.relative_to(root)) for p in runs if not covered(p, deps))
        if lacking:
            missing[stage] = lacking
    return missing

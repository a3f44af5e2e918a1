"""Lineage facts: git commit and dirty flag, DVC hashes of data files, params hash, and
the DVC experiment a model was trained in."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops import safe_yaml
from mlops.errors import UserError
from mlops.io import file_digest
from mlops.params import PARAMS_FILE

# Set by DVC for the stages of `dvc exp run` (dvc.env; https://dvc.org/doc/user-guide/env).
EXP_NAME_ENV = "DVC_EXP_NAME"
EXP_BASELINE_ENV = "DVC_EXP_BASELINE_REV"
MAX_TAG_CHARS = 5000

# Files the pipeline itself rewrites while it runs: not a sign of uncommitted code.
_PIPELINE_WRITTEN = (":(exclude)dvc.lock", ":(exclude,glob)**/.gitignore")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(root: Path) -> str:
    """HEAD's commit hash, or `unknown` outside a git repository or before the first commit."""
    return _git(root, "rev-parse", "HEAD") or "unknown"


def git_dirty(root: Path, ignored: tuple[str, ...] = ()) -> bool:
    """True when tracked files differ from HEAD (dvc.lock and .gitignore files excepted,
    and the paths in `ignored`, relative to `root`)."""
    excluded = [*_PIPELINE_WRITTEN, *(f":(exclude){path}" for path in ignored)]
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    return bool(status)


def dvc_md5(path: str | Path) -> str:
    """The hash DVC 3 records for a file output (plain md5 of the bytes)."""
    return file_digest(path, "md5")


def params_hash(params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of every param."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def data_hashes(files: dict[str, Path]) -> dict[str, str]:
    """DVC md5 of each named data file."""
    return {name: dvc_md5(path) for name, path in files.items()}


def exp_ref(baseline: str, name: str) -> str:
    """The git ref DVC commits an experiment to when it ends (its `ExpRefInfo`)."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat |= flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return flat
    return {prefix: value} if prefix else {}


def params_diff(before: Any, after: Any) -> dict[str, Any]:
    """The dotted keys whose values differ between two params documents, with the value
    in `after` (None for a key it lacks); lists are compared whole."""
    old, new = flatten(before), flatten(after)
    missing = object()
    changed = {}
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, missing), new.get(key, missing)
        if type(a) is not type(b) or a != b:
            changed[key] = None if b is missing else b
    return changed


def _changed_params(where: Path, baseline: str, params_file: Path) -> str:
    """JSON of the params that differ from `params_file` in the baseline commit."""
    shown = f"{baseline[:12]}:{params_file.name}"
    try:
        after = safe_yaml.load(params_file)
        committed = _git(where, "show", f"{baseline}:./{params_file.name}")
        before = safe_yaml.parse(committed, shown) if committed is not None else {}
    except UserError as exc:
        return f"unknown: {exc}"
    text = json.dumps(params_diff(before, after), sort_keys=True, default=str)
    if len(text) > MAX_TAG_CHARS:  # values too long for a tag: the keys alone
        text = json.dumps(sorted(params_diff(before, after)))[:MAX_TAG_CHARS]
    return text


def lineage_tags(
    root: Path,
    params: dict[str, Any],
    params_file: Path = Path(PARAMS_FILE),
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The git and params facts of a model version's lineage, as tags.

    Always `mlops.git_commit`, `mlops.git_dirty` and `mlops.params_hash`. In a stage of
    `dvc exp run` (DVC sets `DVC_EXP_NAME` and `DVC_EXP_BASELINE_REV`) also the experiment:
    `mlops.dvc_exp.name`, `mlops.dvc_exp.ref` (the ref DVC commits it to when it ends, with
    every change of the workspace) and `mlops.dvc_exp.params` (JSON of the params whose
    values differ from `params.yaml` in the baseline commit). In an experiment the commit
    is its baseline, and the working tree checked for changes is the one the stage runs
    in (a `--temp` or queued experiment runs in a copy, not in `root`); params.yaml's
    changes are recorded in full, so they alone do not make it dirty.
    """
    env = os.environ if env is None else env
    name = env.get(EXP_NAME_ENV, "").strip()
    if not name:
        return {
            "mlops.git_commit": git_commit(root),
            "mlops.git_dirty": str(git_dirty(root)).lower(),
            "mlops.params_hash": params_hash(params),
        }
    where = params_file.resolve().parent
    baseline = env.get(EXP_BASELINE_ENV, "").strip() or git_commit(where)
    return {
        "mlops.git_commit": baseline,
        "mlops.git_dirty": str(git_dirty(where, (params_file.name,))).lower(),
        "mlops.params_hash": params_hash(params),
        "mlops.dvc_exp.name": name,
        "mlops.dvc_exp.ref": exp_ref(baseline, name),
        "mlops.dvc_exp.params": _changed_params(where, baseline, params_file),
    }

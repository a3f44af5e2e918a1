"""Lineage facts: git commit and dirty flag, DVC hashes of data files, params hash."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from mlops.io import file_digest

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


def git_dirty(root: Path) -> bool:
    """True when tracked files differ from HEAD (dvc.lock and .gitignore files excepted)."""
    status = _git(
        root, "status", "--porcelain", "--untracked-files=no", "--", ".", *_PIPELINE_WRITTEN
    )
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

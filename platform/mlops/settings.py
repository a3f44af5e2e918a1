"""Where things live: stores and artifact root from `MLOPS_*` environment variables.

Embedded defaults sit under `<project root>/.mlops`; every path is resolved to an
absolute one, relative values are taken from the project root (never the cwd), so
copies of the repo (`dvc exp run --temp/--queue`) log into the same stores.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ENV_PREFIX = "MLOPS_"
SettingsKind = Literal["home", "tracking_uri", "artifact_root", "optuna_storage", "database_url"]


def find_project_root(start: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The repository the stores belong to.

    `DVC_ROOT` wins (DVC sets it for stage commands, and for `--temp`/`--queue`
    experiments points it at the parent repo); otherwise the nearest ancestor with a
    `.dvc/` folder, skipping DVC's own temporary experiment copies; otherwise `start`.
    """
    env = os.environ if env is None else env
    if env.get("DVC_ROOT"):
        return Path(env["DVC_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    marker = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep
    text = str(here) + os.sep
    if marker in text:
        return Path(text.split(marker, 1)[0])
    for candidate in (here, *here.parents):
        if (candidate / ".dvc").is_dir():
            return candidate
    return here


def _sqlite_url(value: str, base: Path) -> str:
    if value.startswith("sqlite:///"):
        raw = value.removeprefix("sqlite:///")
        if raw.startswith("/") or raw == ":memory:":
            return value
        return f"sqlite:///{(base / raw).resolve()}"
    if "://" in value:
        return value
    return f"sqlite:///{(base / value).resolve()}"


def _file_uri(value: str, base: Path) -> str:
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", value) and not value.startswith("file:"):
        return value  # s3://, gs://, mlflow-artifacts:/ (an MLflow server's proxied store)
    if value.startswith("file://"):
        raw = value.removeprefix("file://")
        return (
            Path(raw).resolve().as_uri() if raw.startswith("/") else (base / raw).resolve().as_uri()
        )
    if "://" in value:
        return value
    return (base / value).resolve().as_uri()


def _artifact_root(value: str, tracking: str, home: Path, root: Path) -> str:
    """Explicit value first; with a tracking server, the server's own artifact store
    (`mlflow-artifacts:/`, proxied, so every host reads the same files); else local."""
    if value:
        return _file_uri(value, root)
    if tracking.startswith(("http://", "https://")):
        return "mlflow-artifacts:/"
    return _file_uri(str(home / "artifacts"), root)


@dataclass(frozen=True)
class Settings:
    """Where things live. Read from `MLOPS_*` variables; embedded defaults under `home`."""

    root: Path
    home: Path
    tracking_uri: str
    artifact_root: str
    optuna_storage: str
    database_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        """Build settings; relative paths are taken from the project root, never the cwd."""
        env = os.environ if env is None else env
        root = find_project_root(cwd, env)
        home_raw = env.get(f"{ENV_PREFIX}HOME", "").strip()
        home = (root / home_raw).resolve() if home_raw else root / ".mlops"
        get = lambda key: env.get(f"{ENV_PREFIX}{key}", "").strip()  # noqa: E731
        return cls(
            root=root,
            home=home,
            tracking_uri=_sqlite_url(get("TRACKING_URI") or str(home / "mlflow.db"), root),
            artifact_root=_artifact_root(get("ARTIFACT_ROOT"), get("TRACKING_URI"), home, root),
            optuna_storage=_sqlite_url(get("OPTUNA_STORAGE") or str(home / "optuna.db"), root),
            database_url=_sqlite_url(get("DATABASE_URL") or str(home / "mlops.db"), root),
        )

    @property
    def embedded(self) -> bool:
        """True when tracking runs on the local SQLite file (no server to start)."""
        return self.tracking_uri.startswith("sqlite:")

    def as_dict(self) -> dict[str, str]:
        """Values for display, with any password in a URL redacted."""
        return {
            "root": str(self.root),
            "home": str(self.home),
            "tracking_uri": redact(self.tracking_uri),
            "artifact_root": redact(self.artifact_root),
            "optuna_storage": redact(self.optuna_storage),
            "database_url": redact(self.database_url),
        }


def redact(url: str) -> str:
    """Hide the password in `scheme://user:password@host/...` (the password may hold
    `/` or `@`: the host starts after the last `@` of the URL, as SQLAlchemy reads it)."""
    return re.sub(r"^([A-Za-z][\w+.-]*://[^:/@]*):.*@(?=[^@]*$)", r"\1:***@", url)

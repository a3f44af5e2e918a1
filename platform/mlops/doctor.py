"""Environment checks behind `mlops doctor`: versions, stores, the `platform` shadow, DVC."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from mlops import tracking
from mlops.errors import MlopsError, UserError, first_line
from mlops.params import PARAMS_FILE, load_params
from mlops.schemas import status
from mlops.settings import Settings, redact

# distribution -> (required major.minor prefix or exact version, how to describe it)
REQUIRED = {
    "torch": "2.13.0",
    "mlflow": "3.",
    "optuna": "5.",
    "dvc": "3.",
    "sqlalchemy": "2.",
    "alembic": "1.",
    "pydantic": "2.",
}


@dataclass(frozen=True)
class Check:
    """One doctor check."""

    name: str
    ok: bool
    detail: str


def check_versions() -> list[Check]:
    """Each key dependency is installed at a supported version."""
    checks = []
    for dist, wanted in REQUIRED.items():
        try:
            found = version(dist).split("+")[0]
        except PackageNotFoundError:
            checks.append(Check(f"package {dist}", False, f"not installed (want {wanted}*)"))
            continue
        ok = found.startswith(wanted) if wanted.endswith(".") else found == wanted
        checks.append(Check(f"package {dist}", ok, found if ok else f"{found} (want {wanted}*)"))
    return checks


def check_platform_module() -> Check:
    """`import platform` must be the standard library's module, not our source root."""

    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    where = Path(platform.__file__ or "").resolve()
    ok = stdlib in where.parents
    return Check("platform module", ok, str(where) if ok else f"shadowed by {where}")


def check_python() -> Check:
    """Python 3.11 or 3.12."""
    ok = (3, 11) <= sys.version_info[:2] < (3, 13)
    return Check("python", ok, sys.version.split()[0])


def check_dvc(settings: Settings) -> Check:
    """The project root holds an initialised DVC repository."""
    ok = (settings.root / ".dvc" / "config").is_file()
    return Check(
        "dvc repository",
        ok,
        str(settings.root) if ok else f"no .dvc/config in {settings.root} (`dvc init`)",
    )


def check_params(settings: Settings) -> Check:
    """params.yaml parses and validates."""
    try:
        load_params(settings.root / PARAMS_FILE)
    except UserError as exc:
        return Check("params.yaml", False, str(exc))
    return Check("params.yaml", True, "valid")


def _sqlite_check(path: Path) -> tuple[bool, str]:
    if path.exists():
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
                conn.execute("select count(*) from sqlite_master").fetchone()
        except sqlite3.Error as exc:
            return False, f"{path}: {exc}"
        return True, f"{path} (exists)"
    parent = next((p for p in (path.parent, *path.parents) if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK):
        return False, f"{path}: cannot create (folder not writable)"
    return True, f"{path} (created on first use)"


def _sql_check(url: str) -> tuple[bool, str]:
    if url.startswith("sqlite:///"):
        return _sqlite_check(Path(url.removeprefix("sqlite:///")))

    engine_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        engine = create_engine(engine_url, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except (SQLAlchemyError, ImportError) as exc:
        return False, f"{redact(url)}: {redact(first_line(exc))}"
    finally:
        if "engine" in locals():
            engine.dispose()
    return True, redact(url)


def _http_check(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5) as response:
            return response.status == 200, f"{redact(url)} (HTTP {response.status})"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{redact(url)}: {exc}"


def check_store(name: str, url: str) -> Check:
    """A tracking or database URL answers (SQLite file usable, server reachable)."""
    checker: Callable[[str], tuple[bool, str]] = (
        _http_check if url.startswith(("http://", "https://")) else _sql_check
    )
    ok, detail = checker(url)
    return Check(name, ok, detail)


def check_artifacts(url: str, tracking_uri: str = "") -> Check:
    """A local artifact root is a writable folder (or can be made), and never one on this
    machine's disk while tracking goes through a server."""
    if not url.startswith("file://"):
        return Check("artifact root", True, f"{redact(url)} (remote, not checked)")
    if tracking_uri.startswith(("http://", "https://")):
        return Check(
            "artifact root",
            False,
            f"{url}: on this machine's disk while tracking goes through {redact(tracking_uri)}; "
            "unset MLOPS_ARTIFACT_ROOT (the server stores artifacts) or use s3://, gs://, …",
        )
    path = Path(url.removeprefix("file://"))
    parent = next((p for p in (path, *path.parents) if p.exists()), None)
    ok = parent is not None and os.access(parent, os.W_OK)
    return Check("artifact root", ok, str(path) if ok else f"{path}: not writable")


def check_schemas(settings: Settings, unreachable: frozenset[str] = frozenset()) -> list[Check]:
    """Each SQL store's schema revision is the one this code expects (or not made yet);
    stores in `unreachable` were reported already and are left out."""

    try:
        found = status(settings)
    except (MlopsError, ImportError, OSError) as exc:
        return [Check("schemas", False, first_line(exc))]
    checks = []
    for s in found:
        if s.error is not None and s.url in unreachable:
            continue
        if s.error is not None:
            detail = s.error
        elif s.current is None:
            detail = f"not created yet (created on first use, revision {s.head})"
        elif s.ok:
            detail = f"revision {s.current} (current)"
        else:
            detail = f"revision {s.current}, this code expects {s.head}: run `mlops db upgrade`"
        checks.append(Check(f"schema: {s.name}", s.ok, detail))
    return checks


def check_experiments(settings: Settings) -> list[Check]:
    """Through a tracking server: each experiment's artifact location is the server's (or
    another shared store), never a path on a client's disk (an experiment made in embedded
    mode keeps its local location: runs through the server would write there)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = settings.tracking_uri
    try:
        found = MlflowClient(tracking_uri=uri).search_experiments(max_results=1000)
    except MlflowException as exc:
        return [Check("experiments", False, f"{redact(uri)}: {redact(first_line(exc))[:200]}")]
    checks = []
    for e in found:
        # mlops never logs to MLflow's Default experiment; a moved one is kept on purpose.
        if not tracking.local_artifacts(e.artifact_location) or e.experiment_id == "0":
            continue
        if e.name.endswith(tracking.MOVED_SUFFIX):
            detail = f"kept from embedded mode; its files stay in {e.artifact_location}"
            checks.append(Check(f"experiment {e.name}", True, detail))
            continue
        detail = (
            f"artifacts in {e.artifact_location}, on this machine's disk (made in embedded "
            "mode); runs through the server would write there: "
            + tracking.move_hint(settings, e.name, e.experiment_id)
        )
        checks.append(Check(f"experiment {e.name}", False, detail))
    if not [c for c in checks if not c.ok]:
        checks.append(Check("experiments", True, "artifacts go through the server (or remote)"))
    return checks


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in display order (an unreachable store is reported once)."""
    stores = {
        "tracking store": settings.tracking_uri,
        "optuna storage": settings.optuna_storage,
        "platform database": settings.database_url,
    }
    reached = {name: check_store(name, url) for name, url in stores.items()}
    unreachable = frozenset(stores[name] for name, check in reached.items() if not check.ok)
    tracked = reached["tracking store"]
    server = tracked.ok and tracking.through_server(settings)
    return [
        check_python(),
        check_platform_module(),
        *check_versions(),
        check_dvc(settings),
        check_params(settings),
        tracked,
        check_artifacts(settings.artifact_root, settings.tracking_uri),
        *(check_experiments(settings) if server else []),
        reached["optuna storage"],
        reached["platform database"],
        *check_schemas(settings, unreachable),
    ]

"""The registry's edge to MLflow's model registry: aliases, version tags, artifacts.

Every call is idempotent, so a repair can replay it. MLflow's deprecated stage API
is never used: a stage is an alias of the same name plus the `mlops.stage` tag.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mlops import tracking
from mlops.errors import StoreError, UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

STAGE_TAG = "mlops.stage"


@dataclass(frozen=True)
class MlflowVersion:
    """A model version as MLflow holds it."""

    name: str
    version: int
    run_id: str
    source: str
    status: str
    created_at: float
    tags: dict[str, str]


def client() -> MlflowClient:
    """A client on the tracking URI set by `mlops.tracking.connect`."""
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _missing(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or (
        "not found" in str(exc).lower()
    )


def aliases(name: str) -> dict[str, int]:
    """Alias → version of a registered model (`search_model_versions` returns none)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client().get_registered_model(name)
    except MlflowException as exc:
        if _missing(exc):
            return {}
        raise
    return {alias: int(v) for alias, v in (model.aliases or {}).items()}


def get_version(name: str, version: int) -> MlflowVersion | None:
    """One version from MLflow, or None."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client().get_model_version(name, str(version))
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise
    return _convert(mv)


def _convert(mv: Any) -> MlflowVersion:
    return MlflowVersion(
        mv.name,
        int(mv.version),
        mv.run_id or "",
        mv.source or "",
        str(mv.status),
        (mv.creation_timestamp or 0) / 1000.0,
        dict(mv.tags or {}),
    )


def all_versions(name: str) -> list[MlflowVersion]:
    """Every version of a model, oldest first."""
    found = client().search_model_versions(f"name = '{name}'", max_results=200_000)
    return sorted((_convert(mv) for mv in found), key=lambda v: v.version)


def set_tags(name: str, version: int, tags: dict[str, str]) -> None:
    """Set tags on a version."""
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, value)


def _inside(uri: str, root: str) -> bool:
    """Whether `uri` lies inside `root` (local paths resolved, links followed; other
    schemes compared by scheme, host and path, no `..`)."""

    u, r = urlparse(uri), urlparse(root)
    if u.scheme in ("", "file") and r.scheme in ("", "file"):
        if u.netloc not in ("", "localhost") or r.netloc not in ("", "localhost"):
            return False
        local, local_root = Path(unquote(u.path)).resolve(), Path(unquote(r.path)).resolve()
        return local.is_relative_to(local_root)
    if (u.scheme, u.netloc) != (r.scheme, r.netloc):
        return False
    path, base = PurePosixPath(unquote(u.path) or "/"), PurePosixPath(unquote(r.path) or "/")
    return ".." not in path.parts and path.is_relative_to(base)


def allowed_roots(run_id: str) -> list[str]:
    """Where a version's files may come from: the configured artifact root, and the
    artifact location of the experiment of the run that logged it."""
    from mlflow.exceptions import MlflowException

    roots = [r for r in (tracking.artifact_root(),) if r]
    if run_id:
        try:
            run = client().get_run(run_id)
            roots.append(client().get_experiment(run.info.experiment_id).artifact_location)
        except MlflowException:
            pass
    return roots


def check_location(name: str, version: int, uri: str, run_id: str) -> None:
    """Refuse a version whose files live outside the artifact store (a source such as
    `/etc/ssl` or `/`, set through MLflow's API) before anything is copied."""
    bad = not uri or any(part in uri for part in ("\\", "\x00"))
    if bad or not any(_inside(uri, root) for root in allowed_roots(run_id)):
        raise UserError(
            f"model {name} version {version}: its source {uri!r} is outside the artifact "
            "store; refusing to read it"
        )


def download(name: str, version: int, dest: Path) -> Path:
    """Copy a version's model files into `dest` and return that folder.

    Refuses sources outside the artifact store (before any copy) and files that resolve
    outside `dest`.
    """
    import mlflow.artifacts

    mv = client().get_model_version(name, str(version))
    uri = client().get_model_version_download_uri(name, str(version))
    check_location(name, version, uri, mv.run_id or "")
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except Exception as exc:  # mlflow raises several unrelated types for a missing artifact
        raise StoreError(f"model {name} version {version}: artifacts unreadable: {exc}") from None
    root = dest.resolve()
    for path in local.rglob("*"):
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            shutil.rmtree(dest, ignore_errors=True)
            raise UserError(f"model {name} version {version}: {path.name} points outside")
    return local


def run_data(run_id: str) -> tuple[dict[str, str], dict[str, float]]:
    """Params and latest metrics of a run (empty when the run is gone)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}, {}
    try:
        run = client().get_run(run_id)
    except MlflowException:
        return {}, {}
    return dict(run.data.params), dict(run.data.metrics)


def log_artifacts(run_id: str, local_dir: Path, artifact_path: str) -> str:
    """Upload a folder's files under `artifact_path` of a run; return its `runs:/` URI."""
    client().log_artifacts(run_id, str(local_dir), artifact_path)
    return f"runs:/{run_id}/{artifact_path}"


def download_artifact(uri: str, dest: Path) -> Path:
    """Download one artifact (`runs:/RUN/PATH`) into `dest`; one line if it is unreadable."""
    import mlflow.artifacts

    if not uri.startswith("runs:/") or any(p in uri for p in ("..", "%2e", "%2E", "\\", "\x00")):
        raise UserError(f"refusing artifact location {uri!r}")
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except Exception as exc:  # mlflow raises several unrelated types for a missing artifact
        raise StoreError(f"{uri}: artifact unreadable: {exc}") from None


def set_description(name: str, version: int, text: str) -> None:
    """The version's description (Markdown: the MLflow UI shows it on the version page)."""
    client().update_model_version(name, str(version), description=text)

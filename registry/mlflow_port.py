"""The registry's edge to MLflow's model registry: aliases, version tags, artifacts.

Every call is idempotent, so a repair can replay it. MLflow's deprecated stage API
is never used: a stage is an alias of the same name plus the `mlops.stage` tag.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def move_stage(
    name: str,
    version: int,
    stage: str,
    exclusive: bool,
    vacated: str | None,
    displaced: int | None,
    displaced_to: str,
) -> None:
    """Give `version` the stage (alias moved atomically by MLflow), drop the alias of the
    stage it leaves, and retag the version it displaced."""
    from mlflow.exceptions import MlflowException

    c = client()
    if exclusive:
        c.set_registered_model_alias(name, stage, str(version))
    if vacated is not None and vacated != stage:
        try:
            c.delete_registered_model_alias(name, vacated)
        except MlflowException as exc:
            if not _missing(exc):
                raise
    c.set_model_version_tag(name, str(version), STAGE_TAG, stage)
    if displaced is not None and displaced != version:
        c.set_model_version_tag(name, str(displaced), STAGE_TAG, displaced_to)


def set_tags(name: str, version: int, tags: dict[str, str]) -> None:
    """Set tags on a version."""
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, value)


def download(name: str, version: int, dest: Path) -> Path:
    """Copy a version's model files into `dest` and return that folder.

    Refuses sources outside the artifact store and files that resolve outside `dest`.
    """
    import mlflow.artifacts

    uri = client().get_model_version_download_uri(name, str(version))
    if not uri or any(part in uri for part in ("/../", "%2e%2e", "%2E%2E", "\\", "\x00")):
        raise UserError(f"model {name} version {version}: refusing artifact location {uri!r}")
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

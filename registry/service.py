"""Registering models: log with the MLflow PyTorch flavor, create a version, tag its lineage.

Registration is idempotent by content: a model whose weights' sha256 already has a
version under the same name gets that version back instead of a duplicate, so a
register stage killed half-way and run again repairs rather than duplicates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from typing import TYPE_CHECKING, Any

from mlops.errors import StoreError
from mlops.tracking import TAG_MODEL_SHA

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

STAGE_TAG = "mlops.stage"
NO_STAGE = "none"


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version in the registry."""

    name: str
    version: str
    run_id: str
    source: str
    sha256: str
    reused: bool


def pip_requirements() -> list[str]:
    """Exact pins for the environment that loads the model (no local `+cpu` suffix)."""
    pins = []
    for dist in ("torch", "numpy", "mlflow"):
        pins.append(f"{dist}=={dist_version(dist).split('+')[0]}")
    return pins


def find_version_by_sha(name: str, sha256: str) -> RegisteredVersion | None:
    """An existing, non-deleted version of `name` whose weights have this sha256."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        found = client.search_model_versions(
            f"name = '{name}' and tags.`{TAG_MODEL_SHA}` = '{sha256}'"
        )
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
            return None
        raise
    ready = [mv for mv in found if mv.status == "READY"]
    if not ready:
        return None
    mv = min(ready, key=lambda m: int(m.version))
    return RegisteredVersion(
        mv.name, str(mv.version), mv.run_id or "", mv.source or "", sha256, True
    )


def _wait_ready(name: str, version: str, timeout: float = 120.0) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise StoreError(f"model {name} version {version}: registration ended {status}")
        time.sleep(0.5)


def register_model(
    model: nn.Module,
    name: str,
    sha256: str,
    example: np.ndarray,
    tags: dict[str, Any],
    description: str = "",
) -> RegisteredVersion:
    """Log `model` in the active MLflow run and register it as a new version of `name`.

    `example` (a batch of at least 2 rows) becomes the input example and signature.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    existing = find_version_by_sha(name, sha256)
    if existing is not None:
        return existing
    if len(example) < 2:
        raise ValueError("the input example needs a batch of at least 2 rows")
    import torch

    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        input_example=example,
        signature=infer_signature(example, output),
        pip_requirements=pip_requirements(),
    )
    all_tags = {k: str(v) for k, v in tags.items()} | {TAG_MODEL_SHA: sha256, STAGE_TAG: NO_STAGE}
    client = MlflowClient()
    if not client.search_registered_models(f"name = '{name}'"):
        try:
            client.create_registered_model(name, description=description or None)
        except mlflow.exceptions.MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
    run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    mv = client.create_model_version(name, info.model_uri, run_id=run_id, tags=all_tags)
    _wait_ready(name, str(mv.version))
    return RegisteredVersion(name, str(mv.version), run_id, info.model_uri, sha256, False)


@dataclass(frozen=True)
class VersionRow:
    """A model version as listed: number, stage, aliases, key metric, lineage basics."""

    name: str
    version: str
    stage: str
    aliases: list[str]
    test_accuracy: str
    git_commit: str
    created: int


def list_versions(name: str | None = None) -> list[VersionRow]:
    """Every version of one model (or of all models), newest first. Aliases are read from
    the registered model, as `search_model_versions` does not return them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    models = client.search_registered_models(f"name = '{name}'" if name else None)
    rows: list[VersionRow] = []
    for model in models:
        aliases: dict[str, list[str]] = {}
        for alias, ver in (model.aliases or {}).items():
            aliases.setdefault(str(ver), []).append(alias)
        for mv in client.search_model_versions(f"name = '{model.name}'"):
            tags = mv.tags or {}
            rows.append(
                VersionRow(
                    name=mv.name,
                    version=str(mv.version),
                    stage=tags.get(STAGE_TAG, NO_STAGE),
                    aliases=sorted(aliases.get(str(mv.version), [])),
                    test_accuracy=tags.get("mlops.metric.test_accuracy", ""),
                    git_commit=tags.get("mlops.git_commit", "")[:10],
                    created=int(mv.creation_timestamp or 0),
                )
            )
    return sorted(rows, key=lambda r: (r.name, -int(r.version)))

"""Registering models: log with the MLflow PyTorch flavor (plus the safetensors weights),
create a version, record it and its lineage in the registry's store and ledger.

Registration is idempotent by content: weights whose sha256 already has a version
under the same name get that version back, so a killed register stage re-run repairs
rather than duplicates. MLflow numbers versions itself, so concurrent registrations
of one model get distinct numbers.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.errors import DataError, StoreError, UserError
from mlops.registry_params import NO_STAGE
from mlops.tracking import TAG_MODEL_SHA
from registry import mlflow_port
from registry.context import Context
from registry.db.store import Entry, Version
from registry.mlflow_port import STAGE_TAG

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

TAG_ARTIFACT_SHA = "mlops.artifact_sha256"


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
    return [f"{d}=={dist_version(d).split('+')[0]}" for d in ("torch", "numpy", "mlflow")]


def _record(ctx: Context, mv: mlflow_port.MlflowVersion, reason: str) -> Version:
    tags = mv.tags
    info: dict[str, Any] = {
        k: v for k, v in tags.items() if k.startswith("mlops.") and k != STAGE_TAG
    }
    params, _ = mlflow_port.run_data(tags.get("mlops.train_run_id") or mv.run_id)
    info["params"] = params
    record = Version(
        model=mv.name,
        version=mv.version,
        run_id=mv.run_id,
        source=mv.source,
        sha256=tags.get(TAG_MODEL_SHA, ""),
        artifact_sha256=tags.get(TAG_ARTIFACT_SHA, ""),
        stage=tags.get(STAGE_TAG, NO_STAGE),
        created_at=mv.created_at,
        info=info,
    )
    entry = Entry(
        "register",
        mv.name,
        mv.version,
        NO_STAGE,
        record.stage,
        ctx.actor,
        reason,
        {"sha256": record.sha256, "run_id": mv.run_id},
    )
    ctx.store.record_version(record, entry)
    return record


def find_version_by_sha(name: str, sha256: str) -> mlflow_port.MlflowVersion | None:
    """The oldest READY version of `name` whose weights have this sha256."""
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_port.client().search_model_versions(
            f"name = '{name}' and tags.`{TAG_MODEL_SHA}` = '{sha256}'"
        )
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
            return None
        raise
    ready = sorted(int(mv.version) for mv in found if mv.status == "READY")
    return mlflow_port.get_version(name, ready[0]) if ready else None


def _wait_ready(name: str, version: int, timeout: float = 120.0) -> mlflow_port.MlflowVersion:
    deadline = time.monotonic() + timeout
    while True:
        mv = mlflow_port.get_version(name, version)
        if mv is not None and mv.status == "READY":
            return mv
        status = mv.status if mv else "missing"
        if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise StoreError(f"model {name} version {version}: registration ended {status}")
        time.sleep(0.2)


def register_model(
    ctx: Context,
    model: nn.Module,
    name: str,
    weights_dir: Path,
    sha256: str,
    example: np.ndarray,
    tags: dict[str, Any],
    description: str = "",
) -> RegisteredVersion:
    """Log `model` in the active MLflow run and register it as a new version of `name`.

    `weights_dir` holds the safetensors weights and spec the model was loaded from; they
    are logged with it, so the registry can rebuild it without unpickling anything.
    `example` (a batch of at least 2 rows) becomes the input example and signature.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    from mlops.models import SPEC_FILE, WEIGHTS_FILE
    from registry.evaluation import manifest_sha256

    existing = find_version_by_sha(name, sha256)
    if existing is not None:
        _record(ctx, existing, "found already registered")
        return RegisteredVersion(
            name, str(existing.version), existing.run_id, existing.source, sha256, True
        )
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
        extra_files=[str(weights_dir / WEIGHTS_FILE), str(weights_dir / SPEC_FILE)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp))
        artifact_sha = manifest_sha256(local)
    all_tags = {k: str(v) for k, v in tags.items()} | {
        TAG_MODEL_SHA: sha256,
        TAG_ARTIFACT_SHA: artifact_sha,
        STAGE_TAG: NO_STAGE,
    }
    client = mlflow_port.client()
    if not client.search_registered_models(f"name = '{name}'"):
        try:
            client.create_registered_model(name, description=description or None)
        except mlflow.exceptions.MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
    run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    mv = client.create_model_version(
        name, info.model_uri, run_id=run_id, tags=all_tags, model_id=info.model_id
    )
    ready = _wait_ready(name, int(mv.version))
    _record(ctx, ready, "registered")
    return RegisteredVersion(name, str(mv.version), run_id, info.model_uri, sha256, False)


def register_run(ctx: Context, run_id: str, name: str | None = None) -> RegisteredVersion:
    """Register the model a training run saved (its `weights/` artifacts), verified
    against the sha256 the run recorded, in a child `register` run."""
    import re

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from mlops import tracking
    from mlops.models import load_model
    from registry.evaluation import load_test_split
    from registry.stages import check_model_name

    if not re.fullmatch(r"[0-9a-f]{32}", run_id):
        raise UserError(f"run id {run_id!r}: expected 32 hexadecimal characters")
    ctx.connect_mlflow()
    try:
        run = mlflow_port.client().get_run(run_id)
    except MlflowException:
        raise UserError(f"run {run_id}: not found in the tracking store") from None
    sha = run.data.tags.get(TAG_MODEL_SHA)
    if not sha:
        raise UserError(f"run {run_id}: not a training run (no {TAG_MODEL_SHA} tag)")
    experiment = mlflow_port.client().get_experiment(run.info.experiment_id).name
    name = check_model_name(name or experiment)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path="weights", dst_path=tmp
                )
            )
        except Exception:
            raise UserError(f"run {run_id}: no weights/ artifacts to register") from None
        try:
            model, _spec = load_model(local, expected_sha256=sha)
        except DataError as exc:
            raise DataError(f"run {run_id}: {exc} (refused; nothing was loaded)") from None
        split = load_test_split(ctx.settings.root)
        tags = {
            k: v
            for k, v in run.data.tags.items()
            if k.startswith("mlops.") and k not in (tracking.TAG_STAGE, STAGE_TAG)
        }
        tags |= {"mlops.train_run_id": run_id, "mlops.registered_from": "run"}
        with tracking.stage_run(ctx.settings, experiment, "register", run_id, {TAG_MODEL_SHA: sha}):
            return register_model(ctx, model, name, local, sha, split.x[:8], tags)


def sync(ctx: Context, name: str) -> int:
    """Record versions of `name` that MLflow has and the registry's store lacks (registered
    outside mlops, or before the store existed), with holders from MLflow's aliases."""
    from registry.db.store import Change

    ctx.connect_mlflow()
    known = {v.version for v in ctx.store.versions(name)}
    added = 0
    for mv in mlflow_port.all_versions(name):
        if mv.version not in known and mv.status == "READY":
            _record(ctx, mv, "synced from MLflow")
            added += 1
    holders = ctx.store.holders(name)
    for alias, version in mlflow_port.aliases(name).items():
        if (
            ctx.policy.exclusive(alias)
            and alias in ctx.policy.stages
            and holders.get(alias) != version
        ):
            entry = Entry("sync", name, version, NO_STAGE, alias, ctx.actor, "alias set in MLflow")
            ctx.store.apply(Change(name, version, NO_STAGE, alias, True), entry)
    return added

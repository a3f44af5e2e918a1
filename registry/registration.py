"""Registering models: log with the MLflow PyTorch flavor (plus the safetensors weights),
create a version, record it and its lineage in the registry's store and ledger.

Registration is idempotent by content: weights whose sha256 already has a version
under the same name get that version back, so a killed register stage re-run repairs
rather than duplicates. MLflow numbers versions itself, so concurrent registrations
of one model get distinct numbers.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops import tracking
from mlops.errors import DataError, StoreError, UserError
from mlops.images.format import encode_png
from mlops.io import read_json
from mlops.models import SPEC_FILE, WEIGHTS_FILE, ModelSpec, load_model
from mlops.params import NO_STAGE
from mlops.predictions import answer, labels
from mlops.tracking import TAG_MODEL_SHA
from registry import integrity, mlflow_port
from registry.card import render_card
from registry.context import Context
from registry.db.store import Change, Entry, Version, lock_name
from registry.evaluation import load_test_split
from registry.mlflow_port import STAGE_TAG
from registry.stages import check_model_name

if TYPE_CHECKING:
    from torch import nn

TAG_ARTIFACT_SHA = "mlops.artifact_sha256"
TAG_LINEAGE = "mlops.lineage"
# Tags that stay tags of their own on a version (the MLflow UI shows them at a glance);
# every other lineage fact goes into the one `mlops.lineage` JSON tag.
OWN_TAGS = ("mlops.role", "mlops.challenger_of")


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
    names = ("torch", "numpy", "pandas", "safetensors", "mlflow")
    return [f"{d}=={dist_version(d).split('+')[0]}" for d in names]


def version_info(tags: dict[str, str]) -> dict[str, Any]:
    """The registry's record of a version's facts, from its MLflow tags: the lineage JSON
    unpacked, plus every other `mlops.*` tag but the stage (older versions carry each
    fact as a tag of its own)."""
    info: dict[str, Any] = {
        k: v
        for k, v in tags.items()
        if k.startswith("mlops.") and k not in (STAGE_TAG, TAG_LINEAGE)
    }
    try:
        lineage = json.loads(tags.get(TAG_LINEAGE) or "{}")
    except ValueError:
        lineage = {}
    if isinstance(lineage, dict):
        info |= {str(k): str(v) for k, v in lineage.items()}
    return info


def _record(ctx: Context, mv: mlflow_port.MlflowVersion, reason: str) -> Version:
    tags = mv.tags
    info = version_info(tags)
    params, _ = mlflow_port.run_data(info.get("mlops.train_run_id") or mv.run_id)
    info["params"] = params
    files = integrity.recorded(info)
    artifact_sha = tags.get(TAG_ARTIFACT_SHA) or (integrity.digest(files) if files else "")
    record = Version(
        model=mv.name,
        version=mv.version,
        run_id=mv.run_id,
        source=mv.source,
        sha256=tags.get(TAG_MODEL_SHA, ""),
        artifact_sha256=artifact_sha,
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


def _signature_example(model: nn.Module, spec: ModelSpec, example: np.ndarray) -> Any:
    """The input example as named columns (float64: MLflow accepts float32, float64 and
    small ints for them) and the signature it gives with the labels it predicts."""
    import pandas as pd
    import torch
    from mlflow.models import infer_signature

    from mlops.pyfunc_model import OUTPUT_PARAM, OUTPUTS

    fmt, encoding = spec.image_format, spec.column_encoding
    if fmt is not None:  # an image version reads files: its example is PNGs of the rows
        frame = pd.DataFrame({fmt.column: encode_png(example, fmt.shape)})
    elif encoding is not None:  # a mixed table's version reads raw columns
        frame = encoding.raw(example)
    else:
        frame = pd.DataFrame(np.asarray(example, dtype=np.float64), columns=spec.feature_names)
    with torch.inference_mode():
        out = model(torch.from_numpy(np.asarray(example, dtype=np.float32))).float().numpy()
    found = answer(out, spec.task, labels(tuple(spec.classes)), len(example))
    signature = infer_signature(
        frame, np.asarray(found.predictions), params={OUTPUT_PARAM: OUTPUTS[0]}
    )
    return frame, signature


def _log_version_model(
    model: nn.Module, weights_dir: Path, example: np.ndarray
) -> tuple[Any, dict[str, str]]:
    """Log the version's model (MLflow pyfunc, models-from-code: our safetensors weights
    and spec as its artifacts, no pickle) in the active run; its info and its manifest."""
    import mlflow
    import mlflow.pyfunc

    from mlops.pyfunc_model import ENTRY, ENTRY_FILE, SPEC_ARTIFACT, WEIGHTS_ARTIFACT

    spec = ModelSpec(**read_json(weights_dir / SPEC_FILE))
    frame, signature = _signature_example(model, spec, example)
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp, ENTRY_FILE)
        entry.write_text(ENTRY, encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(entry),
            artifacts={
                WEIGHTS_ARTIFACT: str(weights_dir / WEIGHTS_FILE),
                SPEC_ARTIFACT: str(weights_dir / SPEC_FILE),
            },
            signature=signature,
            input_example=frame,
            pip_requirements=pip_requirements(),
        )
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp + "/dl"))
        files = integrity.manifest(local)
    return info, files


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
    are the version's artifacts, so everything that reads the version rebuilds it from
    them (its feature names, classes and normalisation included) without unpickling
    anything. `example` (a batch of at least 2 rows) becomes the input example and the
    signature (named columns). `tags` are lineage facts: they go into the version's
    `mlops.lineage` tag (except `OWN_TAGS`). Every file is hashed into the version's
    manifest, which every loader verifies.
    """
    import mlflow

    existing = find_version_by_sha(name, sha256)
    if existing is not None:
        _record(ctx, existing, "found already registered")
        return RegisteredVersion(
            name, str(existing.version), existing.run_id, existing.source, sha256, True
        )
    if len(example) < 2:
        raise ValueError("the input example needs a batch of at least 2 rows")
    info, files = _log_version_model(model, weights_dir, example)
    lineage = {k: str(v) for k, v in tags.items() if k not in OWN_TAGS}
    all_tags = {k: str(v) for k, v in tags.items() if k in OWN_TAGS} | {
        TAG_MODEL_SHA: sha256,
        TAG_ARTIFACT_SHA: integrity.digest(files),
        integrity.MANIFEST_TAG: integrity.encode(files),
        TAG_LINEAGE: json.dumps(lineage, sort_keys=True),
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
    record = _record(ctx, ready, "registered")
    card = render_card(record, [])
    mlflow_port.set_description(name, int(mv.version), card)
    return RegisteredVersion(name, str(mv.version), run_id, info.model_uri, sha256, False)


def register_run(ctx: Context, run_id: str, name: str | None = None) -> RegisteredVersion:
    """Register the model a training run saved (its `weights/` artifacts), verified
    against the sha256 the run recorded, in a child `register` run."""

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

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
            model, spec = load_model(local, expected_sha256=sha)
        except DataError as exc:
            raise DataError(f"run {run_id}: {exc} (refused; nothing was loaded)") from None
        example = load_test_split(ctx.settings.root).rows_for(spec, f"run {run_id}").x[:8]
        tags = {
            k: v
            for k, v in run.data.tags.items()
            if k.startswith("mlops.") and k not in (tracking.TAG_STAGE, STAGE_TAG)
        }
        tags |= {"mlops.train_run_id": run_id, "mlops.registered_from": "run"}
        with tracking.stage_run(ctx.settings, experiment, "register", run_id, {TAG_MODEL_SHA: sha}):
            return register_model(ctx, model, name, local, sha, example, tags)


def sync(ctx: Context, name: str, refused: list[str] | None = None) -> int:
    """Record versions of `name` that MLflow has and the registry's store lacks (registered
    outside mlops, or before the store existed), with holders from MLflow's aliases. A
    version whose files lie outside the artifact store is not recorded: why goes into
    `refused` (one line each)."""
    ctx.connect_mlflow()
    known = {v.version for v in ctx.store.versions(name)}
    added = 0
    for mv in mlflow_port.all_versions(name):
        if mv.version in known or mv.status != "READY":
            continue
        try:
            uri = mlflow_port.client().get_model_version_download_uri(name, str(mv.version))
            mlflow_port.check_location(name, mv.version, uri, mv.run_id)
        except UserError as exc:
            if refused is not None:
                refused.append(str(exc))
            continue
        _record(ctx, mv, "synced from MLflow")
        added += 1
    _sync_holders(ctx, name, refused)
    return added


def _sync_holders(ctx: Context, name: str, refused: list[str] | None) -> None:
    """Holders from MLflow's aliases, under the model's lock, and not while a stage change
    of the model is unfinished (its aliases are half moved: `mlops registry repair`)."""
    with ctx.store.lock(lock_name(name)):
        if ctx.store.intents(name):
            if refused is not None:
                refused.append(
                    f"model {name}: a stage change is unfinished, so its aliases were not "
                    "read; run `mlops registry repair` first"
                )
            return
        holders = ctx.store.holders(name)
        recorded = {v.version for v in ctx.store.versions(name)}
        for alias, version in mlflow_port.aliases(name).items():
            if (
                version in recorded
                and ctx.policy.exclusive(alias)
                and alias in ctx.policy.stages
                and holders.get(alias) != version
            ):
                why = "alias set in MLflow"
                entry = Entry("sync", name, version, NO_STAGE, alias, ctx.actor, why)
                ctx.store.apply(Change(name, version, NO_STAGE, alias, True), entry)

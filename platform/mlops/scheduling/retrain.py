"""A monitor run's challenger: trained as the `train` stage trains (params.yaml's train
section with the tune stage's best values, when tuned) on the train split plus the
labelled snapshot, validated on the validation split, logged with its lineage (the
snapshot's md5 beside the splits') and registered in stage `none` with
`mlops.role=challenger`. Never promoted here."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlops import tracking, workspace
from mlops.data import read_parquet, write_parquet
from mlops.io import read_json
from mlops.lineage import data_hashes, git_commit, params_hash
from mlops.logged_training import log_weights, train_logged
from mlops.models import build_model
from mlops.params import Params, TrainParams
from mlops.scheduling.snapshot import Snapshot
from mlops.settings import Settings
from mlops.tuning.objective import data_augmenter, load_data, model_spec
from mlops.tuning.search_space import derive
from registry.context import Context
from registry.registration import register_run


@dataclass(frozen=True)
class Retrained:
    """The registered challenger, its MLflow run and the data it saw (DVC md5s)."""

    version: str
    run_id: str
    hashes: dict[str, str]


def train_params(root: Path, params: Params) -> TrainParams:
    """params.yaml's train section with the tune stage's best values (if tuned)."""
    best = root / workspace.BEST_PARAMS
    found = read_json(best) if best.is_file() else {}
    return derive(params.train, found["values"]) if found.get("tuned") else params.train


def retrain(
    settings: Settings, params: Params, snapshot: Snapshot, reason: str, why: str, watched: str
) -> Retrained:
    """Train on the train split + `snapshot` and register the challenger."""
    import pandas as pd

    root = settings.root
    p = train_params(root, params)
    hashes = {
        **data_hashes({n: root / workspace.SPLITS[n] for n in ("train", "val")}),
        "feedback": snapshot.md5,
    }
    tags = {
        "mlops.role": "challenger",
        "mlops.challenger_of": reason,
        "mlops.trigger": why[:5000],
        "mlops.watched": watched,
        "mlops.feedback.rows": str(snapshot.rows),
        "mlops.feedback.path": snapshot.path,
        "mlops.family": p.model.family,
        "mlops.git_commit": git_commit(root),
        "mlops.params_hash": params_hash(params.as_dict()),
        **{f"mlops.data.{k}.md5": v for k, v in hashes.items()},
    }
    with tempfile.TemporaryDirectory(prefix="mlops-retrain-") as tmp:
        combined = Path(tmp) / "train.parquet"
        parts = [read_parquet(root / workspace.SPLITS["train"]), read_parquet(root / snapshot.path)]
        write_parquet(pd.concat(parts, ignore_index=True), combined)
        data = load_data(root, p, None, train_file=combined)
        spec = model_spec(p.model, data)
        tags["mlops.task"] = data.schema.task
        with tracking.stage_run(settings, params.pipeline.name, "retrain", None, tags) as run_id:
            result = train_logged(
                run_id, lambda: build_model(spec), p, (data.train, data.val), data.schema.task,
                augment=data_augmenter(p, data),
            )  # fmt: skip
            log_weights(result.model, spec, tmp)
    ctx = Context(settings, params.registry, params.evaluate.primary_metric)
    version = register_run(ctx, run_id, params.model_name).version
    return Retrained(version, run_id, hashes)

"""A scheduled sweep's best trial as a challenger version: retrained from the trial's
params (the engine is deterministic on CPU, so this is the trial's model), logged with
its lineage, and registered in stage `none` with `mlops.role=challenger`. It is never
promoted here: people compare it with the holder (`mlops registry compare`) and
promote it through the gates."""

from __future__ import annotations

import tempfile

from mlops import tracking
from mlops.lineage import git_commit, params_hash
from mlops.logged_training import log_weights, train_logged
from mlops.models import build_model
from mlops.params import Params
from mlops.settings import Settings
from mlops.tuning.objective import (
    TAG_STUDY,
    TAG_TRIAL,
    data_augmenter,
    load_data,
    model_spec,
)
from mlops.tuning.search_space import data_values, derive, derive_data
from mlops.tuning.storage import storage
from registry.context import Context
from registry.registration import register_run


def register_best_trial(
    settings: Settings,
    params: Params,
    study_name: str,
    parent_run_id: str,
    reason: str,
    data_hashes: dict[str, str],
) -> str:
    """Retrain the study's best trial in a child run of `parent_run_id`, register it;
    returns the version number."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage(settings.optuna_storage))
    best = study.best_trial
    p = derive(params.train, best.params, params.tune.epochs)
    searched = data_values(best.params)
    data = load_data(
        settings.root, params.train, derive_data(params.data, searched) if searched else None
    )
    spec = model_spec(p.model, data)
    tags = {
        TAG_STUDY: study_name,
        TAG_TRIAL: str(best.number),
        "mlops.role": "challenger",
        "mlops.challenger_of": reason,
        "mlops.family": p.model.family,
        "mlops.task": data.schema.task,
        "mlops.git_commit": git_commit(settings.root),
        "mlops.params_hash": params_hash(params.as_dict()),
        **{f"mlops.data.{k}.md5": v for k, v in data_hashes.items()},
    }
    with tracking.stage_run(
        settings, params.pipeline.name, "challenger", parent_run_id, tags
    ) as run_id:
        tracking.log_params({k: str(v) for k, v in best.params.items()})
        result = train_logged(
            run_id, lambda: build_model(spec), p, (data.train, data.val), data.schema.task,
            augment=data_augmenter(p, data),
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            log_weights(result.model, spec, tmp)
    ctx = Context(settings, params.registry, params.evaluate.primary_metric)
    return register_run(ctx, run_id, params.model_name).version

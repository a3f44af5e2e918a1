"""Stage `register`: log the trained model with the MLflow PyTorch flavor and register a
new version named after the pipeline, tagged with its whole lineage."""

from __future__ import annotations

from pathlib import Path

from mlops import tracking, workspace
from mlops.io import file_digest, read_json, write_json
from mlops.lineage import data_hashes, dvc_md5, lineage_tags
from mlops.models import WEIGHTS_FILE, count_parameters, load_model
from pipelines._stage import StageContext, run_stage
from registry.card import render_card
from registry.context import Context
from registry.evaluation import load_test_split
from registry.finetune import TAG_PREFIX
from registry.hooks import delivery as hooks
from registry.registration import register_model


def register(ctx: StageContext) -> None:
    """Register the model of `models/` (idempotent: the same weights give the same version)."""
    model, spec = load_model(workspace.MODEL_DIR)
    sha = file_digest(workspace.MODEL_DIR / WEIGHTS_FILE)
    metrics = read_json(workspace.METRICS)
    # the example rows as the model reads them: its own feature names, in its own order
    example = load_test_split(Path.cwd()).rows_for(spec, "the trained model").x[:8]
    root = ctx.settings.root
    tracking.connect(ctx.settings)
    parent = tracking.find_run_by_tag(ctx.experiment, tracking.TAG_MODEL_SHA, sha, "train")
    lineage = {
        **lineage_tags(root, ctx.params.as_dict(), workspace.PARAMS),  # git, params, dvc exp
        "mlops.data.raw.md5": dvc_md5(workspace.RAW),
        **{f"mlops.data.{k}.md5": v for k, v in data_hashes(workspace.SPLITS).items()},
        "mlops.train_run_id": parent or "unknown",
        "mlops.parameters": count_parameters(model),
        "mlops.family": spec.family,
        "mlops.task": spec.task,
        **{f"mlops.metric.test_{k}": f"{v:.6g}" for k, v in metrics["test"].items()},
    }
    if parent:  # fine-tuned from a registered version: its name, number and sha256
        lineage |= {k: v for k, v in tracking.run_tags(parent).items() if k.startswith(TAG_PREFIX)}
    tuned = read_json(workspace.BEST_PARAMS) if workspace.BEST_PARAMS.is_file() else {}
    if tuned.get("tuned"):
        lineage |= {"mlops.optuna.study": tuned["study"], "mlops.optuna.trial": tuned["trial"]}
    name = ctx.params.model_name
    with tracking.stage_run(
        ctx.settings, ctx.experiment, "register", parent, {tracking.TAG_MODEL_SHA: sha}
    ) as run_id:
        tracking.set_tags(lineage)
        registry = Context(ctx.settings, ctx.params.registry, ctx.params.evaluate.primary_metric)
        version = register_model(
            registry,
            model,
            name,
            workspace.MODEL_DIR,
            sha,
            example,
            lineage,
            description=f"PyTorch {spec.task} model trained by the `{ctx.experiment}` pipeline.",
        )
        write_json(
            workspace.REGISTERED,
            {"name": version.name, "version": version.version, "sha256": sha},
        )
        number = int(version.version)
        record = registry.store.version(version.name, number)
        entries = registry.store.history(version.name, versions=[number])
        card = render_card(record, entries) if record else None
        tracking.describe_run(run_id, f"register {version.name} v{version.version}", card)
        how = "already registered as" if version.reused else "registered"
        print(f"register: {how} {version.name} version {version.version} (sha256 {sha[:12]})")
    hooks.flush(ctx.settings.database_url)  # the `register` event, to any webhook


def main() -> None:
    """Entry point of `python -m pipelines.register`."""
    run_stage("register", register)


if __name__ == "__main__":
    main()

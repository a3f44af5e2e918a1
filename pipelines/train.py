"""Stage `train`: fit the model on the train split, keep the best epoch on validation."""

from __future__ import annotations

from mlops import tracking
from mlops.data import Schema, features_and_target, read_parquet
from mlops.io import write_json
from mlops.lineage import data_hashes
from mlops.models import build_model, count_parameters, make_spec, save_model
from mlops.training import EpochResult, train_model
from pipelines import paths
from pipelines._stage import StageContext, run_stage


def train(ctx: StageContext) -> None:
    """Train, save `models/` (safetensors + spec) and the per-epoch history."""
    p = ctx.params.train
    schema = Schema.load(paths.SCHEMA)
    x_train, y_train = features_and_target(read_parquet(paths.SPLITS["train"]), schema)
    x_val, y_val = features_and_target(read_parquet(paths.SPLITS["val"]), schema)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std < 1e-6] = 1.0
    spec = make_spec(p.model, schema.classes, mean.tolist(), std.tolist(), schema.input_shape)
    hashes = {f"mlops.data.{k}.md5": v for k, v in data_hashes(paths.SPLITS).items()}
    with tracking.stage_run(ctx.settings, ctx.experiment, "train", tags=hashes):
        tracking.log_params(p.model_dump(mode="json"), prefix="train")

        def on_epoch(result: EpochResult) -> None:
            tracking.log_metrics(result.as_dict(), step=result.epoch)
            print(
                f"train: epoch {result.epoch:>3}/{p.epochs}  train_loss {result.train_loss:.4f}  "
                f"val_loss {result.val_loss:.4f}  val_accuracy {result.val_accuracy:.4f}",
                flush=True,
            )

        result = train_model(
            lambda: build_model(spec), p, (x_train, y_train), (x_val, y_val), on_epoch
        )
        sha = save_model(result.model, spec, paths.MODEL_DIR)
        write_json(paths.HISTORY, [{"epoch": h.epoch, **h.as_dict()} for h in result.history])
        best = result.history[result.best_epoch - 1]
        tracking.log_metrics(
            {
                "best_epoch": result.best_epoch,
                "best_val_loss": best.val_loss,
                "best_val_accuracy": best.val_accuracy,
                "parameters": count_parameters(result.model),
            }
        )
        tracking.set_tags(
            {tracking.TAG_MODEL_SHA: sha, "mlops.stopped_early": result.stopped_early}
        )
        print(
            f"train: best epoch {result.best_epoch} (val_accuracy {best.val_accuracy:.4f}) "
            f"-> {paths.MODEL_DIR}/"
        )


def main() -> None:
    """Entry point of `python -m pipelines.train`."""
    run_stage("train", train)


if __name__ == "__main__":
    main()

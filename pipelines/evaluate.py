"""Stage `evaluate`: test-split metrics (DVC metrics), confusion matrix (of classes, or of
the target's bins for a regression), validation score per epoch and learning curves (DVC
plots and PNGs), logged in a child run of the training run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mlops import tracking, workspace
from mlops.board import MAX_IMAGES, Board, image_pixels
from mlops.data import Schema, features_and_target, read_parquet
from mlops.images import FILE_COLUMN
from mlops.io import file_digest, read_json, write_json
from mlops.metrics import (
    classification_metrics,
    confusion,
    confusion_records,
    regression_metrics,
)
from mlops.models import WEIGHTS_FILE, ModelSpec, load_model
from mlops.plots import (
    binned_records,
    confusion_matrix_png,
    learning_curves_png,
    predictions_png,
    score_records,
)
from mlops.training import predict_proba, predict_values
from pipelines._stage import StageContext, run_stage

if TYPE_CHECKING:
    import pandas as pd


def evaluate(ctx: StageContext) -> None:
    """Evaluate the trained model on the validation and test splits."""
    model, spec = load_model(workspace.MODEL_DIR)
    # The model's own column encoding (a tuned tokenizer may differ from split's).
    schema = Schema.load(workspace.SPLIT_SCHEMA).encoded_as(spec.encoding)
    sha = file_digest(workspace.MODEL_DIR / WEIGHTS_FILE)
    test_frame = read_parquet(workspace.SPLITS["test"])
    x_test, y_test = features_and_target(test_frame, schema)
    x_val, y_val = features_and_target(read_parquet(workspace.SPLITS["val"]), schema)
    history = read_json(workspace.HISTORY)
    tracking.connect(ctx.settings)
    parent = tracking.find_run_by_tag(ctx.experiment, tracking.TAG_MODEL_SHA, sha, "train")
    tags = {tracking.TAG_MODEL_SHA: sha}
    with tracking.stage_run(ctx.settings, ctx.experiment, "evaluate", parent, tags) as run_id:
        if spec.task == "regression":
            pred = predict_values(model, x_test)
            test = regression_metrics(y_test, pred)
            val = regression_metrics(y_val, predict_values(model, x_val))
            write_json(workspace.CONFUSION, binned_records(y_test, pred))
            predictions_png(y_test, pred, workspace.PREDICTIONS_PNG)
            headline = f"test RMSE {test['rmse']:.4f}, R² {test['r2']:.4f}"
        else:
            proba = predict_proba(model, x_test)
            test = classification_metrics(y_test, proba)
            val = classification_metrics(y_val, predict_proba(model, x_val))
            predicted = proba.argmax(axis=1)
            write_json(workspace.CONFUSION, confusion_records(y_test, predicted, spec.classes))
            matrix = confusion(y_test, predicted, spec.n_classes)
            confusion_matrix_png(matrix, spec.classes, workspace.PREDICTIONS_PNG)
            if ctx.params.train.tensorboard and spec.image:
                _misclassified(spec, x_test, y_test, predicted, test_frame)
            headline = f"test accuracy {test['accuracy']:.4f}, macro F1 {test['f1_macro']:.4f}"
        write_json(workspace.METRICS, {"test": test, "val": val})
        write_json(workspace.VAL_SCORE, score_records(history))
        learning_curves_png(history, workspace.CURVES_PNG)
        flat = {f"test_{k}": v for k, v in test.items()}
        tracking.log_metrics(flat | {f"val_{k}": v for k, v in val.items()})
        if parent:  # test metrics on the train run too, so the runs table compares them
            tracking.log_metrics(flat, run_id=parent)
        tracking.log_artifacts(
            workspace.METRICS,
            workspace.PREDICTIONS_PNG,
            workspace.CURVES_PNG,
            artifact_path="evaluation",
        )
        key = ctx.params.evaluate.primary_metric
        key = key if key in test else ("rmse" if spec.task == "regression" else "accuracy")
        scored = f"{spec.family} · test {key} {test[key]:.4f}"
        tracking.describe_run(run_id, f"evaluate {scored}")
        if parent:  # the train run reads best in the runs list by what it scored on test
            tracking.describe_run(parent, f"train {scored}")
        print(f"evaluate: {headline} on {int(test['n_samples'])} rows -> {workspace.METRICS}")


def _misclassified(
    spec: ModelSpec, x: np.ndarray, y: np.ndarray, predicted: np.ndarray, frame: pd.DataFrame
) -> None:
    """The test images the model got wrong, in the evaluate run's TensorBoard files, with
    their files and labels."""
    wrong = np.flatnonzero(predicted != y)
    board = Board("evaluate")
    files = frame[FILE_COLUMN].to_numpy() if FILE_COLUMN in frame.columns else None
    lines = [
        f"{files[i] if files is not None else i}: predicted {spec.classes[predicted[i]]}, "
        f"actual {spec.classes[y[i]]}"
        for i in wrong[:MAX_IMAGES]
    ]
    caption = "\n\n".join(lines) or "every test image is classified right"
    board.images("test/misclassified", image_pixels(x[wrong], spec.input_shape), caption)
    board.close()


def main() -> None:
    """Entry point of `python -m pipelines.evaluate`."""
    run_stage("evaluate", evaluate)


if __name__ == "__main__":
    main()

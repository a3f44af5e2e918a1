"""Regression targets: detection, metrics, a model that predicts in the target's units,
and training with MSE that learns a linear signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.data import features_and_target, infer_schema
from mlops.errors import DataError, UserError
from mlops.metrics import regression_metrics
from mlops.models import build_model, make_spec
from mlops.params import ModelParams, TrainParams, parse_params
from mlops.settings import Settings
from mlops.training import check_metric, predict_values, train_model
from mlops.tuning.objective import Data, Job, TrialData, objective


def _frame(target: np.ndarray) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(len(target), 3)), columns=["a", "b", "c"])
    frame["target"] = target
    return frame


def test_continuous_target_is_regression_in_auto_mode() -> None:
    schema = infer_schema(_frame(np.linspace(0.5, 9.7, 40)), "x.csv", "y")
    assert schema.task == "regression" and schema.classes == []


def test_task_can_be_forced() -> None:
    frame = _frame(np.arange(40, dtype=float) % 4)
    assert infer_schema(frame.copy(), "x.csv", "y").task == "regression"
    assert infer_schema(frame.copy(), "x.csv", "y", task="classification").task == "classification"
    assert infer_schema(frame.copy(), "x.csv", "y", task="regression").task == "regression"
    with pytest.raises(DataError, match=r"data\.task"):
        infer_schema(_frame(np.linspace(0.5, 9.7, 40)), "x.csv", "y", task="classification")


def test_regression_metrics_known_values() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    assert m["rmse"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 4 / 5)
    assert m["n_samples"] == 4


def test_regression_metric_choice_is_checked() -> None:
    check_metric("regression", "val_r2")
    check_metric("classification", "val_f1_macro")
    with pytest.raises(UserError, match="val_accuracy: not a regression metric"):
        check_metric("regression", "val_accuracy")
    with pytest.raises(UserError, match="not a classification metric") as info:
        check_metric("classification", "val_rmse")
    assert "data.task" in str(info.value)  # where the task comes from, and how to change it


def test_regression_model_learns_in_target_units() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (100 + 30 * x[:, 0] - 10 * x[:, 1]).astype(np.float32)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(target=y)
    schema = infer_schema(frame, "x.csv", "y")
    xs, ys = features_and_target(frame, schema)
    assert ys.dtype == np.float32
    spec = make_spec(
        ModelParams.model_validate({"mlp": {"hidden_sizes": [16], "dropout": 0.0}}),
        schema.classes, xs.mean(0).tolist(), xs.std(0).tolist(), [3],
        task="regression", target_mean=float(ys.mean()), target_std=float(ys.std()),
    )  # fmt: skip
    params = TrainParams.model_validate(
        {"epochs": 40, "device": "cpu", "learning_rate": 0.01, "early_stopping": {"patience": 0}}
    )
    result = train_model(
        lambda: build_model(spec), params, (xs[:300], ys[:300]), (xs[300:], ys[300:]),
        task="regression",
    )  # fmt: skip
    metrics = result.history[-1].metrics
    assert {"val_rmse", "val_mae", "val_r2", "val_loss"} <= set(metrics)
    assert "val_accuracy" not in metrics
    assert metrics["val_r2"] > 0.9
    pred = predict_values(result.model, xs[300:])
    assert pred.shape == (100,)
    assert regression_metrics(ys[300:], pred)["r2"] == pytest.approx(metrics["val_r2"], abs=1e-4)


def test_a_sweep_names_its_own_metric_key_when_the_task_lacks_it(tmp_path: object) -> None:
    """tune.metric = val_accuracy on a regression: the line names tune.metric, not the
    early-stopping key the user never set."""

    frame = pd.DataFrame({"a": np.arange(40.0), "target": np.linspace(0.5, 9.5, 40)})
    schema = infer_schema(frame, "x.csv", "target", task="regression")
    x, y = features_and_target(frame, schema)
    params = parse_params({"tune": {"metric": "val_accuracy"}})
    settings = Settings.from_env(env={}, cwd=Path(str(tmp_path)))
    with pytest.raises(UserError, match=r"^tune\.metric = val_accuracy: not a regression metric"):
        data = TrialData(settings.root, params, Data(schema, (x, y), (x, y)))
        objective(Job(settings, params, "s"), data)

"""The `tune:` section: distributions, the search space's names, direction, study names."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from mlops.errors import UserError
from mlops.params import Distribution, Params, TuneParams, check_space, parse_params
from mlops.tuning.objective import study_name

# --- Distribution: happy paths ------------------------------------------------------


def test_float_distribution_defaults() -> None:
    d = Distribution(type="float", low=0.0, high=0.5)
    assert (d.low, d.high, d.log, d.step, d.choices) == (0.0, 0.5, False, None, None)


def test_float_distribution_log_and_step_separately() -> None:
    assert Distribution(type="float", low=1e-4, high=1e-2, log=True).log is True
    assert Distribution(type="float", low=0.0, high=1.0, step=0.25).step == 0.25


def test_float_distribution_accepts_int_bounds() -> None:
    d = Distribution(type="float", low=1, high=10)
    assert d.low == 1.0 and d.high == 10.0


def test_int_distribution_with_step_and_log() -> None:
    stepped = Distribution(type="int", low=16, high=256, step=16)
    assert (stepped.low, stepped.high, stepped.step) == (16, 256, 16)
    logged = Distribution(type="int", low=1, high=1024, log=True)
    assert logged.log is True and logged.step is None


def test_int_distribution_accepts_whole_floats() -> None:
    d = Distribution(type="int", low=2.0, high=8.0, step=2.0)
    assert (d.low, d.high, d.step) == (2, 8, 2)


def test_categorical_distribution_keeps_choices_in_order() -> None:
    d = Distribution(type="categorical", choices=["relu", "gelu", 3, 0.5, True])
    assert d.choices == ["relu", "gelu", 3, 0.5, True]
    assert d.low is None and d.high is None


def test_distribution_is_frozen() -> None:
    d = Distribution(type="float", low=0.0, high=1.0)
    with pytest.raises(ValidationError):
        d.low = 0.5


# --- Distribution: each problem named ------------------------------------------------

BAD_DISTRIBUTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("float-low-eq-high", {"type": "float", "low": 1.0, "high": 1.0}, "empty range"),
    ("float-low-gt-high", {"type": "float", "low": 1.0, "high": 0.1}, "empty range"),
    ("int-low-eq-high", {"type": "int", "low": 3, "high": 3}, "empty range"),
    ("int-low-gt-high", {"type": "int", "low": 8, "high": 2}, "empty range"),
    ("log-low-zero", {"type": "float", "low": 0.0, "high": 1.0, "log": True}, "low > 0"),
    ("log-low-negative", {"type": "float", "low": -1.0, "high": 1.0, "log": True}, "low > 0"),
    ("int-log-low-zero", {"type": "int", "low": 0, "high": 8, "log": True}, "low > 0"),
    (
        "log-and-step",
        {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1},
        "cannot be combined",
    ),
    ("int-log-and-step", {"type": "int", "low": 1, "high": 8, "log": True, "step": 1}, "combined"),
    ("int-fractional-low", {"type": "int", "low": 1.5, "high": 8}, "whole `low`"),
    ("int-fractional-high", {"type": "int", "low": 1, "high": 8.5}, "whole `high`"),
    ("int-fractional-step", {"type": "int", "low": 1, "high": 8, "step": 0.5}, "whole `step`"),
    ("float-missing-high", {"type": "float", "low": 0.1}, "needs `low` and `high`"),
    ("int-missing-low", {"type": "int", "high": 4}, "needs `low` and `high`"),
    ("categorical-no-choices", {"type": "categorical"}, "non-empty `choices`"),
    ("categorical-empty-choices", {"type": "categorical", "choices": []}, "non-empty"),
    ("categorical-with-low", {"type": "categorical", "choices": [1, 2], "low": 0}, "choices` only"),
    ("categorical-with-log", {"type": "categorical", "choices": [1], "log": True}, "only"),
    ("float-with-choices", {"type": "float", "low": 0, "high": 1, "choices": [0.5]}, "`choices`"),
    ("int-with-choices", {"type": "int", "low": 0, "high": 1, "choices": [1]}, "not `choices`"),
    ("step-zero", {"type": "float", "low": 0, "high": 1, "step": 0}, "greater than 0"),
    ("step-negative", {"type": "int", "low": 0, "high": 8, "step": -2}, "greater than 0"),
    ("unknown-type", {"type": "normal", "low": 0, "high": 1}, "'float', 'int' or 'categorical'"),
    ("infinite-high", {"type": "float", "low": 0, "high": float("inf")}, "finite"),
    ("nan-low", {"type": "float", "low": float("nan"), "high": 1}, "finite"),
    ("string-bound", {"type": "float", "low": "0", "high": 1}, "valid number"),
    ("unknown-key", {"type": "float", "low": 0, "high": 1, "scale": "log"}, "Extra inputs"),
]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [(d, f) for _, d, f in BAD_DISTRIBUTIONS],
    ids=[i for i, _, _ in BAD_DISTRIBUTIONS],
)
def test_bad_distribution_raises_naming_the_problem(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Distribution.model_validate(data)
    assert fragment in str(info.value), str(info.value)


def test_empty_range_message_shows_both_bounds() -> None:
    with pytest.raises(ValidationError) as info:
        Distribution(type="float", low=1, high=0.1)
    assert "empty range: low 1 >= high 0.1" in str(info.value)


def test_log_message_shows_low() -> None:
    with pytest.raises(ValidationError) as info:
        Distribution(type="float", low=-0.5, high=1, log=True)
    assert "log scale needs low > 0 (got -0.5)" in str(info.value)


def test_distribution_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="empty range"):
        Distribution(type="int", low=5, high=5)


# --- TuneParams -----------------------------------------------------------------------


def test_tune_defaults_search_nothing() -> None:
    t = TuneParams()
    assert t.n_trials == 0
    assert t.space == {}
    assert t.sampler == "tpe" and t.pruner == "successive_halving"
    assert t.space_paths() == []


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("val_loss", "minimize"),
        ("val_rmse", "minimize"),
        ("val_mae", "minimize"),
        ("val_accuracy", "maximize"),
        ("val_f1_macro", "maximize"),
        ("val_r2", "maximize"),
    ],
)
def test_direction_follows_metric(metric: str, direction: str) -> None:
    assert TuneParams(metric=metric).direction == direction  # type: ignore[arg-type]


def test_space_paths_are_sorted() -> None:
    t = TuneParams(
        space={
            "weight_decay": Distribution(type="float", low=0, high=0.1),
            "batch_size": Distribution(type="categorical", choices=[32, 64]),
            "model.mlp.dropout": Distribution(type="float", low=0, high=0.5),
        }
    )
    assert t.space_paths() == ["batch_size", "model.mlp.dropout", "weight_decay"]


def test_grid_sampler_accepts_stepped_floats_ints_and_categoricals() -> None:
    t = TuneParams(
        sampler="grid",
        space={
            "learning_rate": Distribution(type="float", low=0.01, high=0.03, step=0.01),
            "batch_size": Distribution(type="int", low=32, high=64, step=32),
            "optimizer": Distribution(type="categorical", choices=["adam", "sgd"]),
        },
    )
    assert t.sampler == "grid"


def test_grid_sampler_rejects_float_without_step() -> None:
    with pytest.raises(ValidationError) as info:
        TuneParams(
            sampler="grid",
            space={"learning_rate": Distribution(type="float", low=0.01, high=0.1)},
        )
    assert "space.learning_rate: the grid sampler needs a `step` for floats" in str(info.value)


def test_non_grid_sampler_accepts_float_without_step() -> None:
    t = TuneParams(sampler="random", space={"lr": Distribution(type="float", low=0.1, high=1)})
    assert t.space["lr"].step is None


@pytest.mark.parametrize("name", ["1study", "has space", "x" * 64, ""])
def test_bad_study_name_is_rejected(name: str) -> None:
    with pytest.raises(ValidationError):
        TuneParams(study_name=name)


# --- check_space ----------------------------------------------------------------------

TRAIN = Params().train.model_dump(mode="json")
DATA = Params().data.model_dump(mode="json")


@pytest.mark.parametrize(
    "path",
    [
        "learning_rate",
        "batch_size",
        "schedule.gamma",
        "early_stopping.patience",
        "model.family",
        "model.mlp.dropout",
        "model.transformer.d_model",
    ],
)
def test_check_space_accepts_train_leaves(path: str) -> None:
    node = TRAIN
    for part in path.split("."):
        node = node[part]
    check_space({path: Distribution(type="categorical", choices=[node])}, TRAIN, DATA)


@pytest.mark.parametrize(
    ("path", "dist"),
    [
        ("data.tokenizer.vocab_size", {"type": "int", "low": 500, "high": 8000, "log": True}),
        ("data.tokenizer.max_length", {"type": "categorical", "choices": [32, 64, 128]}),
        ("data.tokenizer.embedding_dim", {"type": "int", "low": 16, "high": 128, "step": 16}),
        ("data.tokenizer.kind", {"type": "categorical", "choices": ["bpe", "wordpiece"]}),
        ("data.tokenizer.lowercase", {"type": "categorical", "choices": [True, False]}),
        ("data.one_hot_max", {"type": "int", "low": 0, "high": 64}),
        ("data.max_categories", {"type": "int", "low": 10, "high": 1000}),
        ("data.category_embedding_max", {"type": "categorical", "choices": [4, 16, 32]}),
    ],
)
def test_check_space_accepts_the_data_params_that_shape_the_encoding(
    path: str, dist: dict[str, object]
) -> None:
    check_space({path: Distribution.model_validate(dist)}, TRAIN, DATA)


@pytest.mark.parametrize(
    ("path", "dist", "fragment"),
    [
        ("data.tokenizer.vocab_size", {"type": "float", "low": 50, "high": 90}, "whole-number"),
        ("data.tokenizer.kind", {"type": "int", "low": 0, "high": 1}, "needs `categorical`"),
        ("epochs", {"type": "float", "low": 1, "high": 10}, "whole-number param needs `int`"),
        ("model.family", {"type": "float", "low": 0, "high": 1}, "str param needs `categorical`"),
        ("compile", {"type": "int", "low": 0, "high": 1}, "bool param needs `categorical`"),
        ("learning_rate", {"type": "categorical", "choices": [True, 0.01]}, "does not fit"),
        ("batch_size", {"type": "categorical", "choices": [32, 64.5]}, "does not fit"),
        ("model.mlp.hidden_sizes", {"type": "categorical", "choices": [1]}, "list param"),
    ],
)
def test_check_space_refuses_a_distribution_of_the_wrong_kind(
    path: str, dist: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        check_space({path: Distribution.model_validate(dist)}, TRAIN, DATA)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("nope", "space.nope: not a train param"),
        ("model.nope", "space.model.nope: not a train param"),
        ("learning_rate.x", "space.learning_rate.x: not a train param"),
        ("model.gpt.dropout", "space.model.gpt.dropout: not a train param"),
        ("model.mlp", "space.model.mlp: a section, not a single train param"),
        ("schedule", "space.schedule: a section"),
        ("model", "space.model: a section"),
        ("data.source", "space.data.source: not a searchable data param (these are: data."),
        ("data.tokenizer", "space.data.tokenizer: not a searchable data param"),
        ("data.tokenizer.nope", "space.data.tokenizer.nope: not a searchable data param"),
    ],
)
def test_check_space_names_the_bad_path(path: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        check_space({path: Distribution(type="categorical", choices=[1])}, TRAIN, DATA)
    assert fragment in str(info.value)


# --- through parse_params: one line, exit 2, naming the key ---------------------------


def _parse_error(data: dict[str, Any]) -> str:
    with pytest.raises(UserError) as info:
        parse_params(data)
    error = info.value
    text = str(error)
    assert error.exit_code == 2
    assert "\n" not in text and "\r" not in text
    assert text.startswith("params.yaml:")
    return text


def _space(**space: dict[str, Any]) -> dict[str, Any]:
    return {"tune": {"space": space}}


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (
            _space(learning_rate={"type": "float", "low": 1, "high": 0.1}),
            ["tune.space.learning_rate", "empty range", "low 1 >= high 0.1"],
        ),
        (
            _space(weight_decay={"type": "float", "low": 0, "high": 0.1, "log": True}),
            ["tune.space.weight_decay", "log scale needs low > 0"],
        ),
        (
            _space(batch_size={"type": "int", "low": 16, "high": 64.5}),
            ["tune.space.batch_size", "whole `high`"],
        ),
        (
            _space(optimizer={"type": "categorical"}),
            ["tune.space.optimizer", "non-empty `choices`"],
        ),
        (
            _space(nope={"type": "float", "low": 0, "high": 1}),
            ["tune.space.nope", "not a train param"],
        ),
        (
            _space(**{"model.mlp": {"type": "categorical", "choices": [1]}}),
            ["tune.space.model.mlp", "a section"],
        ),
        (
            _space(**{"model.cnn.nope": {"type": "categorical", "choices": [1]}}),
            ["tune.space.model.cnn.nope", "not a train param"],
        ),
        ({"tune": {"sampler": "bayes"}}, ["tune.sampler", "'bayes'", "'tpe'"]),
        ({"tune": {"pruner": "asha"}}, ["tune.pruner", "'asha'", "'median'"]),
        ({"tune": {"n_trials": -1}}, ["tune.n_trials = -1", "greater than or equal to 0"]),
        ({"tune": {"timeout": 0}}, ["tune.timeout = 0", "greater than 0"]),
        ({"tune": {"epochs": 0}}, ["tune.epochs = 0"]),
        ({"tune": {"metric": "accuracy"}}, ["tune.metric", "'accuracy'"]),
        ({"tune": {"study_name": "9lives"}}, ["tune.study_name", "must start with a letter"]),
        ({"tune": {"trials": 5}}, ["tune.trials: unknown key"]),
        (
            {
                "tune": {
                    "sampler": "grid",
                    "space": {"learning_rate": {"type": "float", "low": 0.01, "high": 0.1}},
                }
            },
            ["tune", "space.learning_rate", "grid sampler needs a `step`"],
        ),
    ],
)
def test_bad_tune_section_is_one_line_naming_the_key(
    data: dict[str, Any], fragments: list[str]
) -> None:
    message = _parse_error(data)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_space_name_check_uses_the_file_train_section() -> None:
    # `model.mlp.dropout` is a train param whatever family is selected.
    params = parse_params(
        {
            "train": {"model": {"family": "cnn"}},
            "tune": {"space": {"model.mlp.dropout": {"type": "float", "low": 0, "high": 0.5}}},
        }
    )
    assert params.tune.space_paths() == ["model.mlp.dropout"]


def test_valid_tune_section_is_read() -> None:
    params = parse_params(
        {
            "tune": {
                "n_trials": 12,
                "timeout": 60,
                "metric": "val_loss",
                "sampler": "random",
                "pruner": "none",
                "seed": 3,
                "epochs": 5,
                "study_name": "my-study",
                "space": {
                    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "batch_size": {"type": "categorical", "choices": [32, 64]},
                    "model.family": {"type": "categorical", "choices": ["mlp", "cnn"]},
                },
            }
        }
    )
    t = params.tune
    assert (t.n_trials, t.timeout, t.sampler, t.pruner, t.seed, t.epochs) == (
        12,
        60.0,
        "random",
        "none",
        3,
        5,
    )
    assert t.direction == "minimize"
    assert t.space["learning_rate"].log is True
    assert t.space_paths() == ["batch_size", "learning_rate", "model.family"]


# --- tuning.study_name ----------------------------------------------------------------


def _params(train: dict[str, Any] | None = None, tune: dict[str, Any] | None = None) -> Params:
    base_tune: dict[str, Any] = {
        "n_trials": 10,
        "space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    }
    return parse_params(
        {
            "pipeline": {"name": "digits"},
            "train": train or {},
            "tune": {**base_tune, **(tune or {})},
        }
    )


def test_study_name_is_stable_for_equal_params() -> None:
    a, b = _params(), _params()
    assert a is not b
    assert study_name(a) == study_name(b)


def test_study_name_starts_with_pipeline_name_and_is_a_valid_name() -> None:
    name = study_name(_params())
    assert name.startswith("digits-")
    assert len(name.removeprefix("digits-")) == 10
    # The default name must itself be acceptable as `tune.study_name`.
    assert TuneParams(study_name=name).study_name == name


def test_study_name_changes_with_pipeline_name() -> None:
    other = parse_params({"pipeline": {"name": "other"}, "tune": _params().tune.model_dump()})
    assert study_name(other).startswith("other-")
    assert study_name(other).split("-")[-1] == study_name(_params()).split("-")[-1]


@pytest.mark.parametrize(
    "train",
    [
        {"weight_decay": 0.01},
        {"epochs": 61},
        {"model": {"family": "cnn"}},
        {"model": {"mlp": {"dropout": 0.2}}},
    ],
)
def test_study_name_changes_with_train(train: dict[str, Any]) -> None:
    assert study_name(_params(train=train)) != study_name(_params())


DROPOUT = {"model.mlp.dropout": {"type": "float", "low": 0.0, "high": 0.5}}
FAMILY = {"model.family": {"type": "categorical", "choices": ["mlp", "cnn"]}}


@pytest.mark.parametrize(
    ("train", "space"),
    [
        ({"learning_rate": 0.01}, {}),
        ({"model": {"mlp": {"dropout": 0.3}}}, DROPOUT),
        ({"model": {"family": "cnn"}}, FAMILY),
    ],
)
def test_study_name_ignores_the_values_the_search_sets(
    train: dict[str, Any], space: dict[str, Any]
) -> None:
    """A trial sets the searched params itself: writing a trial's values into the train
    section (`mlops sweep apply`) keeps params.yaml on the same study."""
    base = _params().tune.space
    tune = {"space": {**{k: v.model_dump() for k, v in base.items()}, **space}}
    assert study_name(_params(train=train, tune=tune)) == study_name(_params(tune=tune))


@pytest.mark.parametrize(
    "tune",
    [
        {"space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}}},
        {"space": {"weight_decay": {"type": "float", "low": 0.0, "high": 0.1}}},
        {"sampler": "random"},
        {"metric": "val_loss"},
        {"seed": 1},
        {"epochs": 3},
    ],
)
def test_study_name_changes_with_what_trials_depend_on(tune: dict[str, Any]) -> None:
    assert study_name(_params(tune=tune)) != study_name(_params())


@pytest.mark.parametrize("tune", [{"n_trials": 500}, {"n_trials": 0}, {"timeout": 3600}])
def test_study_name_ignores_trial_count_and_timeout(tune: dict[str, Any]) -> None:
    assert study_name(_params(tune=tune)) == study_name(_params())


def test_study_name_ignores_space_key_order() -> None:
    lr = {"type": "float", "low": 1e-4, "high": 1e-2}
    wd = {"type": "float", "low": 0.0, "high": 0.1}
    a = _params(tune={"space": {"learning_rate": lr, "weight_decay": wd}})
    b = _params(tune={"space": {"weight_decay": wd, "learning_rate": lr}})
    assert study_name(a) == study_name(b)


def test_study_name_honours_tune_study_name() -> None:
    assert study_name(_params(tune={"study_name": "fixed.name_1"})) == "fixed.name_1"
    changed = _params(train={"learning_rate": 0.05}, tune={"study_name": "fixed.name_1"})
    assert study_name(changed) == "fixed.name_1"

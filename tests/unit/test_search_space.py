"""search_space: suggestions from a duck-typed trial, and derived train sections."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from pydantic import ValidationError

from mlops.params import DataParams, Distribution, ModelParams, TrainParams, TransformerParams
from mlops.tuning.search_space import FAMILIES, data_values, derive, derive_data, suggest


class FakeTrial:
    """Records every `suggest_*` call; answers with a fixed value, else low / first choice."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[Any, ...]] = []

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self.calls.append(("float", name, low, high, step, log))
        return self.answers.get(name, low)

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        self.calls.append(("int", name, low, high, step, log))
        return self.answers.get(name, low)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.calls.append(("categorical", name, choices))
        return self.answers.get(name, choices[0])

    @property
    def names(self) -> list[str]:
        return [c[1] for c in self.calls]


def _f(low: float, high: float, **kw: Any) -> Distribution:
    return Distribution(type="float", low=low, high=high, **kw)


def _i(low: float, high: float, **kw: Any) -> Distribution:
    return Distribution(type="int", low=low, high=high, **kw)


def _c(*choices: Any) -> Distribution:
    return Distribution(type="categorical", choices=list(choices))


# --- suggest -------------------------------------------------------------------------


def test_float_log_is_passed_through() -> None:
    trial = FakeTrial()
    values = suggest(trial, {"learning_rate": _f(1e-4, 1e-2, log=True)}, "mlp")
    assert trial.calls == [("float", "learning_rate", 1e-4, 1e-2, None, True)]
    assert values == {"learning_rate": 1e-4}


def test_float_step_is_passed_through() -> None:
    trial = FakeTrial()
    suggest(trial, {"weight_decay": _f(0.0, 0.1, step=0.01)}, "mlp")
    assert trial.calls == [("float", "weight_decay", 0.0, 0.1, 0.01, False)]


def test_int_bounds_and_step_are_ints() -> None:
    trial = FakeTrial()
    suggest(trial, {"batch_size": _i(16.0, 256.0, step=16.0)}, "mlp")
    [(kind, name, low, high, step, log)] = trial.calls
    assert (kind, name, low, high, step, log) == ("int", "batch_size", 16, 256, 16, False)
    assert all(type(v) is int for v in (low, high, step))


def test_int_without_step_uses_step_one() -> None:
    trial = FakeTrial()
    suggest(trial, {"epochs": _i(1, 10)}, "mlp")
    assert trial.calls == [("int", "epochs", 1, 10, 1, False)]
    assert type(trial.calls[0][4]) is int


def test_int_log_is_passed_through() -> None:
    trial = FakeTrial()
    suggest(trial, {"model.rnn.hidden_size": _i(8, 512, log=True)}, "rnn")
    assert trial.calls == [("int", "model.rnn.hidden_size", 8, 512, 1, True)]


def test_categorical_choices_are_a_fresh_list() -> None:
    dist = _c(32, 64, 128)
    trial = FakeTrial({"batch_size": 64})
    values = suggest(trial, {"batch_size": dist}, "mlp")
    assert values == {"batch_size": 64}
    [(_, name, choices)] = trial.calls
    assert name == "batch_size" and choices == [32, 64, 128]
    assert choices is not dist.choices


def test_empty_space_suggests_nothing() -> None:
    trial = FakeTrial()
    assert suggest(trial, {}, "mlp") == {}
    assert trial.calls == []


def test_params_are_suggested_in_sorted_order() -> None:
    trial = FakeTrial()
    space = {"weight_decay": _f(0, 0.1), "batch_size": _c(32), "learning_rate": _f(0.1, 1)}
    values = suggest(trial, space, "mlp")
    assert trial.names == ["batch_size", "learning_rate", "weight_decay"]
    assert list(values) == ["batch_size", "learning_rate", "weight_decay"]


FAMILY_SPACE: dict[str, Distribution] = {
    "learning_rate": _f(1e-4, 1e-2, log=True),
    "model.mlp.dropout": _f(0.0, 0.5),
    "model.cnn.kernel_size": _i(3, 7, step=2),
    "model.rnn.cell": _c("lstm", "gru"),
    "model.transformer.n_layers": _i(1, 4),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_other_families_params_are_skipped(family: str) -> None:
    trial = FakeTrial()
    values = suggest(trial, FAMILY_SPACE, family)
    own = [p for p in FAMILY_SPACE if p.startswith(f"model.{family}.")]
    assert len(own) == 1
    assert trial.names == sorted(["learning_rate", *own])
    assert set(values) == {"learning_rate", *own}


def test_model_family_is_suggested_first_and_governs_family_params() -> None:
    space = {**FAMILY_SPACE, "batch_size": _c(32, 64), "model.family": _c("mlp", "cnn")}
    trial = FakeTrial({"model.family": "cnn"})
    values = suggest(trial, space, "mlp")  # the base family loses to the suggested one
    assert trial.names[0] == "model.family"
    assert trial.names == ["model.family", "batch_size", "learning_rate", "model.cnn.kernel_size"]
    assert values["model.family"] == "cnn"
    assert "model.mlp.dropout" not in values
    assert trial.names.count("model.family") == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_suggested_family_selects_its_params(family: str) -> None:
    space = {**FAMILY_SPACE, "model.family": _c(*FAMILIES)}
    trial = FakeTrial({"model.family": family})
    values = suggest(trial, space, "mlp")
    family_params = {p for p in values if p.startswith("model.") and p != "model.family"}
    assert family_params == {p for p in FAMILY_SPACE if p.startswith(f"model.{family}.")}


def test_non_family_model_paths_are_always_searched() -> None:
    # `model.family` is two parts: not a family-specific param.
    trial = FakeTrial()
    values = suggest(trial, {"model.family": _c("rnn")}, "mlp")
    assert values == {"model.family": "rnn"}


def test_suggest_works_with_a_real_optuna_trial() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = {
        "learning_rate": _f(1e-4, 1e-2, log=True),
        "batch_size": _i(16, 64, step=16),
        "model.family": _c("mlp", "transformer"),
        "model.mlp.dropout": _f(0.0, 0.5, step=0.1),
        "model.transformer.n_heads": _c(1, 2, 4),
    }
    for _ in range(8):
        trial = study.ask()
        values = suggest(trial, space, "mlp")
        assert 1e-4 <= values["learning_rate"] <= 1e-2
        assert values["batch_size"] in (16, 32, 48, 64)
        family = values["model.family"]
        other = "transformer" if family == "mlp" else "mlp"
        assert not any(k.startswith(f"model.{other}.") for k in values)
        assert trial.params == values
        derived = derive(TrainParams(), values, epochs=2)
        assert derived.model.family == family
        study.tell(trial, 0.0)


# --- derive --------------------------------------------------------------------------


def test_derive_sets_top_level_and_nested_paths() -> None:
    base = TrainParams()
    new = derive(
        base,
        {
            "learning_rate": 0.01,
            "batch_size": 128,
            "schedule.gamma": 0.25,
            "early_stopping.patience": 3,
            "model.mlp.dropout": 0.3,
            "model.cnn.pooling": "avg",
        },
    )
    assert new.learning_rate == 0.01
    assert new.batch_size == 128
    assert new.schedule.gamma == 0.25
    assert new.early_stopping.patience == 3
    assert new.model.mlp.dropout == 0.3
    assert new.model.cnn.pooling == "avg"
    # Everything else is the base's.
    assert new.weight_decay == base.weight_decay
    assert new.model.mlp.hidden_sizes == base.model.mlp.hidden_sizes
    assert new.schedule.name == base.schedule.name


@pytest.mark.parametrize(
    ("path", "value"),
    [("weight_decay", 0), ("learning_rate", 1), ("model.mlp.dropout", 0), ("schedule.gamma", 1)],
)
def test_derive_coerces_int_to_float_for_float_fields(path: str, value: int) -> None:
    new = derive(TrainParams(), {path: value})
    got: Any = new.model_dump()
    for part in path.split("."):
        got = got[part]
    assert type(got) is float
    assert got == float(value)


def test_derive_keeps_int_fields_int() -> None:
    new = derive(TrainParams(), {"batch_size": 32, "model.transformer.n_layers": 3})
    assert type(new.batch_size) is int and new.batch_size == 32
    assert type(new.model.transformer.n_layers) is int


def test_derive_rejects_float_for_int_field() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        derive(TrainParams(), {"batch_size": 32.5})


def test_derive_epochs_override() -> None:
    assert derive(TrainParams(), {}, epochs=5).epochs == 5
    assert derive(TrainParams(), {"epochs": 7}, epochs=3).epochs == 3
    assert derive(TrainParams(), {"epochs": 7}).epochs == 7
    assert derive(TrainParams(), {}).epochs == TrainParams().epochs


def test_derive_epochs_override_is_validated() -> None:
    with pytest.raises(ValueError, match="epochs"):
        derive(TrainParams(), {}, epochs=0)


def test_derive_switches_family() -> None:
    new = derive(TrainParams(), {"model.family": "transformer"})
    assert new.model.family == "transformer"
    assert isinstance(new.model.selected, TransformerParams)


def test_derive_does_not_change_the_base() -> None:
    base = TrainParams(model=ModelParams(family="cnn"), learning_rate=0.005)
    before = base.model_dump()
    new = derive(
        base,
        {"learning_rate": 0.1, "model.cnn.dropout": 0.4, "model.family": "mlp"},
        epochs=2,
    )
    assert base.model_dump() == before
    assert new is not base
    assert new.model_dump() != before
    assert (base.learning_rate, base.model.family, base.epochs) == (0.005, "cnn", 60)


def test_derive_without_values_equals_the_base() -> None:
    base = TrainParams(batch_size=16)
    assert derive(base, {}) == base


def test_derive_result_is_frozen() -> None:
    new = derive(TrainParams(), {"learning_rate": 0.02})
    with pytest.raises(ValidationError):
        new.learning_rate = 0.5


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"model.transformer.d_model": 30, "model.transformer.n_heads": 4}, "multiple of n_heads"),
        ({"model.transformer.n_heads": 3}, "multiple of n_heads"),
        ({"learning_rate": -0.1}, "greater than 0"),
        ({"learning_rate": 0.0}, "greater than 0"),
        ({"model.mlp.dropout": 1.0}, "less than 1"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"model.family": "gpt"}, "family"),
        ({"batch_size": "64"}, "batch_size"),
    ],
)
def test_derive_impossible_combination_raises_value_error(
    values: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError) as info:
        derive(TrainParams(), values)
    assert fragment in str(info.value)


def test_derive_checks_the_combination_not_each_value() -> None:
    # d_model 96 with 4 heads is fine, and 3 heads with 96 too, but not 5 heads.
    ok = derive(TrainParams(), {"model.transformer.d_model": 96, "model.transformer.n_heads": 3})
    assert ok.model.transformer.n_heads == 3
    with pytest.raises(ValueError, match="multiple of n_heads"):
        derive(TrainParams(), {"model.transformer.d_model": 96, "model.transformer.n_heads": 5})


def test_derive_rejects_bool_for_float_field() -> None:
    with pytest.raises(ValueError):
        derive(TrainParams(), {"learning_rate": True})


# --- data params: each searched value lands in its own section ------------------------


def test_derive_leaves_data_paths_to_derive_data() -> None:
    values = {"learning_rate": 0.02, "data.tokenizer.vocab_size": 500}
    assert derive(TrainParams(), values) == derive(TrainParams(), {"learning_rate": 0.02})
    data = derive_data(DataParams(), values)
    assert data.tokenizer.vocab_size == 500
    assert data.tokenizer.max_length == DataParams().tokenizer.max_length
    assert data_values(values) == {"data.tokenizer.vocab_size": 500}


def test_derive_data_without_data_values_is_the_same_section() -> None:
    base = DataParams(source="x.csv", target="y")
    assert derive_data(base, {"learning_rate": 0.1}) is base


def test_derive_data_sets_each_searched_data_param() -> None:
    data = derive_data(
        DataParams(),
        {
            "data.tokenizer.kind": "wordpiece",
            "data.tokenizer.lowercase": False,
            "data.tokenizer.embedding_dim": 32,
            "data.one_hot_max": 4,
        },
    )
    assert (data.tokenizer.kind, data.tokenizer.lowercase) == ("wordpiece", False)
    assert (data.tokenizer.embedding_dim, data.one_hot_max) == (32, 4)


def test_derive_data_refuses_an_impossible_value() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        derive_data(DataParams(), {"data.tokenizer.vocab_size": 10})

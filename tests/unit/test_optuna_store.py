"""optuna_store (grid, sampler, pruner, counts) and sweep helpers on in-memory studies."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Literal

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages._rdb import models
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from mlops.errors import UserError
from mlops.params import Distribution, TuneParams
from mlops.tuning.retry import RetryingRDBStorage
from mlops.tuning.search_space import suggest
from mlops.tuning.service import best_trials
from mlops.tuning.storage import Counts, counts, grid, pruner, sampler, storage, worker_seed

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _tune(**kw: Any) -> TuneParams:
    return TuneParams(**kw)


# --- grid ----------------------------------------------------------------------------


def test_grid_int_with_step() -> None:
    p = _tune(space={"batch_size": Distribution(type="int", low=16, high=64, step=16)})
    g = grid(p)
    assert g == {"batch_size": [16, 32, 48, 64]}
    assert all(type(v) is int for v in g["batch_size"])


def test_grid_int_without_step_is_every_integer() -> None:
    g = grid(_tune(space={"epochs": Distribution(type="int", low=1, high=5)}))
    assert g == {"epochs": [1, 2, 3, 4, 5]}
    assert all(type(v) is int for v in g["epochs"])


def test_grid_float_with_step() -> None:
    d = Distribution(type="float", low=0.0, high=0.5, step=0.25)
    g = grid(_tune(sampler="grid", space={"model.mlp.dropout": d}))
    assert g == {"model.mlp.dropout": [0.0, 0.25, 0.5]}
    assert all(type(v) is float for v in g["model.mlp.dropout"])


def test_grid_float_with_inexact_step_is_close() -> None:
    d = Distribution(type="float", low=0.1, high=0.5, step=0.1)
    values = grid(_tune(sampler="grid", space={"weight_decay": d}))["weight_decay"]
    assert values == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_grid_categorical_keeps_choices() -> None:
    d = Distribution(type="categorical", choices=["relu", "gelu", "silu"])
    assert grid(_tune(space={"model.mlp.activation": d})) == {
        "model.mlp.activation": ["relu", "gelu", "silu"]
    }


def test_grid_of_several_params_and_empty_space() -> None:
    p = _tune(
        sampler="grid",
        space={
            "batch_size": Distribution(type="categorical", choices=[32, 64]),
            "learning_rate": Distribution(type="float", low=0.01, high=0.02, step=0.01),
        },
    )
    assert set(grid(p)) == {"batch_size", "learning_rate"}
    assert grid(_tune()) == {}


def test_grid_never_exceeds_high_when_step_does_not_divide_range() -> None:
    p = _tune(
        sampler="grid",
        space={
            "batch_size": Distribution(type="int", low=1, high=4, step=2),
            "model.mlp.dropout": Distribution(type="float", low=0.0, high=0.5, step=0.3),
        },
    )
    g = grid(p)
    assert max(g["batch_size"]) <= 4
    assert max(g["model.mlp.dropout"]) <= 0.5


def test_grid_float_points_stay_within_bounds() -> None:
    d = Distribution(type="float", low=0.0, high=0.3, step=0.1)
    values = grid(_tune(sampler="grid", space={"weight_decay": d}))["weight_decay"]
    assert max(values) <= 0.3


# --- sampler and pruner --------------------------------------------------------------

GRID_SPACE = {"batch_size": Distribution(type="categorical", choices=[32, 64])}


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("grid", optuna.samplers.GridSampler),
    ],
)
def test_sampler_class_per_name(name: str, cls: type) -> None:
    s = sampler(_tune(sampler=name, seed=7, space=GRID_SPACE))
    assert type(s) is cls


def test_random_sampler_is_seeded() -> None:
    def draws(seed: int) -> list[float]:
        study = optuna.create_study(sampler=sampler(_tune(sampler="random", seed=seed)))
        out = []
        for _ in range(5):
            t = study.ask()
            out.append(t.suggest_float("x", 0.0, 1.0))
            study.tell(t, 0.0)
        return out

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_grid_sampler_walks_the_whole_grid() -> None:
    p = _tune(
        sampler="grid",
        space={
            "batch_size": Distribution(type="categorical", choices=[32, 64]),
            "epochs": Distribution(type="int", low=1, high=3),
        },
    )
    study = optuna.create_study(sampler=sampler(p))
    seen = []

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, p.space, "mlp")
        seen.append((values["batch_size"], values["epochs"]))
        return 0.0

    study.optimize(objective, n_trials=20)  # the grid sampler stops the study when done
    assert sorted(seen) == sorted((b, e) for b in (32, 64) for e in (1, 2, 3))


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_pruner_class_per_name(name: str, cls: type) -> None:
    assert type(pruner(_tune(pruner=name))) is cls


def test_nop_pruner_never_prunes() -> None:
    study = optuna.create_study(pruner=pruner(_tune(pruner="none")))
    for value in (0.0, 0.0, 0.0):
        t = study.ask()
        t.report(value, 0)
        study.tell(t, value)
    t = study.ask()
    t.report(1e9, 0)
    assert not t.should_prune()


# --- counts --------------------------------------------------------------------------


def _tell(study: optuna.Study, state: TrialState, value: float | None = None) -> None:
    trial = study.ask()
    study.tell(trial, value, state=state)


def test_counts_by_state_and_best_minimize() -> None:
    study = optuna.create_study(direction="minimize")
    _tell(study, TrialState.COMPLETE, 0.5)
    _tell(study, TrialState.COMPLETE, 0.2)
    _tell(study, TrialState.COMPLETE, 0.9)
    _tell(study, TrialState.PRUNED)
    _tell(study, TrialState.PRUNED)
    _tell(study, TrialState.FAIL)
    study.ask()  # left running
    study.enqueue_trial({"x": 1.0})  # waiting
    c = counts(study)
    assert c == Counts(complete=3, pruned=2, fail=1, running=1, waiting=1, best=0.2)
    assert c.finished == 5


def test_counts_best_maximize() -> None:
    study = optuna.create_study(direction="maximize")
    for v in (0.5, 0.8, 0.1):
        _tell(study, TrialState.COMPLETE, v)
    assert counts(study).best == 0.8


def test_counts_empty_study() -> None:
    c = counts(optuna.create_study())
    assert c == Counts(0, 0, 0, 0, 0, None)
    assert c.finished == 0


def test_counts_best_is_none_without_a_complete_trial() -> None:
    study = optuna.create_study()
    _tell(study, TrialState.PRUNED)
    _tell(study, TrialState.FAIL)
    study.ask()
    c = counts(study)
    assert (c.complete, c.pruned, c.fail, c.running) == (0, 1, 1, 1)
    assert c.best is None
    assert c.finished == 1


def test_counts_is_frozen() -> None:
    c = counts(optuna.create_study())
    with pytest.raises(AttributeError):
        c.complete = 3  # type: ignore[misc]


# --- worker seeds ------------------------------------------------------------------


def test_worker_seeds_differ_per_worker_and_per_sweep_and_repeat() -> None:
    seeds = {worker_seed(7, str(i), start) for i in range(64) for start in (0, 10, 20)}
    assert len(seeds) == 64 * 3
    assert worker_seed(7, "3", 10) == worker_seed(7, "3", 10)
    assert worker_seed(7, "hostb-1", 0) != worker_seed(8, "hostb-1", 0)
    assert all(0 <= s < 2**32 for s in seeds)


def test_worker_0_of_a_new_study_keeps_tune_seed() -> None:
    """As the tune stage, which runs one worker with `tune.seed`."""
    assert worker_seed(7, "0", 0) == 7
    assert worker_seed(7, "0", 5) != 7


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "grid"])
def test_two_worker_seeds_suggest_different_configurations(name: str) -> None:
    """Two samplers of one sweep, each told the other's trials as they end: with one
    seed for both they suggested the same configurations, trial for trial."""
    space = {"learning_rate": Distribution(type="float", low=0.0, high=1.0, step=0.001)}
    p = _tune(sampler=name, seed=0, space=space)
    storage = optuna.storages.InMemoryStorage()
    seeds = (worker_seed(0, "0", 0), worker_seed(0, "1", 0))
    studies = [
        optuna.create_study(
            study_name="s", storage=storage, sampler=sampler(p, seed), load_if_exists=True
        )
        for seed in seeds
    ]
    configs = []
    for _ in range(3):
        asked = [(study, study.ask()) for study in studies]  # both running at once
        for study, trial in asked:
            values = suggest(trial, p.space, "mlp")
            configs.append(tuple(sorted(values.items())))
            study.tell(trial, float(len(configs)))
    assert len(set(configs)) == len(configs), configs


def test_tpe_runs_with_constant_liar() -> None:
    s = sampler(_tune(sampler="tpe"))
    assert isinstance(s, optuna.samplers.TPESampler)
    assert s._constant_liar is True


# --- sweep.best_trials ---------------------------------------------------------------


def _study_with(direction: Literal["minimize", "maximize"], values: list[float]) -> optuna.Study:
    study = optuna.create_study(direction=direction)
    for i, v in enumerate(values):
        study.add_trial(
            create_trial(
                params={"x": float(i)},
                distributions={"x": FloatDistribution(0.0, 100.0)},
                value=v,
                user_attrs={"mlflow_run_id": f"run{i}"},
            )
        )
    study.add_trial(create_trial(state=TrialState.PRUNED, value=None))
    study.add_trial(create_trial(state=TrialState.FAIL, value=None))
    return study


def test_best_trials_maximize_orders_highest_first() -> None:
    study = _study_with("maximize", [0.5, 0.9, 0.1, 0.7])
    best = best_trials(study)
    assert [b["value"] for b in best] == [0.9, 0.7, 0.5, 0.1]
    assert [b["number"] for b in best] == [1, 3, 0, 2]
    assert best[0] == {"number": 1, "value": 0.9, "params": {"x": 1.0}, "mlflow_run_id": "run1"}


def test_best_trials_minimize_orders_lowest_first() -> None:
    study = _study_with("minimize", [0.5, 0.9, 0.1, 0.7])
    best = best_trials(study)
    assert [b["value"] for b in best] == [0.1, 0.5, 0.7, 0.9]
    assert best[0]["mlflow_run_id"] == "run2"
    assert best[0]["number"] == study.best_trial.number


def test_best_trials_top_limits_and_skips_unfinished() -> None:
    study = _study_with("maximize", [float(v) for v in range(10)])
    study.ask()  # running: not listed
    best = best_trials(study, top=3)
    assert [b["value"] for b in best] == [9.0, 8.0, 7.0]
    assert len(best_trials(study)) == 5
    assert len(best_trials(study, top=100)) == 10


def test_best_trials_missing_run_id_is_empty_string() -> None:
    study = optuna.create_study(direction="maximize")
    _tell(study, TrialState.COMPLETE, 1.0)
    assert best_trials(study) == [{"number": 0, "value": 1.0, "params": {}, "mlflow_run_id": ""}]


def test_best_trials_of_empty_study() -> None:
    assert best_trials(optuna.create_study()) == []


def _raise(exc: BaseException) -> Any:
    def objective(_trial: optuna.Trial) -> float:
        raise exc

    return objective


def test_a_stopped_trial_logs_no_failure_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C ends a trial: the worker or the sweep says it stopped, Optuna's two "Trial N
    failed" warnings are not printed; a trial that failed with one of our errors keeps its
    line, without the traceback."""
    study = optuna.create_study(storage=storage(f"sqlite:///{tmp_path / 'o.db'}"))
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="optuna"):
            with pytest.raises(KeyboardInterrupt):
                study.optimize(_raise(KeyboardInterrupt()), n_trials=1)
            study.optimize(_raise(UserError("bad value")), n_trials=1, catch=(UserError,))
    finally:
        optuna.logging.disable_propagation()
    said = [(r.getMessage(), r.exc_info) for r in caplog.records]
    assert not [m for m, _ in said if m.startswith("Trial 0 ")], said
    # (caplog sees a record on the optuna logger and again at the root: compare as a set)
    failed = {(m, info) for m, info in said if m.startswith("Trial 1 failed with parameters")}
    assert len(failed) == 1, said
    [(message, traceback)] = failed
    assert "bad value" in message and traceback is None, said


def test_two_workers_failing_one_stale_trial_fail_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read the trial RUNNING before either writes (SQLite ignores FOR UPDATE):
    exactly one may fail it, or both would queue its retry (seen in a sweep test)."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first, second = RetryingRDBStorage(url), RetryingRDBStorage(url)
    study = first.create_new_study([StudyDirection.MINIMIZE], "race")
    trial = first.create_new_trial(study)
    assert first.get_trial(trial).state == TrialState.RUNNING
    both_read = threading.Barrier(2, timeout=5)
    read = models.TrialModel.find_or_raise_by_id.__func__  # type: ignore[attr-defined]

    def read_then_wait(cls: Any, *args: Any, **kwargs: Any) -> Any:
        found = read(cls, *args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()  # the other worker reads too before anyone writes
        return found

    monkeypatch.setattr(models.TrialModel, "find_or_raise_by_id", classmethod(read_then_wait))
    outcomes: list[str] = []

    def fail(storage: RetryingRDBStorage) -> None:
        try:
            outcomes.append(str(storage.set_trial_state_values(trial, TrialState.FAIL)))
        except UpdateFinishedTrialError:
            outcomes.append("already finished")

    threads = [threading.Thread(target=fail, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["True", "already finished"], outcomes
    assert first.get_trial(trial).state == TrialState.FAIL

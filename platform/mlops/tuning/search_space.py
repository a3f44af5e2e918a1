"""From a search space and a trial's suggestions to a new train section (and, where the
space searches how columns are encoded, a new data section). Pure: the trial is anything
with Optuna's `suggest_*` methods, so this never imports Optuna and tuning never mutates
the base params."""

from __future__ import annotations

from typing import Any, Protocol

from mlops.params import DataParams, Distribution, TrainParams, is_data_param

FAMILIES = ("mlp", "cnn", "rnn", "transformer")


class Suggests(Protocol):
    """The part of `optuna.Trial` a search space needs."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def _suggest(trial: Suggests, name: str, dist: Distribution) -> Any:
    if dist.type == "categorical":
        return trial.suggest_categorical(name, list(dist.choices or []))
    assert dist.low is not None and dist.high is not None
    if dist.type == "int":
        step = int(dist.step) if dist.step else 1
        return trial.suggest_int(name, int(dist.low), int(dist.high), step=step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def suggest(trial: Suggests, space: dict[str, Distribution], family: str) -> dict[str, Any]:
    """One value per searched param; params of a family other than the trial's are not
    searched (the family itself may be: `model.family`)."""
    values: dict[str, Any] = {}
    if "model.family" in space:
        family = str(_suggest(trial, "model.family", space["model.family"]))
        values["model.family"] = family
    for path in sorted(space):
        if path == "model.family":
            continue
        parts = path.split(".")
        if len(parts) > 2 and parts[0] == "model" and parts[1] in FAMILIES and parts[1] != family:
            continue
        values[path] = _suggest(trial, path, space[path])
    return values


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    node = tree
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    old = node[leaf]
    numeric = isinstance(value, int) and not isinstance(value, bool)
    node[leaf] = float(value) if isinstance(old, float) and numeric else value


def derive(train: TrainParams, values: dict[str, Any], epochs: int | None = None) -> TrainParams:
    """A new train section: `train` with each dotted train path set to its value (data
    paths, `data.…`, are `derive_data`'s); validated like params.yaml, so an impossible
    combination raises `ValueError`."""
    tree = train.model_dump(mode="json")
    for path, value in values.items():
        if not is_data_param(path):
            _set(tree, path, value)
    if epochs is not None:
        tree["epochs"] = epochs
    return TrainParams.model_validate(tree)


def data_values(values: dict[str, Any]) -> dict[str, Any]:
    """The values of searched data params (`data.tokenizer.vocab_size`, ...)."""
    return {path: value for path, value in values.items() if is_data_param(path)}


def derive_data(data: DataParams, values: dict[str, Any]) -> DataParams:
    """A new data section: `data` with each searched data path (`data.…`) set to its
    value (train paths are `derive`'s); validated, an impossible value raises `ValueError`."""
    found = data_values(values)
    if not found:
        return data
    tree = {"data": data.model_dump(mode="json")}
    for path, value in found.items():
        _set(tree, path, value)
    return DataParams.model_validate(tree["data"])

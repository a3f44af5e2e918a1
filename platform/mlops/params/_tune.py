"""The `tune:` section of params.yaml: trials, sampler, pruner, and the search space.

The space maps a train param, written as its dotted path under `train`
(`learning_rate`, `model.mlp.dropout`), to a distribution. A path under
`model.<family>.` is searched only in trials of that family. A few data params that
shape how a mixed table is encoded are searched by their full path (`DATA_PARAMS`:
`data.tokenizer.vocab_size`, ...): a trial refits the encoding on the train split.
Every check is one line naming the key (exit 2), before any compute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops.errors import UserError
from mlops.limits import MAX_SECONDS

Scalar = bool | int | float | str


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class Distribution(_Section):
    """One searched param: `float` (optionally `log`), `int` (optionally `step`, `log`),
    or `categorical` (`choices`)."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: Annotated[float, Field(gt=0)] | None = None
    choices: list[Scalar] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Distribution:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty `choices` list")
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError("categorical takes `choices` only (no low/high/log/step)")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not `choices`")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs `low` and `high`")
        if self.low >= self.high:
            raise ValueError(f"empty range: low {self.low:g} >= high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined")
        if self.type == "int":
            for name, v in (("low", self.low), ("high", self.high), ("step", self.step)):
                if v is not None and float(v) != int(v):
                    raise ValueError(f"int needs a whole `{name}` (got {v:g})")
        return self


class TuneParams(_Section):
    """How the `tune` stage and `mlops sweep` search: trials, time, sampler, pruner, space."""

    n_trials: Annotated[int, Field(ge=0, le=100_000)] = 0
    timeout: Annotated[float, Field(gt=0, le=MAX_SECONDS)] | None = None
    metric: Literal["val_loss", "val_accuracy", "val_f1_macro", "val_rmse", "val_mae", "val_r2"] = (
        "val_accuracy"
    )
    sampler: Literal["tpe", "random", "cmaes", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "successive_halving", "none"] = "successive_halving"
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    epochs: Annotated[int, Field(ge=1)] | None = None
    study_name: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
    space: dict[str, Distribution] = {}

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        """Losses and errors are minimised, the rest maximised."""
        return "minimize" if self.metric in ("val_loss", "val_rmse", "val_mae") else "maximize"

    @model_validator(mode="after")
    def _grid_is_finite(self) -> TuneParams:
        if self.n_trials > 0 and not self.space:
            raise ValueError("space: empty, but n_trials > 0 asks for tuning")
        if self.sampler == "grid":
            for name, dist in self.space.items():
                if dist.type == "float" and dist.step is None:
                    raise ValueError(f"space.{name}: the grid sampler needs a `step` for floats")
        return self

    def space_paths(self) -> list[str]:
        """The searched train params, in a stable order."""
        return sorted(self.space)


def require_space(space: Mapping[str, Any], purpose: str) -> None:
    """Refuse (one line) a search over an empty `tune.space`; `purpose` says what needed it."""
    if not space:
        raise UserError(f"params.yaml: tune.space is empty: {purpose} has nothing to search")


# The data params a search may set: how text and categorical columns are encoded.
DATA_PARAMS = (
    "data.category_embedding_max",
    "data.max_categories",
    "data.one_hot_max",
    "data.tokenizer.embedding_dim",
    "data.tokenizer.kind",
    "data.tokenizer.lowercase",
    "data.tokenizer.max_length",
    "data.tokenizer.vocab_size",
)


def is_data_param(path: str) -> bool:
    """Whether a searched path names a data param (`data.…`) rather than a train one."""
    return path.startswith("data.")


def check_space(
    space: dict[str, Distribution], train: dict[str, Any], data: dict[str, Any]
) -> None:
    """Every searched name must be a leaf of the train section, or one of `DATA_PARAMS`
    (`train` and `data` as plain values)."""
    for path, dist in space.items():
        if is_data_param(path) and path not in DATA_PARAMS:
            raise ValueError(
                f"space.{path}: not a searchable data param (these are: {', '.join(DATA_PARAMS)})"
            )
        node: Any = {"data": data} if is_data_param(path) else train
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(
                    f"space.{path}: not a train param (e.g. learning_rate, model.mlp.dropout)"
                )
            node = node[part]
        if isinstance(node, dict):
            raise ValueError(f"space.{path}: a section, not a single train param")
        _check_kind(path, dist, node)


def _check_kind(path: str, dist: Distribution, default: Any) -> None:
    """The distribution must produce values of the param's type."""
    where = f"space.{path}"
    if isinstance(default, list):
        raise ValueError(f"{where}: a list param cannot be searched")
    if dist.type == "categorical":
        for choice in dist.choices or []:
            ok = (isinstance(choice, bool) == isinstance(default, bool)) and (
                isinstance(choice, str) == isinstance(default, str)
            )
            if isinstance(default, int) and not isinstance(default, bool):
                ok = ok and isinstance(choice, int)
            if not ok:
                raise ValueError(
                    f"{where}: choice {choice!r} does not fit the param (default {default!r})"
                )
        return
    if isinstance(default, (bool, str)):
        raise ValueError(f"{where}: a {type(default).__name__} param needs `categorical`")
    if isinstance(default, int) and dist.type == "float":
        raise ValueError(f"{where}: a whole-number param needs `int` or `categorical`")

"""The typed sections of params.yaml: what changes results (DVC tracks every key).

Each section is a frozen pydantic model with `extra="forbid"`, strict types and no
NaN or infinity; each stage reads its own section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops.params._model import TrainParams
from mlops.params._monitor import MonitorParams
from mlops.params._registry import RegistryParams
from mlops.params._tune import TuneParams, check_space

PARAMS_FILE = "params.yaml"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class PipelineParams(_Section):
    """Names the pipeline: its MLflow experiment and, by default, its registered model."""

    name: Name = "digits"


class DataParams(_Section):
    """Where the data comes from: `builtin:digits`, or a CSV/Parquet file with a target column."""

    source: str = Field(default="builtin:digits", min_length=1)
    target: str = Field(default="target", min_length=1)
    max_rows: Annotated[int, Field(ge=10)] | None = None
    input_shape: (
        Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=3)] | None
    ) = None
    seed: Seed = 0
    task: Literal["auto", "classification", "regression"] = "auto"

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if source.startswith("builtin:"):
            if source != "builtin:digits":
                raise ValueError("unknown builtin data set (known: builtin:digits)")
        elif Path(source).suffix.lower() not in {".csv", ".parquet", ".pq"}:
            raise ValueError("must be builtin:digits or a .csv/.parquet file")
        return source


class ValidateParams(_Section):
    """Thresholds under which the data is declared unusable."""

    min_rows_per_class: Annotated[int, Field(ge=1)] = 10
    max_missing_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    max_duplicate_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    max_classes: Annotated[int, Field(ge=2, le=10_000)] = 1000


class SplitParams(_Section):
    """Stratified train/val/test split."""

    seed: Seed = 42
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.15

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} "
                "must leave at least 10% for training"
            )
        return self


class EvaluateParams(_Section):
    """Evaluation on the held-out test split."""

    primary_metric: Literal["accuracy", "f1_macro", "rmse", "mae", "r2"] = "accuracy"


class RegisterParams(_Section):
    """Registration in the MLflow model registry."""

    model_name: Name | None = None


class SweepScheduleParams(_Section):
    """What scheduled sweeps do besides tuning (`mlops schedule …`)."""

    register_best: bool = False  # register the best trial's model as a challenger version


class Params(_Section):
    """Every section of params.yaml; each stage reads its own."""

    pipeline: PipelineParams = PipelineParams()
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    tune: TuneParams = TuneParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register_: RegisterParams = Field(default=RegisterParams(), alias="register")
    registry: RegistryParams = RegistryParams()
    schedule: SweepScheduleParams = SweepScheduleParams()
    monitor: MonitorParams = MonitorParams()

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `train:` with nothing under it means "all defaults", as an empty file does.
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _space_names_train_params(self) -> Params:
        try:
            check_space(self.tune.space, self.train.model_dump(mode="json"))
        except ValueError as exc:
            raise ValueError(f"tune.{exc}") from None
        return self

    @property
    def model_name(self) -> str:
        """The registered model's name: `register.model_name`, else the pipeline's name."""
        return self.register_.model_name or self.pipeline.name

    def as_dict(self) -> dict[str, Any]:
        """Plain values, keyed as in params.yaml."""
        return self.model_dump(mode="json", by_alias=True)

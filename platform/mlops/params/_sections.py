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


TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
Side = Annotated[int, Field(ge=4, le=1024)]


class ImageParams(_Section):
    """What every image is decoded to: `size` [height, width] and `channels` (1 or 3)."""

    size: Annotated[list[Side], Field(min_length=2, max_length=2)] = [32, 32]
    channels: Literal[1, 3] = 3


ColumnKind = Literal["numeric", "categorical", "text", "drop"]
ColumnName = Annotated[str, Field(min_length=1, max_length=200)]


class TokenizerParams(_Section):
    """How text columns become token ids: a subword tokenizer trained on the train split
    (`bpe` or `wordpiece`, `vocab_size` pieces with the specials), `lowercase` first;
    a row's tokens cut at `max_length`, each embedded in `embedding_dim` values."""

    kind: Literal["bpe", "wordpiece"] = "bpe"
    vocab_size: Annotated[int, Field(ge=50, le=1_000_000)] = 8000
    lowercase: bool = True
    max_length: Annotated[int, Field(ge=1, le=4096)] = 128
    embedding_dim: Annotated[int, Field(ge=2, le=1024)] = 64


class DataParams(_Section):
    """Where the data comes from: `builtin:digits`, a CSV/Parquet file with a target
    column, or a folder of images with one subfolder per class."""

    source: str = Field(default="builtin:digits", min_length=1)
    target: str = Field(default="target", min_length=1)
    max_rows: Annotated[int, Field(ge=10)] | None = None
    input_shape: (
        Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=3)] | None
    ) = None
    seed: Seed = 0
    task: Literal["auto", "classification", "regression"] = "auto"
    image_column: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    image: ImageParams | None = None
    # A table's columns by name: numeric, categorical, text or drop (the rest inferred).
    columns: dict[ColumnName, ColumnKind] = Field(default_factory=dict, max_length=10_000)
    # Free-text columns (joined by a separator token, in this order); also data.columns.
    text: ColumnName | list[ColumnName] | None = None
    tokenizer: TokenizerParams = TokenizerParams()
    one_hot_max: Annotated[int, Field(ge=0, le=1000)] = 16  # more categories: an embedding
    max_categories: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # The widest a categorical column's embedding gets (1.6 * n^0.56 below that).
    category_embedding_max: Annotated[int, Field(ge=2, le=1024)] = 32

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if source.startswith("builtin:"):
            if source != "builtin:digits":
                raise ValueError("unknown builtin data set (known: builtin:digits)")
        elif Path(source).suffix.lower() not in {*TABLE_SUFFIXES, ""}:
            raise ValueError(
                "must be builtin:digits, a .csv/.parquet file or a folder of class subfolders"
            )
        return source

    @property
    def is_folder(self) -> bool:
        """Whether the source names a folder of images (no file suffix)."""
        return not self.source.startswith("builtin:") and Path(self.source).suffix == ""

    @property
    def text_columns(self) -> list[str]:
        """The columns `data.text` names, in order."""
        return [self.text] if isinstance(self.text, str) else list(self.text or [])

    @property
    def declared(self) -> dict[str, str]:
        """Every column kind the params state: `data.columns` and `data.text`."""
        return {**self.columns, **{c: "text" for c in self.text_columns}}

    @property
    def images(self) -> ImageParams | None:
        """How images are decoded, for an image source (a folder, or a table with
        `image_column`); None for numeric data."""
        if self.is_folder or self.image_column is not None:
            return self.image or ImageParams()
        return None

    @model_validator(mode="after")
    def _image_settings_fit(self) -> DataParams:
        if self.images is not None and self.input_shape is not None:
            raise ValueError("input_shape: an image source takes its shape from data.image")
        if self.image is not None and self.images is None:
            raise ValueError(
                "image: needs an image source (a folder, or a table with data.image_column)"
            )
        if (self.columns or self.text) and self.images is not None:
            raise ValueError("columns: an image source has no table columns to declare")
        clash = [c for c in self.text_columns if self.columns.get(c, "text") != "text"]
        if clash:
            raise ValueError(f"text: {clash[0]!r} is declared {self.columns[clash[0]]} in columns")
        if self.image_column is not None and self.is_folder:
            raise ValueError("image_column: a folder source has no columns (drop it)")
        return self


class ValidateParams(_Section):
    """Thresholds under which the data is declared unusable."""

    min_rows_per_class: Annotated[int, Field(ge=1)] = 10
    # a mixed table: the most a feature column may be empty; else: rows with a gap
    max_missing_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    max_duplicate_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    max_classes: Annotated[int, Field(ge=2, le=10_000)] = 1000
    min_image_size: Annotated[int, Field(ge=1, le=4096)] = 8  # pixels, either side
    # text: the most rows whose text is longer than data.tokenizer.max_length (in words;
    # each is cut there, and counted in the report)
    max_truncated_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    min_class_share: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0  # the rarest class's share


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
            check_space(
                self.tune.space,
                self.train.model_dump(mode="json"),
                self.data.model_dump(mode="json"),
            )
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

"""Typed hyperparameters of each model family and of the training engine.

`train.model.family` selects one of the family sections that sit side by side in
params.yaml, so `dvc exp run -S train.model.family=cnn` switches family with one key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Size = Annotated[int, Field(ge=1, le=65_536)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
Activation = Literal["relu", "gelu", "tanh", "silu"]
Family = Literal["mlp", "cnn", "rnn", "transformer"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class MLPParams(_Section):
    """A multi-layer perceptron over the flattened features (any input shape)."""

    hidden_sizes: Annotated[list[Size], Field(min_length=1, max_length=16)] = [256, 128]
    activation: Activation = "relu"
    dropout: Dropout = 0.1
    batch_norm: bool = False


class CNNParams(_Section):
    """Convolution blocks over image-shaped inputs (channels, height, width)."""

    channels: Annotated[list[Size], Field(min_length=1, max_length=8)] = [32, 64]
    kernel_size: Annotated[int, Field(ge=1, le=15)] = 3
    pooling: Literal["max", "avg", "none"] = "max"
    batch_norm: bool = True
    activation: Activation = "relu"
    head_size: Size = 128
    dropout: Dropout = 0.2


class RNNParams(_Section):
    """An LSTM or GRU over a sequence (images are read row by row)."""

    cell: Literal["lstm", "gru"] = "lstm"
    hidden_size: Size = 128
    num_layers: Annotated[int, Field(ge=1, le=8)] = 1
    bidirectional: bool = True
    dropout: Dropout = 0.1


class TransformerParams(_Section):
    """A self-attention encoder over tokens: sequence steps, or one token per feature."""

    d_model: Size = 64
    n_heads: Annotated[int, Field(ge=1, le=64)] = 4
    n_layers: Annotated[int, Field(ge=1, le=24)] = 2
    ff_dim: Size = 128
    dropout: Dropout = 0.1
    positional: Literal["learned", "sinusoidal", "none"] = "learned"
    pooling: Literal["cls", "mean"] = "cls"
    patch_size: Annotated[int, Field(ge=1, le=256)] | None = None  # images: P x P patches

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerParams:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model = {self.d_model} must be a multiple of n_heads = {self.n_heads}"
            )
        return self


FamilyParams = MLPParams | CNNParams | RNNParams | TransformerParams


class ModelParams(_Section):
    """The selected family and every family's hyperparameters (presets side by side)."""

    family: Family = "mlp"
    mlp: MLPParams = MLPParams()
    cnn: CNNParams = CNNParams()
    rnn: RNNParams = RNNParams()
    transformer: TransformerParams = TransformerParams()

    @property
    def selected(self) -> FamilyParams:
        """The hyperparameters of the selected family."""
        return getattr(self, self.family)


class ScheduleParams(_Section):
    """Learning-rate schedule, stepped once per epoch (one-cycle: once per batch)."""

    name: Literal["none", "cosine", "step", "onecycle", "plateau"] = "cosine"
    step_size: Annotated[int, Field(ge=1)] = 20
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    plateau_patience: Annotated[int, Field(ge=0)] = 5
    min_lr: Annotated[float, Field(ge=0.0)] = 0.0
    pct_start: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3


class EarlyStoppingParams(_Section):
    """Stop when the monitored validation metric has not improved for `patience` epochs
    (0: never stop early); the best epoch's weights are the ones kept."""

    metric: Literal["val_loss", "val_accuracy", "val_f1_macro", "val_rmse", "val_mae", "val_r2"] = (
        "val_loss"
    )
    patience: Annotated[int, Field(ge=0)] = 15
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0

    @property
    def mode(self) -> Literal["min", "max"]:
        """Whether lower or higher is better for the monitored metric."""
        return "min" if self.metric.endswith(("loss", "rmse", "mae")) else "max"


Jitter = Annotated[float, Field(ge=0.0, le=1.0)]


class AugmentParams(_Section):
    """Train-time augmentation of images (never at evaluation): a horizontal flip, a random
    resized crop and colour jitter, each drawn per image from the job's seed."""

    flip: bool = False  # mirror left-right with probability 1/2
    crop_scale: (
        Annotated[list[Annotated[float, Field(gt=0.0, le=1.0)]], Field(min_length=2, max_length=2)]
        | None
    ) = None  # [min, max] share of the area kept, resized back to the image size
    brightness: Jitter = 0.0  # factor drawn from [1 - b, 1 + b]
    contrast: Jitter = 0.0
    saturation: Jitter = 0.0

    @model_validator(mode="after")
    def _ordered_scale(self) -> AugmentParams:
        if self.crop_scale is not None and self.crop_scale[0] > self.crop_scale[1]:
            raise ValueError(f"crop_scale = {self.crop_scale}: the minimum comes first")
        return self


class LoaderParams(_Section):
    """How a split larger than `stream_above_mb` (decoded) is read: streamed from its
    Parquet row groups by `workers` DataLoader processes (0: in the training process),
    shuffled within a buffer of `shuffle_buffer` rows. Smaller splits are held in memory
    and indexed directly. Results are identical run to run for a fixed worker count."""

    workers: Annotated[int, Field(ge=0, le=64)] = 2
    prefetch: Annotated[int, Field(ge=1, le=64)] = 2  # batches ahead, per worker
    pin_memory: bool = False  # page-locked batches (CUDA only)
    shuffle_buffer: Annotated[int, Field(ge=1, le=100_000_000)] = 10_000
    stream_above_mb: Annotated[float, Field(ge=0.0)] = 1024.0
    # Text held in memory: batches of rows of similar length, each cut to its longest row
    # (false: every batch padded to data.tokenizer.max_length).
    bucket_by_length: bool = True


# The layer groups `train.freeze` may name (`mlops.nets.layer_groups`); `body` is all but
# the head.
LAYER_GROUP = r"^(body|head|fc|norm|embed|rnn|(hidden|conv|encoder)\.\d+)$"


class TrainParams(_Section):
    """The training job."""

    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 42
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 60
    batch_size: Annotated[int, Field(ge=1, le=1_048_576)] = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-4
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    grad_clip: Annotated[float, Field(ge=0.0)] = 1.0
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    schedule: ScheduleParams = ScheduleParams()
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    threads: Annotated[int, Field(ge=0, le=1024)] = 1
    augment: AugmentParams | None = None
    loader: LoaderParams = LoaderParams()
    init_from: Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]*@[\w-]+$")] | None = None
    freeze: list[Annotated[str, Field(pattern=LAYER_GROUP)]] = []
    tensorboard: bool = False  # event files per run, under its tensorboard/ artifacts
    model: ModelParams = ModelParams()

    @model_validator(mode="after")
    def _freeze_needs_a_parent(self) -> TrainParams:
        if self.freeze and self.init_from is None:
            raise ValueError(
                "freeze: freezes layers of a registered version: set train.init_from too"
            )
        return self

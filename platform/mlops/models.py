"""Model definitions and their safe on-disk format (safetensors + a JSON spec).

A saved model is two files: `model.safetensors` (the state dict, no pickle) and
`model.json` (the spec that rebuilds the module). Loading verifies the sha256 of
the weights when one is given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from mlops.columns import Encoding, embedded_stats
from mlops.errors import DataError, UserError, first_line
from mlops.images import ImageFormat
from mlops.images.format import channel_stats
from mlops.io import file_digest, read_json, write_json, write_with

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from mlops.data import Schema
    from mlops.params import ModelParams

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and to read a request for it: the family and
    its hyperparameters, the feature names in the order the model reads them, the input
    normalisation, the classes (or the target's scale for a regression) and the task.

    A spec written before feature names were recorded has `features == []`: such a
    version reads its inputs by position only (`feature_names` names them f0, f1, …).
    An image model's `image` says how its one feature, the image column, is decoded
    (`ImageFormat`); its `mean` and `std` are per channel. A mixed-table model's
    `encoding` turns its raw `features` (numeric and categorical columns) into its
    `in_features` values (`mlops.columns.Encoding`).
    """

    family: str
    in_features: int
    classes: list[Any]
    hyper: dict[str, Any]
    mean: list[float]
    std: list[float]
    input_shape: list[int] = field(default_factory=list)
    task: str = "classification"
    target_mean: float = 0.0
    target_std: float = 1.0
    features: list[str] = field(default_factory=list)
    target: str = ""
    image: dict[str, Any] = field(default_factory=dict)
    encoding: dict[str, Any] = field(default_factory=dict)  # a mixed table's Encoding

    @property
    def column_encoding(self) -> Encoding | None:
        """How a mixed-table model encodes its raw columns (None: it reads numbers)."""
        return Encoding.from_dict(self.encoding) if self.encoding else None

    @property
    def image_format(self) -> ImageFormat | None:
        """How an image model decodes its image column (None: numeric features)."""
        return ImageFormat.from_dict(self.image) if self.image else None

    @property
    def feature_names(self) -> list[str]:
        """The feature names in input order (`f0`, `f1`, … for a spec without names)."""
        return list(self.features) or [f"f{i}" for i in range(self.in_features)]

    @property
    def n_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        """Logits per class, or one value for regression."""
        return 1 if self.task == "regression" else self.n_classes


def feature_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-feature mean and std of the training features (a constant feature gets std 1,
    so standardising it never divides by zero)."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std < 1e-6] = 1.0
    return mean.tolist(), std.tolist()


def check_shape(family: str, input_shape: list[int]) -> None:
    """Refuse a family that cannot read inputs of this shape (one line naming both)."""
    shape = "×".join(map(str, input_shape)) or "unknown"
    if family == "cnn" and len(input_shape) != 3:
        raise UserError(
            f"train.model.family = cnn: needs image-shaped inputs (channels×height×width), "
            f"but the data has shape {shape}; set data.input_shape or pick mlp/rnn/transformer"
        )
    if family in {"rnn", "transformer"} and len(input_shape) > 3:
        raise UserError(f"train.model.family = {family}: cannot read inputs of shape {shape}")


def check_patches(params: ModelParams, input_shape: list[int]) -> None:
    """A transformer's `patch_size` needs an image whose sides it divides."""
    patch = params.transformer.patch_size if params.family == "transformer" else None
    if patch is None:
        return
    shape = "×".join(map(str, input_shape)) or "unknown"
    if len(input_shape) != 3:
        raise UserError(
            f"train.model.transformer.patch_size = {patch}: needs image-shaped inputs, "
            f"but the data has shape {shape} (set it to null)"
        )
    if input_shape[1] % patch or input_shape[2] % patch:
        raise UserError(
            f"train.model.transformer.patch_size = {patch}: must divide the image's height "
            f"and width ({shape})"
        )


def make_spec(
    params: ModelParams,
    classes: list[Any],
    mean: list[float],
    std: list[float],
    input_shape: list[int],
    task: str = "classification",
    target_mean: float = 0.0,
    target_std: float = 1.0,
    features: list[str] | None = None,
    target: str = "",
    image: ImageFormat | None = None,
    encoding: Encoding | None = None,
) -> ModelSpec:
    """The spec of a model of the selected family for these data statistics (for
    regression, the target's mean and std: the model predicts in the target's units).
    `features` are the column names in the order of `mean` and `std`; for an image
    model, the image column, with `mean` and `std` per channel."""
    check_shape(params.family, input_shape)
    check_patches(params, input_shape)
    names = [str(f) for f in features or []]
    if names and len(names) != len(mean) and image is None and encoding is None:
        raise ValueError(f"{len(names)} feature names for {len(mean)} features")
    if encoding is not None:
        mean, std = embedded_stats(encoding, mean, std)
    return ModelSpec(
        family=params.family,
        in_features=image.values if image is not None else len(mean),
        classes=list(classes),
        hyper=params.selected.model_dump(mode="json"),
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        input_shape=list(input_shape) or [len(mean)],
        task=task,
        target_mean=float(target_mean),
        target_std=float(target_std) if target_std > 1e-12 else 1.0,
        features=names,
        target=str(target),
        image=image.as_dict() if image is not None else {},
        encoding=encoding.as_dict() if encoding is not None else {},
    )


def spec_for_data(params: ModelParams, schema: Schema, train: Any) -> ModelSpec:
    """The spec of a model trained on `train`: the split as `features_and_target` reads
    it (x, y), or a streamed split (its `stats()` pass). Standardisation is per feature, or
    per channel for images."""
    fmt = schema.image_format
    if isinstance(train, tuple):
        x, y = train
        mean, std = channel_stats(x, fmt.channels) if fmt is not None else feature_stats(x)
        y_mean, y_std = float(y.mean()), float(y.std())
    else:
        means, stds, y_mean, y_std = train.stats()
        stds[stds < 1e-6] = 1.0
        mean, std = means.tolist(), stds.tolist()
    return make_spec(
        params, schema.classes, mean, std, schema.input_shape, task=schema.task,
        target_mean=y_mean, target_std=y_std,
        features=schema.features, target=schema.target, image=fmt,
        encoding=schema.column_encoding,
    )  # fmt: skip


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the module a spec describes (weights freshly initialised)."""
    from mlops import nets

    if spec.family not in nets.FAMILIES:
        raise DataError(f"model family {spec.family!r} is not known")
    encoding = spec.column_encoding
    embedded = text = None
    if encoding is not None:
        embedded = (encoding.dense_width, encoding.embedded)
        if encoding.codec is not None:
            text = (encoding.codec.vocab_size, encoding.max_length, encoding.embedding_dim)
    model = nets.build(
        spec.family, spec.hyper, spec.mean, spec.std, spec.input_shape, spec.n_outputs,
        embedded, text,
    )  # fmt: skip
    if spec.task == "regression":
        model.append(nets.Rescale(spec.target_mean, spec.target_std))
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(model: nn.Module, spec: ModelSpec, directory: str | Path) -> str:
    """Write weights (safetensors) and spec (JSON) atomically; return the weights' sha256."""
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_with(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    write_json(directory / SPEC_FILE, asdict(spec))
    return file_digest(directory / WEIGHTS_FILE)


def load_model(
    directory: str | Path, expected_sha256: str | None = None
) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a saved model in eval mode, refusing weights whose sha256 does not match."""
    from safetensors.torch import load_file

    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise DataError(f"{weights}: model file not found (run the train stage first)")
    if expected_sha256 is not None:
        actual = file_digest(weights)
        if actual != expected_sha256:
            raise DataError(
                f"{weights}: sha256 {actual[:12]}… does not match "
                f"the recorded {expected_sha256[:12]}…"
            )

    try:
        spec = ModelSpec(**read_json(directory / SPEC_FILE))
        model = build_model(spec)
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, OSError, TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"{weights}: not a loadable safetensors model ({first_line(exc)})"
        ) from None
    model.eval()
    return model, spec

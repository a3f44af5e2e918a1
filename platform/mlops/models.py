"""Model definitions and their safe on-disk format (safetensors + a JSON spec).

A saved model is two files: `model.safetensors` (the state dict, no pickle) and
`model.json` (the spec that rebuilds the module). Loading verifies the sha256 of
the weights when one is given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.errors import DataError
from mlops.io import file_digest, read_json, write_json, write_with

if TYPE_CHECKING:
    from torch import nn

    from mlops.config import MLPParams

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model, including input normalisation and classes."""

    family: str
    in_features: int
    classes: list[Any]
    hyper: dict[str, Any]
    mean: list[float]
    std: list[float]
    input_shape: list[int] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)


def make_spec(
    params: MLPParams,
    classes: list[Any],
    mean: list[float],
    std: list[float],
    input_shape: list[int],
) -> ModelSpec:
    """The spec of a model for these hyperparameters and data statistics."""
    hyper = params.model_dump(mode="json")
    family = hyper.pop("family")
    return ModelSpec(
        family=family,
        in_features=len(mean),
        classes=list(classes),
        hyper=hyper,
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        input_shape=list(input_shape),
    )


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the module a spec describes (weights freshly initialised)."""
    from mlops import nets

    if spec.family != "mlp":
        raise DataError(f"model family {spec.family!r} is not known")
    return nets.mlp(spec.mean, spec.std, spec.n_classes, **spec.hyper)


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
    spec = ModelSpec(**read_json(directory / SPEC_FILE))
    model = build_model(spec)
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    return model, spec

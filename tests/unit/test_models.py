"""Model specs, the MLP, shape checks, and the safe on-disk format (safetensors + JSON spec)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from mlops.errors import DataError, UserError
from mlops.models import (
    SPEC_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    build_model,
    check_shape,
    count_parameters,
    load_model,
    make_spec,
    save_model,
)
from mlops.params import CNNParams, MLPParams, ModelParams, RNNParams, TransformerParams


def _spec(**hyper: object) -> ModelSpec:
    mlp = MLPParams(**{"hidden_sizes": [8], "dropout": 0.0, **hyper})  # type: ignore[arg-type]
    params = ModelParams(mlp=mlp)
    return make_spec(params, ["a", "b", "c"], [0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 1.0, 0.5], [4])


@pytest.fixture
def model_and_spec() -> tuple[nn.Module, ModelSpec]:
    torch.manual_seed(0)
    spec = _spec(hidden_sizes=[8, 6], batch_norm=True, dropout=0.2, activation="gelu")
    model = build_model(spec)
    model.train()
    model(torch.randn(16, 4))  # move batch-norm running statistics off their defaults
    model.eval()
    return model, spec


def test_make_spec() -> None:
    spec = _spec()
    assert spec.family == "mlp"
    assert spec.in_features == 4
    assert spec.n_classes == 3
    assert spec.classes == ["a", "b", "c"]
    assert spec.hyper == {
        "hidden_sizes": [8],
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": False,
    }
    assert spec.input_shape == [4]
    assert all(type(v) is float for v in spec.mean + spec.std)


def test_forward_shape() -> None:
    model = build_model(_spec())
    out = model(torch.randn(5, 4))
    assert out.shape == (5, 3)
    assert out.dtype == torch.float32


def test_forward_flattens_image_input() -> None:
    model = build_model(_spec())
    assert model(torch.randn(2, 1, 2, 2)).shape == (2, 3)


def test_layers_follow_hyperparameters() -> None:
    model = build_model(_spec(hidden_sizes=[8, 6], batch_norm=True, dropout=0.3, activation="tanh"))
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(nn.Linear) == 3
    assert kinds.count(nn.BatchNorm1d) == 2
    assert kinds.count(nn.Dropout) == 2
    assert kinds.count(nn.Tanh) == 2
    plain = build_model(_spec(dropout=0.0))
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in plain.modules())


def test_normalisation_uses_spec_statistics() -> None:
    model = build_model(_spec())
    norm = model[0]
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 3.0, 3.5]])
    torch.testing.assert_close(norm(x), torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))


def test_count_parameters() -> None:
    assert count_parameters(build_model(_spec())) == (4 * 8 + 8) + (8 * 3 + 3)


def test_unknown_family_is_data_error() -> None:
    spec = ModelSpec("resnet", 4, [0, 1], {}, [0.0] * 4, [1.0] * 4)
    with pytest.raises(DataError, match="resnet"):
        build_model(spec)


def test_spec_holds_only_the_selected_family() -> None:
    params = ModelParams(
        family="rnn",
        mlp=MLPParams(hidden_sizes=[3]),
        rnn=RNNParams(cell="gru", hidden_size=5, bidirectional=False),
    )
    spec = make_spec(params, [0, 1], [0.0] * 4, [1.0] * 4, [2, 2])
    assert spec.family == "rnn"
    assert spec.hyper == params.rnn.model_dump()
    assert spec.input_shape == [2, 2]


def test_empty_input_shape_defaults_to_flat_features() -> None:
    spec = make_spec(ModelParams(), [0, 1], [0.0] * 5, [1.0] * 5, [])
    assert spec.input_shape == [5]


@pytest.mark.parametrize("shape", [[13], [8, 8], []])
def test_cnn_needs_image_shaped_input(shape: list[int]) -> None:
    params = ModelParams(family="cnn")
    n = 13 if shape == [13] else 64
    with pytest.raises(UserError) as info:
        make_spec(params, [0, 1], [0.0] * n, [1.0] * n, shape)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in message
    assert "cnn" in message
    assert ("×".join(map(str, shape)) or "unknown") in message


def test_cnn_shape_error_names_the_shape_13() -> None:
    with pytest.raises(UserError) as info:
        check_shape("cnn", [13])
    assert "cnn" in str(info.value)
    assert "13" in str(info.value)


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_sequence_families_refuse_four_dimensional_input(family: str) -> None:
    with pytest.raises(UserError, match=family) as info:
        check_shape(family, [1, 2, 3, 4])
    assert "1×2×3×4" in str(info.value)


@pytest.mark.parametrize(
    ("family", "shape"),
    [("mlp", [13]), ("mlp", [1, 8, 8]), ("cnn", [1, 8, 8]), ("rnn", [13]), ("rnn", [8, 8]),
     ("rnn", [1, 8, 8]), ("transformer", [13]), ("transformer", [8, 8]),
     ("transformer", [1, 8, 8])],
)  # fmt: skip
def test_check_shape_accepts_readable_shapes(family: str, shape: list[int]) -> None:
    check_shape(family, shape)


@pytest.mark.parametrize(
    "model_params",
    [
        ModelParams(family="cnn", cnn=CNNParams(channels=[2], head_size=4, batch_norm=True)),
        ModelParams(family="rnn", rnn=RNNParams(hidden_size=4, num_layers=2, cell="gru")),
        ModelParams(
            family="transformer",
            transformer=TransformerParams(d_model=8, n_heads=2, n_layers=1, ff_dim=8),
        ),
    ],
    ids=["cnn", "rnn", "transformer"],
)
def test_save_load_roundtrip_other_families(tmp_path: Path, model_params: ModelParams) -> None:
    torch.manual_seed(0)
    spec = make_spec(model_params, [0, 1, 2], [0.5] * 16, [2.0] * 16, [1, 4, 4])
    model = build_model(spec)
    model.train()
    model(torch.randn(6, 16))
    model.eval()
    sha = save_model(model, spec, tmp_path)
    loaded, loaded_spec = load_model(tmp_path, expected_sha256=sha)
    assert loaded_spec == spec
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_save_load_roundtrip(tmp_path: Path, model_and_spec: tuple[nn.Module, ModelSpec]) -> None:
    model, spec = model_and_spec
    sha = save_model(model, spec, tmp_path / "m")
    loaded, loaded_spec = load_model(tmp_path / "m", expected_sha256=sha)
    assert loaded_spec == spec
    assert not loaded.training
    x = torch.randn(7, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [SPEC_FILE, WEIGHTS_FILE]


def test_save_returns_sha256_and_is_deterministic(
    tmp_path: Path, model_and_spec: tuple[nn.Module, ModelSpec]
) -> None:
    model, spec = model_and_spec
    sha = save_model(model, spec, tmp_path / "one")
    again = save_model(model, spec, tmp_path / "two")
    weights = (tmp_path / "one" / WEIGHTS_FILE).read_bytes()
    assert sha == hashlib.sha256(weights).hexdigest()
    assert again == sha
    assert (tmp_path / "one" / SPEC_FILE).read_bytes() == (
        tmp_path / "two" / SPEC_FILE
    ).read_bytes()


def test_weights_file_is_safetensors(
    tmp_path: Path, model_and_spec: tuple[nn.Module, ModelSpec]
) -> None:
    model, spec = model_and_spec
    save_model(model, spec, tmp_path)
    data = (tmp_path / WEIGHTS_FILE).read_bytes()
    assert not data.startswith(b"\x80")  # pickle protocol marker
    assert not data.startswith(b"PK")  # torch.save zip archive
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert set(tensors) == set(model.state_dict())
    assert all(set(v) == {"dtype", "shape", "data_offsets"} for v in tensors.values())
    spec_json = json.loads((tmp_path / SPEC_FILE).read_text())
    assert spec_json["family"] == "mlp"
    assert spec_json["classes"] == ["a", "b", "c"]


def test_wrong_sha256_is_refused(
    tmp_path: Path, model_and_spec: tuple[nn.Module, ModelSpec]
) -> None:
    model, spec = model_and_spec
    save_model(model, spec, tmp_path)
    with pytest.raises(DataError) as info:
        load_model(tmp_path, expected_sha256="0" * 64)
    assert info.value.exit_code == 1
    assert WEIGHTS_FILE in str(info.value)
    assert "does not match" in str(info.value)


def test_tampered_weights_are_refused(
    tmp_path: Path, model_and_spec: tuple[nn.Module, ModelSpec]
) -> None:
    model, spec = model_and_spec
    sha = save_model(model, spec, tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match"):
        load_model(tmp_path, expected_sha256=sha)


def test_missing_model_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_model(tmp_path / "nothing")


def test_load_without_sha_still_loads(
    tmp_path: Path, model_and_spec: tuple[nn.Module, ModelSpec]
) -> None:
    model, spec = model_and_spec
    save_model(model, spec, tmp_path)
    loaded, _ = load_model(tmp_path)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))

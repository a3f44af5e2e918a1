"""The model zoo: every family builds from params and maps its input shape to class logits."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from mlops import nets
from mlops.errors import UserError
from mlops.models import build_model, count_parameters, make_spec
from mlops.params import CNNParams, ModelParams, RNNParams, TransformerParams, load_params

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
FAMILIES = ["mlp", "cnn", "rnn", "transformer"]
DIGITS = [1, 8, 8]


def _repo_model_params(family: str) -> ModelParams:
    data = load_params(REPO_PARAMS).train.model.model_dump()
    return ModelParams.model_validate({**data, "family": family})


def _model(params: ModelParams, shape: list[int], n_classes: int = 10) -> nn.Module:
    n = math.prod(shape)
    spec = make_spec(params, list(range(n_classes)), [0.0] * n, [1.0] * n, shape)
    torch.manual_seed(0)
    return build_model(spec).eval()


def _logits(model: nn.Module, n: int, shape: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(n, math.prod(shape)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_builds_from_repo_params_for_digits(family: str) -> None:
    model = _model(_repo_model_params(family), DIGITS)
    assert isinstance(model[1], nets.FAMILIES[family])
    assert count_parameters(model) > 0
    for n in (1, 5):
        out = _logits(model, n, DIGITS)
        assert out.shape == (n, 10)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_a_step_in_train_mode(family: str) -> None:
    model = _model(_repo_model_params(family), DIGITS).train()
    x, y = torch.randn(4, 64), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_image_input_is_accepted_flat_or_shaped() -> None:
    model = _model(_repo_model_params("cnn"), DIGITS)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.reshape(3, 64)), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [[13], [8, 8], [2, 5]])
def test_cnn_refuses_non_image_shape(shape: list[int]) -> None:
    n = math.prod(shape)
    with pytest.raises(UserError) as info:
        make_spec(ModelParams(family="cnn"), [0, 1], [0.0] * n, [1.0] * n, shape)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "cnn" in message
    assert "×".join(map(str, shape)) in message


def test_cnn_on_flat_13_names_family_and_shape() -> None:
    with pytest.raises(UserError) as info:
        make_spec(ModelParams(family="cnn"), [0, 1], [0.0] * 13, [1.0] * 13, [13])
    assert "cnn" in str(info.value)
    assert "13" in str(info.value)


@pytest.mark.parametrize("family", ["rnn", "transformer"])
@pytest.mark.parametrize("shape", [[13], [8, 8]])
def test_sequence_families_read_flat_and_two_d_inputs(family: str, shape: list[int]) -> None:
    model = _model(_repo_model_params(family), shape, n_classes=3)
    for n in (1, 5):
        assert _logits(model, n, shape).shape == (n, 3)


def test_sequence_shape() -> None:
    assert nets.sequence_shape([13]) == (13, 1)  # one feature per step
    assert nets.sequence_shape([8, 8]) == (8, 8)
    assert nets.sequence_shape([6, 4]) == (6, 4)
    assert nets.sequence_shape([1, 8, 8]) == (8, 8)  # image rows
    assert nets.sequence_shape([3, 5, 7]) == (5, 21)  # rows of every channel


def test_rnn_reads_one_feature_per_step_for_flat_input() -> None:
    model = _model(ModelParams(family="rnn", rnn=RNNParams(hidden_size=4)), [13])
    rnn = model[1].rnn
    assert rnn.input_size == 1
    assert rnn.bidirectional is True
    assert model[1].head.in_features == 8


def _check_transformer(pooling: str, positional: str) -> None:
    hyper = TransformerParams(
        d_model=8, n_heads=2, n_layers=1, ff_dim=16, positional=positional, pooling=pooling
    )  # type: ignore[arg-type]
    params = ModelParams(family="transformer", transformer=hyper)
    for shape in ([13], [8, 8]):
        model = _model(params, shape)
        body = model[1]
        assert (body.cls is not None) is (pooling == "cls")
        if positional == "none":
            assert body.position is None
        else:
            tokens = nets.sequence_shape(shape)[0] + (pooling == "cls")
            assert body.position.shape == (1, tokens, 8)
            assert isinstance(body.position, nn.Parameter) is (positional == "learned")
        for n in (1, 5):
            assert _logits(model, n, shape).shape == (n, 10)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("positional", ["learned", "none"])
def test_transformer_pooling_and_positions(pooling: str, positional: str) -> None:
    _check_transformer(pooling, positional)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_transformer_sinusoidal_positions(pooling: str) -> None:
    _check_transformer(pooling, "sinusoidal")


def test_sinusoidal_positions_are_a_fixed_buffer() -> None:
    hyper = TransformerParams(d_model=6, n_heads=2, n_layers=1, ff_dim=8, positional="sinusoidal")
    model = _model(ModelParams(family="transformer", transformer=hyper), [4])
    body = model[1]
    assert "position" in dict(body.named_buffers())
    assert "position" not in dict(body.named_parameters())
    table = body.position[0]
    assert table.shape == (5, 6)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0] * 3))
    assert float(table[1, 0]) == pytest.approx(math.sin(1.0))


def test_rnn_gru_unidirectional_two_layers() -> None:
    hyper = RNNParams(cell="gru", hidden_size=6, num_layers=2, bidirectional=False, dropout=0.3)
    model = _model(ModelParams(family="rnn", rnn=hyper), DIGITS)
    rnn = model[1].rnn
    assert isinstance(rnn, nn.GRU)
    assert rnn.num_layers == 2
    assert rnn.bidirectional is False
    assert rnn.dropout == pytest.approx(0.3)
    assert model[1].head.in_features == 6
    for n in (1, 5):
        assert _logits(model, n, DIGITS).shape == (n, 10)


def test_single_layer_rnn_gets_no_inter_layer_dropout() -> None:
    model = _model(ModelParams(family="rnn", rnn=RNNParams(hidden_size=4, dropout=0.5)), [8, 8])
    assert model[1].rnn.dropout == 0.0


def test_bidirectional_rnn_uses_each_direction_after_the_whole_sequence() -> None:
    hyper = RNNParams(cell="lstm", hidden_size=3, bidirectional=True, dropout=0.0)
    body = _model(ModelParams(family="rnn", rnn=hyper), [5, 2])[1]
    x = torch.randn(2, 5, 2)
    with torch.no_grad():
        out, _ = body.rnn(x)
        expected = body.head(torch.cat([out[:, -1, :3], out[:, 0, 3:]], dim=1))
        torch.testing.assert_close(body(x), expected)


@pytest.mark.parametrize(("pooling", "kind"), [("max", nn.MaxPool2d), ("avg", nn.AvgPool2d)])
def test_cnn_layers_follow_hyperparameters(pooling: str, kind: type[nn.Module]) -> None:
    hyper = CNNParams(
        channels=[3, 5], kernel_size=3, pooling=pooling, batch_norm=True, activation="gelu",
        head_size=7, dropout=0.1,
    )  # type: ignore[arg-type]  # fmt: skip
    model = _model(ModelParams(family="cnn", cnn=hyper), DIGITS)
    modules = list(model.modules())
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [3, 5]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in modules) == 2
    assert sum(isinstance(m, kind) for m in modules) == 2
    assert sum(isinstance(m, nn.GELU) for m in modules) == 3
    assert sum(isinstance(m, nn.Dropout) for m in modules) == 1
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5 * 2 * 2, 7), (7, 10)]


@pytest.mark.parametrize("pooling", ["max", "avg", "none"])
@pytest.mark.parametrize("shape", [[1, 8, 8], [2, 7, 5], [1, 1, 4]])
def test_cnn_odd_and_tiny_images(pooling: str, shape: list[int]) -> None:
    hyper = CNNParams(channels=[2, 3], pooling=pooling, head_size=4)  # type: ignore[arg-type]
    model = _model(ModelParams(family="cnn", cnn=hyper), shape)
    for n in (1, 5):
        assert _logits(model, n, shape).shape == (n, 10)


@pytest.mark.parametrize(("kernel_size", "pooling"), [(2, "none"), (4, "none")])
def test_cnn_even_kernel_size(kernel_size: int, pooling: str) -> None:
    hyper = CNNParams(channels=[2], kernel_size=kernel_size, pooling=pooling, head_size=4)  # type: ignore[arg-type]
    model = _model(ModelParams(family="cnn", cnn=hyper), DIGITS)
    assert _logits(model, 2, DIGITS).shape == (2, 10)


def _first_layer_input(body: nn.Module, layer: nn.Module, x: torch.Tensor) -> Any:
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        with torch.no_grad():
            body(x)
    finally:
        handle.remove()
    return seen[0]


def test_single_channel_image_is_read_row_by_row() -> None:
    body = _model(ModelParams(family="rnn", rnn=RNNParams(hidden_size=4)), DIGITS)[1]
    x = torch.randn(2, 1, 8, 8)
    steps = _first_layer_input(body, body.rnn, x)
    for row in range(8):
        torch.testing.assert_close(steps[:, row], x[:, :, row, :].reshape(2, -1))


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_multi_channel_image_is_read_row_by_row(family: str) -> None:
    shape = [2, 3, 4]
    small = {
        "rnn": {"rnn": {"hidden_size": 4}},
        "transformer": {"transformer": {"d_model": 4, "n_heads": 1, "n_layers": 1, "ff_dim": 4}},
    }[family]
    body = _model(ModelParams.model_validate({"family": family, **small}), shape)[1]
    layer = body.rnn if family == "rnn" else body.embed
    x = torch.randn(2, *shape)
    steps = _first_layer_input(body, layer, x)
    for row in range(3):
        torch.testing.assert_close(steps[:, row], x[:, :, row, :].reshape(2, -1))


def test_normalize_standardises_then_views_in_input_shape() -> None:
    norm = nets.Normalize([1.0] * 6, [2.0] * 6, [1, 2, 3])
    x = torch.arange(12, dtype=torch.float64).reshape(2, 6)
    out = norm(x)
    assert out.shape == (2, 1, 2, 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.reshape(2, 6), ((x - 1.0) / 2.0).float())
    torch.testing.assert_close(norm(x.reshape(2, 1, 2, 3)), out)


def test_build_gives_fresh_normalize_plus_body() -> None:
    hyper = ModelParams().mlp.model_dump()
    model = nets.build("mlp", hyper, [0.0] * 4, [1.0] * 4, [4], 3)
    assert isinstance(model, nn.Sequential)
    assert isinstance(model[0], nets.Normalize)
    assert isinstance(model[1], nets.MLP)
    assert set(nets.FAMILIES) == set(FAMILIES)


def test_a_patch_transformer_reads_an_image_as_patches() -> None:
    params = ModelParams(family="transformer", transformer=TransformerParams(patch_size=4))
    shape = [3, 16, 12]
    model = _model(params, shape, n_classes=3)
    assert _logits(model, 5, shape).shape == (5, 3)
    body = model[1]
    assert body.steps == 12 and body.patches.kernel_size == (4, 4)
    if body.position is not None:
        assert body.position.shape[1] == 12 + 1  # patches and the [CLS] token


@pytest.mark.parametrize(
    ("shape", "message"),
    [([64], "needs image-shaped inputs"), ([3, 16, 10], "must divide the image's height")],
)
def test_a_patch_size_that_cannot_tile_the_input_is_refused(shape: list[int], message: str) -> None:
    params = ModelParams(family="transformer", transformer=TransformerParams(patch_size=4))
    with pytest.raises(UserError, match=message):
        _model(params, shape)

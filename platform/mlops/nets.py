"""PyTorch modules of the model zoo. Imports torch at module level: import it lazily.

Every model is `Normalize` (standardise the flat features with the training split's
statistics, then view them in the data's input shape) followed by a family body that
maps that shape to one logit per class.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class Normalize(nn.Module):
    """Standardises the flattened input, then reshapes it to `(batch, *shape)`: per
    feature, or per channel for an image (`mean` and `std` hold one value per channel)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float], shape: list[int]) -> None:
        super().__init__()
        self.shape = list(shape)
        self.values = math.prod(shape)
        per_channel = len(shape) == 3 and len(mean) == shape[0] != self.values
        view = [shape[0], 1, 1] if per_channel else [len(mean)]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(view))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(view))
        self.per_channel = per_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            x = x.reshape(x.shape[0], *self.shape).to(torch.float32)
            return (x - self.mean) / self.std
        x = x.reshape(x.shape[0], self.values).to(torch.float32)
        return ((x - self.mean) / self.std).reshape(x.shape[0], *self.shape)


class TableInput(nn.Module):
    """A mixed table's row: standardises its dense values (numbers, missing flags,
    one-hot blocks) and replaces each trailing category index by that category's
    learned embedding; the result is a flat row of `width` values."""

    mean: torch.Tensor
    std: torch.Tensor
    cards: torch.Tensor

    def __init__(self, mean: list[float], std: list[float], dense: int,
                 embedded: list[tuple[int, int]]) -> None:  # fmt: skip
        super().__init__()
        self.dense = dense
        self.register_buffer("mean", torch.tensor(mean[:dense], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std[:dense], dtype=torch.float32))
        self.embeddings = nn.ModuleList(nn.Embedding(n, width) for n, width in embedded)
        self.register_buffer("cards", torch.tensor([n for n, _ in embedded], dtype=torch.int64))
        self.width = dense + sum(width for _, width in embedded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).to(torch.float32)
        dense = (x[:, : self.dense] - self.mean) / self.std
        index = x[:, self.dense :].to(torch.int64)
        index = torch.where((index < 0) | (index >= self.cards), 0, index)  # unseen
        found = [table(index[:, i]) for i, table in enumerate(self.embeddings)]
        return torch.cat([dense, *found], dim=1)


class TextInput(nn.Module):
    """A row whose last `max_length` values are token ids (PAD 0 after the last token):
    each token becomes a learned embedding (PAD's is zero), with a mask of the pads.

    For a sequence body (RNN, transformer) it answers (tokens, mask): the row's other
    values (`TableInput`), when it has any, are projected to one more token in front.
    For the MLP (`bag`) it answers one flat row: the other values and the mean of the
    token embeddings (a bag of embeddings). Either way the result does not depend on how
    many pads follow the last token, so a batch may be cut to its longest row."""

    def __init__(self, mean: list[float], std: list[float], dense: int,
                 embedded: list[tuple[int, int]], vocab: int, max_length: int,
                 width: int, bag: bool) -> None:  # fmt: skip
        super().__init__()
        self.text_start = dense + len(embedded)
        self.table = TableInput(mean, std, dense, embedded) if self.text_start else None
        self.tokens = nn.Embedding(vocab, width, padding_idx=0)
        self.vocab, self.bag = vocab, bag
        extra = self.table.width if self.table is not None else 0
        self.extra = nn.Linear(extra, width) if extra and not bag else None
        self.steps = max_length + (1 if self.extra is not None else 0)
        self.width = width + extra if bag else width

    def forward(self, x: torch.Tensor) -> Any:
        x = x.reshape(x.shape[0], -1).to(torch.float32)
        ids = x[:, self.text_start :].to(torch.int64)
        ids = torch.where((ids < 0) | (ids >= self.vocab), 1, ids)  # out of range: UNK
        pad = ids == 0
        tokens = self.tokens(ids)
        other = self.table(x[:, : self.text_start]) if self.table is not None else None
        if self.bag:
            keep = (~pad).unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * keep).sum(1) / keep.sum(1).clamp(min=1.0)
            return mean if other is None else torch.cat([other, mean], dim=1)
        if self.extra is not None and other is not None:
            tokens = torch.cat([self.extra(other).unsqueeze(1), tokens], dim=1)
            pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)
        pad[:, 0] = False  # the first token always counts (an empty text: one PAD token)
        return tokens, pad


class Net(nn.Sequential):
    """A sequential model whose front may answer (tokens, mask) for the body."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        out = layers[0](x)
        out = layers[1](*out) if isinstance(out, tuple) else layers[1](out)
        for layer in layers[2:]:
            out = layer(out)
        return out


class Rescale(nn.Module):
    """Maps a standardised prediction back to the target's units: y * std + mean."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([mean], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor([std], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def to_sequence(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """View a batch as (batch, steps, features): an image's step i holds row i of every
    channel; flat features become one feature per step."""
    if len(shape) == 3:
        x = x.permute(0, 2, 1, 3)
    steps, features = sequence_shape(shape)
    return x.reshape(x.shape[0], steps, features)


def sequence_shape(shape: list[int]) -> tuple[int, int]:
    """(steps, features) of an input: images row by row, flat features one per step."""
    if len(shape) == 3:
        return shape[1], shape[0] * shape[2]
    if len(shape) == 2:
        return shape[0], shape[1]
    return shape[0], 1


class MLP(nn.Module):
    """[Linear → (BatchNorm) → activation → (Dropout)]* → Linear."""

    def __init__(self, shape: list[int], n_out: int, hidden_sizes: list[int], activation: str,
                 dropout: float, batch_norm: bool) -> None:  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(shape)
        for size in hidden_sizes:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """[Conv → (BatchNorm) → activation → (Pool)]* → Flatten → Linear → Linear."""

    def __init__(self, shape: list[int], n_out: int, channels: list[int], kernel_size: int,
                 pooling: str, batch_norm: bool, activation: str, head_size: int,
                 dropout: float) -> None:  # fmt: skip
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        for out in channels:
            layers.append(nn.Conv2d(c, out, kernel_size, padding="same"))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(ACTIVATIONS[activation]())
            if pooling != "none" and min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2))
                h, w = h // 2, w // 2
            c = out
        layers += [nn.Flatten(), nn.Linear(c * h * w, head_size), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(head_size, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RNN(nn.Module):
    """LSTM/GRU over the steps; the last step's output (both directions) feeds a Linear."""

    def __init__(self, shape: list[int], n_out: int, cell: str, hidden_size: int,
                 num_layers: int, bidirectional: bool, dropout: float,
                 masked: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.shape = list(shape)
        features = sequence_shape(shape)[1]
        kind = nn.LSTM if cell == "lstm" else nn.GRU
        drop = dropout if num_layers > 1 else 0.0
        # Text (`masked`): each direction its own stack, so each reads only real tokens.
        self.rnn = kind(
            features, hidden_size, num_layers=num_layers, batch_first=True,
            bidirectional=bidirectional and not masked, dropout=drop,
        )  # fmt: skip
        self.rnn_back: nn.Module | None = None
        if masked and bidirectional:
            self.rnn_back = kind(
                features, hidden_size, num_layers=num_layers, batch_first=True, dropout=drop
            )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), n_out)
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        if pad is not None:
            return self.head(self.dropout(self._masked(x, pad)))
        out, _ = self.rnn(to_sequence(x, self.shape))
        last = out[:, -1, :]
        if self.bidirectional:  # the backward direction has read the whole sequence at step 0
            last = torch.cat([out[:, -1, : self.hidden_size], out[:, 0, self.hidden_size :]], 1)
        return self.head(self.dropout(last))

    def _masked(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """The state after the last real token of each row (pads follow it), and with a
        backward stack its state after reading the row's real tokens from the end."""
        lengths = (~pad).sum(dim=1).clamp(min=1)
        rows = torch.arange(x.shape[0], device=x.device)
        out, _ = self.rnn(x)
        last = out[rows, lengths - 1]
        if self.rnn_back is None:
            return last
        steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        within = steps < lengths.unsqueeze(1)
        flipped = torch.where(within, lengths.unsqueeze(1) - 1 - steps, steps)
        back, _ = self.rnn_back(x.gather(1, flipped.unsqueeze(-1).expand_as(x)))
        return torch.cat([last, back[rows, lengths - 1]], dim=1)


def _sinusoidal(steps: int, width: int) -> torch.Tensor:
    position = torch.arange(steps, dtype=torch.float32).unsqueeze(1)
    scale = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    table = torch.zeros(steps, width)
    table[:, 0::2] = torch.sin(position * scale)
    table[:, 1::2] = torch.cos(position * scale)[:, : width // 2]
    return table


class Transformer(nn.Module):
    """Tokens (sequence steps, one per feature for flat inputs, or with `patch_size` an
    image's P x P patches, ViT-style) → self-attention encoder → [CLS] token or mean of
    tokens → Linear."""

    position: torch.Tensor | None

    def __init__(self, shape: list[int], n_out: int, d_model: int, n_heads: int, n_layers: int,
                 ff_dim: int, dropout: float, positional: str, pooling: str,
                 patch_size: int | None = None, masked: bool = False) -> None:  # fmt: skip
        super().__init__()
        del masked  # text: `forward` gets the pads' mask; the layers are the same
        self.tabular = len(shape) == 1
        self.shape = list(shape)
        self.steps, features = sequence_shape(shape)
        self.patches: nn.Conv2d | None = None
        if patch_size is not None:  # a linear embedding of each patch: a strided convolution
            channels, height, width = shape
            self.patches = nn.Conv2d(channels, d_model, patch_size, stride=patch_size)
            self.steps = (height // patch_size) * (width // patch_size)
        elif self.tabular:  # each feature gets its own embedding: value * w_i + b_i
            self.token_weight = nn.Parameter(torch.randn(self.steps, d_model) * 0.02)
            self.token_bias = nn.Parameter(torch.zeros(self.steps, d_model))
        else:
            self.embed = nn.Linear(features, d_model)
        self.pooling = pooling
        tokens = self.steps + (1 if pooling == "cls" else 0)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        if positional == "learned":
            self.position = nn.Parameter(torch.randn(1, tokens, d_model) * 0.02)
        else:  # a fixed table, or nothing
            table = (
                _sinusoidal(tokens, d_model).unsqueeze(0) if positional == "sinusoidal" else None
            )
            self.register_buffer("position", table)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, ff_dim, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_out)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        if pad is not None:  # text: embedded tokens, as many as the batch's longest row
            tokens = self.embed(x)
            pad = None if _no_pads(pad) else pad
        elif self.patches is not None:
            tokens = self.patches(x).flatten(2).transpose(1, 2)
        elif self.tabular:
            tokens = x.unsqueeze(-1) * self.token_weight + self.token_bias
        else:
            tokens = self.embed(to_sequence(x, self.shape))
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
            if pad is not None:
                pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)
        if self.position is not None:
            tokens = tokens + self.position[:, : tokens.shape[1]]
        encoded = self.norm(self.encoder(tokens, src_key_padding_mask=pad))
        if self.pooling == "cls":
            return self.head(encoded[:, 0])
        if pad is None:
            return self.head(encoded.mean(dim=1))
        keep = (~pad).unsqueeze(-1).to(encoded.dtype)
        return self.head((encoded * keep).sum(1) / keep.sum(1).clamp(min=1.0))


def _no_pads(pad: torch.Tensor) -> bool:
    """Whether a batch of tokens has no pads (one served text, cut after its last token):
    the encoder then runs without a mask, on PyTorch's fast path, with the same answer.
    Never while exporting or compiling, where the mask must stay in the graph."""
    tracing = torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
    if tracing or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return not bool(pad.any())


FAMILIES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "rnn": RNN,
    "transformer": Transformer,
}


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """The model's parameters by layer group, the unit `train.freeze` names: `hidden.N`
    (MLP blocks), `conv.N` and `fc` (CNN), `rnn`, `embed`, `encoder.N` and `norm`
    (transformer), and every family's `head` (the last Linear, one output per class)."""
    body = model[1]  # type: ignore[index]
    groups: dict[str, list[str]] = {}
    for name, _ in body.named_parameters():
        groups.setdefault(_group(body, name), []).append(f"1.{name}")
    return groups


def _group(body: nn.Module, name: str) -> str:
    parts = name.split(".")
    if isinstance(body, MLP | CNN):
        layers = list(body.net)
        index = int(parts[1])
        linear = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        if index >= linear[-1]:
            return "head"
        if isinstance(body, CNN):
            if index >= linear[0]:
                return "fc"
            convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
            return f"conv.{sum(1 for i in convs if i <= index) - 1}"
        return f"hidden.{sum(1 for i in linear if i <= index) - 1}"
    if parts[0] == "head":
        return "head"
    if isinstance(body, RNN):
        return "rnn"
    if parts[0] == "encoder":
        return f"encoder.{parts[2]}"
    return "norm" if parts[0] == "norm" else "embed"


def build(family: str, hyper: dict[str, Any], mean: list[float], std: list[float],
          shape: list[int], n_out: int,
          embedded: tuple[int, list[tuple[int, int]]] | None = None,
          text: tuple[int, int, int] | None = None) -> nn.Sequential:  # fmt: skip
    """Normalize (or, for a mixed table with embedded categories, `TableInput`; with
    text columns, `TextInput`) + the family's body, freshly initialised. `embedded` is
    (the dense values' count, each embedded column's cardinality and width); `text` is
    (the vocabulary's size, the ids per row, the embedding's width)."""
    if text is not None:
        dense, categories = embedded or (len(mean) - text[1], [])
        bag = family == "mlp"
        reader = TextInput(mean, std, dense, categories, *text, bag)
        if bag:
            return Net(reader, FAMILIES[family]([reader.width], n_out, **hyper))
        body = FAMILIES[family]([reader.steps, text[2]], n_out, **hyper, masked=True)
        return Net(reader, body)
    if embedded is not None and embedded[1]:
        front = TableInput(mean, std, *embedded)
        body_shape = [front.width]
        return nn.Sequential(front, FAMILIES[family](body_shape, n_out, **hyper))
    return nn.Sequential(Normalize(mean, std, shape), FAMILIES[family](shape, n_out, **hyper))

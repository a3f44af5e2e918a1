"""Text columns (mlops.text, the token block of mlops.columns, nets.TextInput and length
bucketing): deterministic tokenizers, counted cuts, and models that do not depend on how
many pads follow the last token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer

from mlops import nets
from mlops.columns import Encoding
from mlops.params import TokenizerParams, TrainParams
from mlops.text import (
    CHARS_PER_TOKEN,
    PAD_ID,
    SEP_ID,
    UNK_ID,
    TextCodec,
    head,
    train_tokenizer,
)
from mlops.training import text_start, train_model, trim_text
from registry.export.formats import onnx_runner, to_onnx, to_torchscript, torchscript_runner
from tests.corpus import package_texts

TRAIN = r"""
import hashlib, sys
from registry.export.formats import onnx_runner, to_onnx, to_torchscript, torchscript_runner
from tests.corpus import package_texts
from mlops.text import train_tokenizer
texts = package_texts()["text"].tolist()[:600]
print(hashlib.sha256(train_tokenizer(texts, sys.argv[1], 2000, True).encode()).hexdigest())
"""


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return package_texts()


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_training_gives_the_same_tokenizer_in_every_process(kind: str) -> None:
    digests = {
        subprocess.run([sys.executable, "-c", TRAIN, kind], capture_output=True, text=True,
                       check=True).stdout.strip()
        for _ in range(3)
    }  # fmt: skip
    assert len(digests) == 1, digests  # Hugging Face's own WordPiece trainer differs run to run


def test_encoding_joins_columns_cuts_and_counts(corpus: pd.DataFrame) -> None:
    codec = TextCodec(train_tokenizer(corpus["text"][:500], "bpe", 1000, True), 12)
    short, long_text = "a small http client", " ".join(["network"] * 40)
    tokens = codec.encode([[short, long_text, None], ["ok", None, "Ωμέγα ✓"]])
    assert tokens.ids.shape == (3, 12) and tokens.ids.dtype == np.int64
    first = tokens.ids[0, : tokens.lengths[0]].tolist()
    assert SEP_ID in first and first[-1] != PAD_ID  # "a small http client" [SEP] "ok"
    assert (tokens.ids[0, tokens.lengths[0] :] == PAD_ID).all()
    assert tokens.lengths[1] == 12 and tokens.truncated == 1  # 40 words cut at 12 tokens
    assert tokens.unknown[0] == 0 and tokens.unknown[1] > 0  # Greek letters never seen
    assert UNK_ID in tokens.ids[2].tolist()
    back = codec.decode(tokens.ids, 2)
    assert back[0][0] == short and back[1][0] == "ok" and back[0][2] is None


def test_a_long_text_is_tokenized_from_its_head_with_the_same_ids(corpus: pd.DataFrame) -> None:
    """Past `max_length * CHARS_PER_TOKEN` characters only the head is tokenized: the ids
    kept, the cut and its count are those of the whole text, whatever its spacing and
    Unicode (NFKC turns some characters into spaces, ligatures into letters)."""
    codec = TextCodec(train_tokenizer(corpus["text"][:500], "bpe", 1000, True), 12)
    whole = Tokenizer.from_str(codec.tokenizer)
    paragraphs = corpus["text"].tolist()
    texts = [
        " ".join(paragraphs[:20]),
        "\n\t".join(paragraphs[20:40]),
        "x" * 300 + " network client",  # one long word, then the head's break
        "a" + " " * 200 + "http client server " * 30,  # the head holds one token only
        "\u00a8\ufb01\uff21 " * 60
        + "Ωμέγα",  # ¨ (space + mark), ﬁ, fullwidth A; Greek past the cut
        "network" * 500,  # no break at all: tokenized whole
    ]
    assert all(len(t) > 12 * CHARS_PER_TOKEN for t in texts)
    assert head(texts[0], 12) != texts[0] and head(texts[-1], 12) == texts[-1]
    tokens = codec.encode([texts])
    for i, text in enumerate(texts):
        expected = whole.encode(text, add_special_tokens=False).ids
        assert tokens.ids[i].tolist() == expected[:12], i
        assert tokens.lengths[i] == min(len(expected), 12)
    assert tokens.truncated == len(texts)
    kept_unknown = int((tokens.ids == UNK_ID).sum())  # counted among the ids kept only:
    assert tokens.unknown == [kept_unknown]  # not the Greek letters past the cut
    one = [codec.encode([[t]]).ids[0].tolist() for t in texts]  # a served request's path
    assert one == tokens.ids.tolist()


def _text_encoding(corpus: pd.DataFrame, max_length: int = 32) -> tuple[Encoding, np.ndarray]:
    frame = corpus.assign(stars=np.arange(len(corpus)) % 5, site=corpus["package"].str[0])
    kinds = {"stars": "numeric", "site": "categorical", "text": "text"}
    params = TokenizerParams(vocab_size=1500, max_length=max_length, embedding_dim=8)
    encoding = Encoding.fit(frame, kinds, one_hot_max=4, max_categories=100, tokenizer=params)
    return encoding, encoding.transform(frame)[0]


@pytest.mark.parametrize("family", ["mlp", "rnn", "transformer"])
def test_text_models_ignore_the_pads_after_the_last_token(
    corpus: pd.DataFrame, family: str
) -> None:
    encoding, x = _text_encoding(corpus)
    assert encoding.width == x.shape[1] == encoding.text_start + 32
    hyper = {
        "mlp": {"hidden_sizes": [16], "activation": "relu", "dropout": 0.0, "batch_norm": False},
        "rnn": {"cell": "lstm", "hidden_size": 8, "num_layers": 2, "bidirectional": True,
                "dropout": 0.0},
        "transformer": {"d_model": 16, "n_heads": 2, "n_layers": 1, "ff_dim": 16,
                        "dropout": 0.0, "positional": "sinusoidal", "pooling": "mean"},
    }[family]  # fmt: skip
    mean, std = [0.0] * encoding.width, [1.0] * encoding.width
    embedded = (encoding.dense_width, encoding.embedded)
    text = (encoding.codec.vocab_size if encoding.codec else 0, 32, 8)
    model = nets.build(family, hyper, mean, std, [encoding.width], 3, embedded, text).eval()
    assert text_start(model) == encoding.text_start
    short = np.flatnonzero((x[:, encoding.text_start :] != 0).sum(axis=1) < 24)[:64]
    rows = torch.from_numpy(x[short])
    with torch.no_grad():
        full = model(rows)
        cut = model(trim_text(model, rows))
        one = torch.cat([model(trim_text(model, rows[i : i + 1])) for i in range(8)])
    assert trim_text(model, rows).shape[1] < rows.shape[1]
    assert torch.allclose(full, cut, atol=1e-5) and torch.allclose(full[:8], one, atol=1e-5)
    hostile = rows[:2].clone()
    hostile[:, encoding.text_start] = 1e9  # an id beyond the vocabulary reads as UNK
    unknown = rows[:2].clone()
    unknown[:, encoding.text_start] = UNK_ID
    with torch.no_grad():
        assert torch.equal(model(hostile), model(unknown))


def test_exports_keep_the_pad_mask_though_their_example_has_no_pads(
    corpus: pd.DataFrame, tmp_path: Path
) -> None:
    """A batch without pads runs without the mask (PyTorch's fast path); an export traced
    from such a batch must still mask the pads of later batches."""
    encoding, x = _text_encoding(corpus)
    hyper = {"d_model": 16, "n_heads": 2, "n_layers": 1, "ff_dim": 16, "dropout": 0.0,
             "positional": "sinusoidal", "pooling": "mean"}  # fmt: skip
    mean, std = [0.0] * encoding.width, [1.0] * encoding.width
    text = (encoding.codec.vocab_size if encoding.codec else 0, 32, 8)
    model = nets.build(
        "transformer", hyper, mean, std, [encoding.width], 3,
        (encoding.dense_width, encoding.embedded), text,
    ).eval()  # fmt: skip
    tokens = (x[:, encoding.text_start :] != 0).sum(axis=1)
    full, padded = x[tokens == 32][:4], x[tokens < 20][:16]
    assert len(full) == 4 and len(padded) == 16
    with torch.no_grad():
        expected = model(torch.from_numpy(padded)).numpy()
    runners = {
        "onnx": onnx_runner(to_onnx(model, full, tmp_path / "m.onnx")),
        "torchscript": torchscript_runner(to_torchscript(model, full, tmp_path / "m.pt")),
    }
    for name, run in runners.items():
        assert np.allclose(run(padded), expected, atol=1e-4), name


def test_bucketed_batches_hold_every_row_once_cut_to_their_longest(
    corpus: pd.DataFrame,
) -> None:
    encoding, x = _text_encoding(corpus, max_length=48)
    y = (np.arange(len(x)) % 3).astype(np.int64)
    seen: list[int] = []
    widths: list[int] = []

    class Spy(torch.nn.Module):  # records each batch the loop feeds the model
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, rows: torch.Tensor) -> torch.Tensor:
            if self.training:
                widths.append(rows.shape[1])
                seen.extend(rows[:, 0].round().long().tolist())
            return self.inner(rows)

    hyper = {"hidden_sizes": [8], "activation": "relu", "dropout": 0.0, "batch_norm": False}
    tagged = x.copy()
    tagged[:, 0] = np.arange(len(x))  # the row's number in its first (numeric) value
    text = (encoding.codec.vocab_size if encoding.codec else 0, 48, 8)

    def make() -> torch.nn.Module:
        net = nets.build("mlp", hyper, [0.0] * x.shape[1], [1.0] * x.shape[1], [x.shape[1]],
                         3, (encoding.dense_width, encoding.embedded), text)  # fmt: skip
        return nets.Net(net[0], Spy(net[1]))

    params = TrainParams.model_validate(
        {"epochs": 1, "batch_size": 32, "early_stopping": {"patience": 0}, "device": "cpu"}
    )
    train_model(make, params, (tagged, y), (tagged[:50], y[:50]))
    assert sorted(seen) == list(range(len(x)))  # every row once
    lengths = (x[:, encoding.text_start :] != 0).sum(axis=1)
    assert max(widths) <= encoding.text_start + lengths.max()
    assert np.mean(widths) < encoding.text_start + 48 - 8  # batches are cut, not padded to 48

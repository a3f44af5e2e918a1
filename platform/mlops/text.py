"""Free text as token ids: a subword tokenizer trained on the train split (Hugging Face
`tokenizers`, offline: nothing is downloaded) and the fixed-width block of ids a model
reads.

Ids 0, 1 and 2 are reserved: `[PAD]` (after the last token), `[UNK]` (a piece training
never saw) and `[SEP]` (between the texts of several columns). A text longer than
`max_length` tokens is cut there, and every cut is counted, never silent; a long text is
tokenized from its head, so the cost of a row is bounded by `max_length` (see `head`).

Training is deterministic (the same texts give the same tokenizer, byte for byte), which
`dvc repro` and resumed jobs rely on. Plain BPE training is; Hugging Face's WordPiece
trainer is not (tokenizers#1794: a hash map's order assigns the `##` pieces' ids, and
ties then pick different merges), so a WordPiece vocabulary is derived here from a BPE
run instead: the pieces BPE cuts the training words into, word-initial ones as they are
and the rest with the `##` prefix, most frequent first (ties by name), with every
character of the training text in both forms.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD, UNK, SEP = "[PAD]", "[UNK]", "[SEP]"
SPECIAL = [PAD, UNK, SEP]
PAD_ID, UNK_ID, SEP_ID = 0, 1, 2
PREFIX = "##"
# A text longer than this many characters per token of `max_length` is tokenized from its
# head first (`head`): a 64-token model reads at most the first ~512 characters' worth.
CHARS_PER_TOKEN = 8
_BREAK = re.compile(r"[ \t\n\r\f\v]")


def head(text: str, max_length: int) -> str:
    """`text` up to its first ASCII whitespace after `max_length * CHARS_PER_TOKEN`
    characters (`text` itself when shorter, or without such a break).

    Tokenizing the head gives the same first ids as tokenizing the whole: NFKC and
    lowercasing change no ASCII whitespace and compose nothing across it, and the
    pre-tokenizer splits there, so no piece spans the cut. The caller takes the head's
    ids only when they already overflow `max_length` (each word gives one id or more)."""
    budget = max_length * CHARS_PER_TOKEN
    if len(text) <= budget:
        return text
    found = _BREAK.search(text, budget)
    return text if found is None else text[: found.start()]


def _pipeline(tokenizer: Any, lowercase: bool) -> Any:
    """Unicode normalisation (NFKC, lowercase if asked) and splitting on whitespace and
    punctuation: the same for both kinds."""
    steps = [normalizers.NFKC(), *([normalizers.Lowercase()] if lowercase else [])]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def _bpe(texts: Sequence[str], vocab_size: int, lowercase: bool) -> Any:
    tokenizer = _pipeline(Tokenizer(models.BPE(unk_token=UNK)), lowercase)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _wordpiece(texts: Sequence[str], vocab_size: int, lowercase: bool) -> Any:
    """A WordPiece tokenizer whose vocabulary comes from a deterministic BPE run (see the
    module docstring)."""
    bpe = _bpe(texts, vocab_size, lowercase)
    counts: Counter[str] = Counter()
    characters: set[str] = set()
    for encoding in bpe.encode_batch(list(texts)):
        previous = None
        for piece, word in zip(encoding.tokens, encoding.word_ids, strict=True):
            counts[piece if word != previous else PREFIX + piece] += 1
            previous = word
            characters.update(piece)
    base = sorted({c for c in characters} | {PREFIX + c for c in characters})
    ranked = sorted((p for p in counts if p not in base), key=lambda p: (-counts[p], p))
    pieces = [*SPECIAL, *base, *ranked][: max(vocab_size, len(SPECIAL) + len(base))]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    model = models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix=PREFIX)
    return _pipeline(Tokenizer(model), lowercase)


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int, lowercase: bool) -> str:
    """A tokenizer trained on `texts` (empty ones skipped), as Hugging Face's JSON."""
    found = [t for t in texts if t]
    tokenizer = (_wordpiece if kind == "wordpiece" else _bpe)(found, vocab_size, lowercase)
    return str(tokenizer.to_str())


@dataclass(frozen=True)
class Tokens:
    """A batch of texts as ids: `ids` (rows x max_length, PAD after the last token),
    how many tokens each row holds, how many rows were cut, how many pieces were unknown."""

    ids: np.ndarray
    lengths: np.ndarray
    truncated: int
    unknown: list[int]  # per column


@dataclass(frozen=True)
class TextCodec:
    """A trained tokenizer (its JSON) and the block width: texts in, `Tokens` out."""

    tokenizer: str
    max_length: int

    @cached_property
    def _tokenizer(self) -> Any:
        return Tokenizer.from_str(self.tokenizer)

    @property
    def vocab_size(self) -> int:
        """Ids the model's embedding must hold (specials included)."""
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, columns: Sequence[Sequence[str | None]]) -> Tokens:
        """Each row's texts (one per text column; None: empty) as one id sequence, the
        columns joined by SEP and cut at `max_length`; unknown pieces are counted among
        the tokens kept (those the model reads)."""
        rows = len(columns[0]) if columns else 0
        ids = np.zeros((rows, self.max_length), dtype=np.int64)
        lengths = np.zeros(rows, dtype=np.int64)
        encoded = [self._pieces([t or "" for t in column]) for column in columns]
        truncated, unknown = 0, [0] * len(encoded)
        for i in range(rows):
            row: list[int] = []
            for k, column in enumerate(encoded):
                pieces = column[i]
                if k and row:
                    row.append(SEP_ID)
                unknown[k] += pieces[: max(self.max_length - len(row), 0)].count(UNK_ID)
                row += pieces
            if len(row) > self.max_length:
                truncated += 1
                row = row[: self.max_length]
            ids[i, : len(row)] = row
            lengths[i] = len(row)
        return Tokens(ids, lengths, truncated, unknown)

    def _pieces(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids: a long text's from its head alone (see `head`) when the head
        already holds more than `max_length` tokens, so a long text costs what
        `max_length` tokens cost; the same ids the whole text gives up to the cut."""
        heads = [head(t, self.max_length) for t in texts]
        found = self._ids(heads)
        again = [i for i, (t, h) in enumerate(zip(texts, heads, strict=True))
                 if h is not t and len(found[i]) <= self.max_length]  # fmt: skip
        for i, whole in zip(again, self._ids([texts[i] for i in again]), strict=True):
            found[i] = whole
        return found

    def _ids(self, texts: list[str]) -> list[list[int]]:
        tokenizer = self._tokenizer
        if len(texts) == 1:  # a served request: no hand-off to the tokenizer's thread pool
            return [tokenizer.encode(texts[0], add_special_tokens=False).ids]
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: np.ndarray, columns: int) -> list[list[str | None]]:
        """Id rows back to text, one list per column (split at SEP; None: empty)."""
        found: list[list[str | None]] = [[] for _ in range(columns)]
        for row in np.asarray(ids, dtype=np.int64):
            parts: list[list[int]] = [[]]
            for token in row[row != PAD_ID].tolist():
                if token == SEP_ID and len(parts) < columns:
                    parts.append([])
                else:
                    parts[-1].append(token)
            parts += [[] for _ in range(columns - len(parts))]
            for k, part in enumerate(parts):
                found[k].append(self._tokenizer.decode(part) or None)
        return found


def vocabulary(tokenizer: str) -> dict[str, int]:
    """The tokenizer's pieces and their ids (for reports)."""
    return dict(json.loads(tokenizer)["model"]["vocab"])

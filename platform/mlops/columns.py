"""Mixed tables: what each feature column is, and how its raw values become the float32
row the network reads.

A column is `numeric`, `categorical`, `text` or `drop`. `infer_kinds` decides from the
data (numbers are numeric; strings and booleans with few distinct values are categorical,
strings with many are text) unless `data.columns` or `data.text` says.

An `Encoding` is fitted on the train split only and travels with the model (its spec):
- a numeric column is imputed with the train median; a column that had missing values in
  the train split also gets a missing-indicator column (1.0 where the value was missing);
- a categorical column maps each train category to an index, with index 0 reserved for a
  category never seen in training and 1 for a missing value; up to `one_hot_max`
  categories it is one-hot encoded, above that its index is passed to an embedding;
- the text columns are tokenized together (`mlops.text`: a tokenizer trained on the train
  split's texts; the columns joined by a separator token, cut at `max_length`).

A row is laid out as [numeric | indicators | one-hot blocks | embedding indices | token
ids]; indices and ids are whole numbers in float32 (exact below 2**24), so every path that
moves rows (training batches, streaming, serving, ONNX) moves them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.errors import UserError
from mlops.text import UNK_ID, TextCodec, train_tokenizer

if TYPE_CHECKING:
    import pandas as pd

    from mlops.params import TokenizerParams

KINDS = ("numeric", "categorical", "text", "drop")
UNSEEN, MISSING = 0, 1  # the reserved indices of every categorical column
RESERVED = 2
# A string column with at most this many distinct values (and at most half as many as
# rows) is read as categorical; more looks like free text.
CATEGORICAL_MAX_DISTINCT = 100


def category(value: Any) -> str | None:
    """A raw value as the category it names (None: missing). Whole floats read as their
    integer (a CSV integer column with a gap reads as floats); booleans as true/false."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value)


def infer_kinds(
    frame: pd.DataFrame, features: Sequence[str], declared: Mapping[str, str]
) -> dict[str, str]:
    """Each feature's kind: `declared` (data.columns) first, else from its values.

    Raises `UserError` naming a declared column that does not exist, a declared numeric
    column that holds text, and a column that looks like free text."""
    import pandas as pd

    unknown = [name for name in declared if name not in features]
    if unknown:
        raise UserError(
            f"data.columns: no column {unknown[0]!r} in the source "
            f"(columns: {', '.join(list(features)[:10])})"
        )
    kinds: dict[str, str] = {}
    for name in features:
        column = frame[name]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        kind = declared.get(name)
        if kind is None:
            kind = "numeric" if numeric else _guess(column)
        if kind == "numeric" and not numeric:
            shown = column.dropna().astype(str).head(1).tolist()
            raise UserError(
                f"data.columns.{name} = numeric: the column holds text "
                f"(e.g. {shown[0]!r}); declare it categorical or drop it"
            )
        kinds[name] = kind
    return kinds


def _guess(column: pd.Series) -> str:
    distinct = column.nunique(dropna=True)
    rows = max(int(column.notna().sum()), 1)
    few = distinct <= CATEGORICAL_MAX_DISTINCT and distinct <= max(rows // 2, 2)
    return "categorical" if few else "text"


def embedding_dim(cardinality: int, widest: int = 32) -> int:
    """The width of a categorical column's embedding: 1.6 * n^0.56, at most `widest`
    (32 by default: the rule fast.ai's tabular models use)."""
    return max(2, min(widest, round(1.6 * cardinality**0.56)))


class RecordError(ValueError):
    """A raw record that cannot be encoded: the message names the record and the column."""


@dataclass(frozen=True)
class Encoding:
    """How raw columns become a model's input row (fitted by `fit`; JSON-ready)."""

    numeric: list[str] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)
    indicators: list[str] = field(default_factory=list)  # numeric columns with a flag
    categorical: list[str] = field(default_factory=list)
    vocabularies: list[list[str]] = field(default_factory=list)  # most frequent first
    one_hot: list[bool] = field(default_factory=list)
    text: list[str] = field(default_factory=list)  # tokenized together, in this order
    tokenizer: str = ""  # Hugging Face's JSON of the tokenizer trained on the train split
    max_length: int = 0  # token ids per row (0: no text)
    embedding_dim: int = 0  # values per token embedding
    embedding_max: int = 32  # the widest a categorical column's embedding gets

    @property
    def columns(self) -> list[str]:
        """The raw columns a record must carry: numeric, categorical, text."""
        return [*self.numeric, *self.categorical, *self.text]

    @cached_property
    def codec(self) -> TextCodec | None:
        """The text columns' tokenizer (None: no text)."""
        return TextCodec(self.tokenizer, self.max_length) if self.text else None

    @property
    def text_start(self) -> int:
        """Where a row's token ids start (its width when it has none)."""
        return self.dense_width + len(self.embedded)

    @property
    def embedded(self) -> list[tuple[int, int]]:
        """(cardinality, embedding width) of each embedded column, in row order."""
        return [
            (len(v) + RESERVED, embedding_dim(len(v) + RESERVED, self.embedding_max))
            for v, hot in zip(self.vocabularies, self.one_hot, strict=True)
            if not hot
        ]

    @property
    def dense_width(self) -> int:
        """Values before the embedding indices: numbers, indicators, one-hot blocks."""
        pairs = zip(self.vocabularies, self.one_hot, strict=True)
        hot = sum(len(v) + RESERVED for v, h in pairs if h)
        return len(self.numeric) + len(self.indicators) + hot

    @property
    def width(self) -> int:
        """Values per encoded row."""
        return self.text_start + (self.max_length if self.text else 0)

    def names(self) -> list[str]:
        """A name for each encoded value: the column, `COLUMN.missing` (a flag),
        `COLUMN=CATEGORY` (one-hot, with `<unseen>` and `<missing>` first),
        `COLUMN.index` (an embedded column's index)."""
        names = [*self.numeric, *(f"{c}.missing" for c in self.indicators)]
        embedded = []
        for name, vocabulary, hot in zip(
            self.categorical, self.vocabularies, self.one_hot, strict=True
        ):
            if hot:
                names += [f"{name}=<unseen>", f"{name}=<missing>"]
                names += [f"{name}={v}" for v in vocabulary]
            else:
                embedded.append(f"{name}.index")
        tokens = [f"tokens.{i}" for i in range(self.max_length if self.text else 0)]
        return [*names, *embedded, *tokens]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (a schema's or a spec's `encoding`)."""
        return {k: v for k, v in asdict(self).items() if k != "codec"}

    @classmethod
    def from_dict(cls, found: Mapping[str, Any]) -> Encoding:
        """The encoding `as_dict` wrote."""
        return cls(**found)

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        kinds: Mapping[str, str],
        one_hot_max: int,
        max_categories: int,
        tokenizer: TokenizerParams | None = None,
        embedding_max: int = 32,
    ) -> Encoding:
        """Fit on the train split: medians, which numeric columns need a missing flag,
        each categorical column's vocabulary (its `max_categories` most frequent
        values, ties by name; the rest read as unseen) and the text columns' tokenizer.
        An embedded column's width is at most `embedding_max`."""
        numeric = [c for c, k in kinds.items() if k == "numeric"]
        categorical = [c for c, k in kinds.items() if k == "categorical"]
        medians = []
        for name in numeric:
            values = frame[name].astype("float64")
            median = values.median()
            medians.append(0.0 if math.isnan(median) else float(median))
        indicators = [c for c in numeric if frame[c].isna().any()]
        vocabularies = []
        for name in categorical:
            counts: dict[str, int] = {}
            for value in frame[name].tolist():
                key = category(value)
                if key is not None:
                    counts[key] = counts.get(key, 0) + 1
            ranked = sorted(counts, key=lambda k: (-counts[k], k))[:max_categories]
            vocabularies.append(ranked)
        hot = [len(v) <= one_hot_max for v in vocabularies]
        text = [c for c, k in kinds.items() if k == "text"]
        trained, length, width = "", 0, 0
        if text:
            if tokenizer is None:
                raise ValueError("text columns need the tokenizer's params")
            texts = [t for c in text for t in texts_of(frame[c].tolist()) if t]
            trained = train_tokenizer(
                texts, tokenizer.kind, tokenizer.vocab_size, tokenizer.lowercase
            )
            length, width = tokenizer.max_length, tokenizer.embedding_dim
        return cls(numeric, medians, indicators, categorical, vocabularies, hot,
                   text, trained, length, width, embedding_max)  # fmt: skip

    def text_report(self, frame: pd.DataFrame) -> dict[str, float]:
        """How the text columns of `frame` tokenize: rows, vocabulary, mean tokens, rows
        cut at `max_length`, unknown pieces (empty without text columns)."""
        if self.codec is None:
            return {}
        tokens = self.codec.encode([texts_of(frame[c].tolist()) for c in self.text])
        return {
            "text_rows": len(frame),
            "text_vocab_size": self.codec.vocab_size,
            "text_tokens_mean": float(tokens.lengths.mean()) if len(frame) else 0.0,
            "text_truncated": tokens.truncated,
            "text_unknown": sum(tokens.unknown),
        }

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
        """Encoded float32 rows of `frame` (which holds every raw column), and how many
        values of each categorical column (text: pieces) were not seen in training."""
        columns: dict[str, Any] = {
            n: frame[n].to_numpy(dtype=np.float64, na_value=np.nan) for n in self.numeric
        }
        columns |= {n: frame[n].tolist() for n in (*self.categorical, *self.text)}
        return self.encode(columns, len(frame))

    def read(self, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
        """`transform` on a frame of raw columns from outside the pipeline (a file, a
        DataFrame given to `mlflow.pyfunc`): every column present, numeric ones read as
        numbers. Raises `RecordError` naming the missing or non-numeric column."""
        import pandas as pd

        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise RecordError(f"missing columns: {', '.join(missing[:5])}")
        frame = frame[self.columns].copy()
        for name in self.numeric:
            try:
                frame[name] = pd.to_numeric(frame[name], errors="raise").astype("float64")
            except (TypeError, ValueError):
                raise RecordError(f"column {name}: expected numbers (or missing)") from None
        return self.transform(frame)

    @cached_property
    def _indices(self) -> list[dict[str, int]]:
        """Each categorical column's category -> index (built once per encoding)."""
        return [
            {v: i + RESERVED for i, v in enumerate(vocabulary)} for vocabulary in self.vocabularies
        ]

    def encode(self, columns: Mapping[str, Any], n: int) -> tuple[np.ndarray, dict[str, int]]:
        """`transform` on `n` rows given column by column: numbers as float64 (NaN where
        missing), categories and texts as lists of raw values."""
        numbers = np.empty((n, len(self.numeric)), dtype=np.float32)
        flags = np.empty((n, len(self.indicators)), dtype=np.float32)
        for j, name in enumerate(self.numeric):
            values = np.asarray(columns[name], dtype=np.float64)
            missing = np.isnan(values)
            numbers[:, j] = np.where(missing, self.medians[j], values)
            if name in self.indicators:
                flags[:, self.indicators.index(name)] = missing
        codes, unseen = [], {}
        for name, index in zip(self.categorical, self._indices, strict=True):
            found = [category(v) for v in columns[name]]
            column = np.array(
                [MISSING if v is None else index.get(v, UNSEEN) for v in found], dtype=np.int64
            )
            unseen[name] = int(np.count_nonzero(column == UNSEEN))
            codes.append(column)
        if self.codec is None:
            return self._assemble(numbers, flags, codes), unseen
        tokens = self.codec.encode([texts_of(columns[c]) for c in self.text])  # close the row
        unseen |= dict(zip(self.text, tokens.unknown, strict=True))
        ids = tokens.ids.astype(np.float32)
        if not self.text_start:  # text alone
            return ids, unseen
        x = self._assemble(numbers, flags, codes)
        return np.ascontiguousarray(np.concatenate([x, ids], axis=1)), unseen

    def _assemble(
        self, numbers: np.ndarray, flags: np.ndarray, codes: list[np.ndarray]
    ) -> np.ndarray:
        n = numbers.shape[0]
        blocks, indices = [numbers, flags], []
        for column, vocabulary, hot in zip(codes, self.vocabularies, self.one_hot, strict=True):
            if hot:
                block = np.zeros((n, len(vocabulary) + RESERVED), dtype=np.float32)
                block[np.arange(n), column] = 1.0
                blocks.append(block)
            else:
                indices.append(column.astype(np.float32)[:, None])
        return np.ascontiguousarray(np.concatenate([*blocks, *indices], axis=1), dtype=np.float32)

    @property
    def drift_names(self) -> list[str]:
        """What `codes` holds per row: each numeric and categorical column, and for text
        its token count (`text.tokens`) and share of unknown pieces (`text.unknown`)."""
        text = ["text.tokens", "text.unknown"] if self.text else []
        return [*self.numeric, *self.categorical, *text]

    def codes(self, x: np.ndarray) -> np.ndarray:
        """Encoded rows as the values drift compares (`drift_names`): a numeric column's
        value as the model reads it (imputed), a categorical column's index (0 unseen,
        1 missing, 2 + its rank in the vocabulary), the text's token count and share of
        unknown pieces."""
        x = np.asarray(x, dtype=np.float32)
        found = np.empty((len(x), len(self.drift_names)), dtype=np.float64)
        found[:, : len(self.numeric)] = x[:, : len(self.numeric)]
        at, embedded = len(self.numeric) + len(self.indicators), self.dense_width
        pairs = zip(self.vocabularies, self.one_hot, strict=True)
        for k, (vocabulary, hot) in enumerate(pairs, start=len(self.numeric)):
            if hot:
                width = len(vocabulary) + RESERVED
                found[:, k] = x[:, at : at + width].argmax(1)
                at += width
            else:
                found[:, k] = x[:, embedded]
                embedded += 1
        if self.text:
            ids = x[:, self.text_start :]
            tokens = (ids != 0).sum(axis=1)
            found[:, -2] = tokens
            found[:, -1] = (ids == UNK_ID).sum(axis=1) / np.maximum(tokens, 1)
        return found

    @property
    def sizes(self) -> dict[str, int]:
        """Each categorical column's number of indices (its vocabulary + unseen, missing)."""
        pairs = zip(self.categorical, self.vocabularies, strict=True)
        return {c: len(v) + RESERVED for c, v in pairs}

    def raw(self, x: np.ndarray) -> pd.DataFrame:
        """Encoded rows back as raw columns (an input example): numbers (NaN where the
        flag says missing), categories (None where missing or unseen)."""
        import pandas as pd

        x = np.asarray(x, dtype=np.float32)
        found: dict[str, Any] = {}
        for j, name in enumerate(self.numeric):
            values = x[:, j].astype(np.float64)
            if name in self.indicators:
                flag = x[:, len(self.numeric) + self.indicators.index(name)]
                values = np.where(flag > 0.5, np.nan, values)
            found[name] = values
        at, embedded = len(self.numeric) + len(self.indicators), self.dense_width
        for name, vocabulary, hot in zip(
            self.categorical, self.vocabularies, self.one_hot, strict=True
        ):
            if hot:
                codes = x[:, at : at + len(vocabulary) + RESERVED].argmax(axis=1)
                at += len(vocabulary) + RESERVED
            else:
                codes, embedded = x[:, embedded].astype(np.int64), embedded + 1
            found[name] = [vocabulary[c - RESERVED] if c >= RESERVED else None for c in codes]
        if self.codec is not None:
            decoded = self.codec.decode(x[:, self.text_start :], len(self.text))
            found |= dict(zip(self.text, decoded, strict=True))
        numeric = set(self.numeric)
        return pd.DataFrame(
            {
                name: pd.Series(found[name], dtype="float64" if name in numeric else object)
                for name in self.columns
            }
        )

    def records(self, records: Sequence[Any]) -> tuple[np.ndarray, dict[str, int]]:
        """Encode raw JSON records (`{"country": "NO", "age": null, …}`): numbers or null
        in numeric columns; strings, whole numbers, booleans or null in categorical ones.
        Raises `RecordError` naming the record and the column of the first bad value."""
        wanted = self.columns
        known = set(wanted)
        rows: dict[str, list[Any]] = {name: [] for name in wanted}
        numeric, texts = set(self.numeric), set(self.text)
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise RecordError(f"records[{i}] must be an object, not {_kind(record)}")
            for name in wanted:
                if name not in record:
                    raise RecordError(f"records[{i}]: missing column {name!r}")
                value = record[name]
                if name in numeric:
                    value = _number(value, i, name)
                elif name in texts:
                    if value is not None and not isinstance(value, str):
                        raise RecordError(
                            f"records[{i}].{name}: expected text (a string) or null, "
                            f"not {_kind(value)}"
                        )
                elif not _category_value(value):
                    raise RecordError(
                        f"records[{i}].{name}: expected a category (a string), not {_kind(value)}"
                    )
                rows[name].append(value)
            if len(record) != len(wanted):
                extra = next(k for k in record if k not in known)
                raise RecordError(f"records[{i}]: unknown column {extra!r}")
        return self.encode(rows, len(records))  # no DataFrame: this is the serving path


def texts_of(values: list[Any]) -> list[str | None]:
    """A column's values as text (None: missing)."""
    found: list[str | None] = []
    for value in values:
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        found.append(None if missing else str(value))
    return found


def _category_value(value: Any) -> bool:
    """Whether a JSON value can name a category: null, a string, a boolean, a whole number."""
    if value is None or isinstance(value, str | int | bool):
        return True
    return isinstance(value, float) and value.is_integer()


def _number(value: Any, i: int, name: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"records[{i}].{name}: expected a number or null, not {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or abs(number) > float(np.finfo(np.float32).max):
        raise RecordError(f"records[{i}].{name}: {value!r} is beyond float32's range")
    return number


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


def embedded_stats(
    encoding: Encoding, mean: list[float], std: list[float]
) -> tuple[list[float], list[float]]:
    """The standardisation of an encoded row: embedding indices pass through unchanged
    (mean 0, std 1), everything before them keeps its train statistics."""
    dense = encoding.dense_width
    return (
        [*mean[:dense], *[0.0] * (len(mean) - dense)],
        [*std[:dense], *[1.0] * (len(std) - dense)],
    )

"""Request validation for `POST /predict`, against the served model's signature.

A body is `{"inputs": [[…], …]}` (rows of numbers: flat, `in_features` long, or shaped
like the model's input, e.g. 8 by 8) or `{"records": [{"px_0_0": 0.0, …}, …]}` (objects keyed
by the training schema's feature names). The hot path is numpy on what orjson parsed: no
model object per row. Every refusal is a `BadRequest` with an HTTP status and one line.

Before anything is parsed, the raw bytes are counted (`Tally`, fed chunk by chunk as the
body arrives): a body longer, or with more `[`/`{` or commas, than a full batch of
`max_batch` rows of this model's input can have is refused at once, so parsing work is
bounded by what one legitimate batch costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import orjson

from mlops.columns import Encoding, RecordError
from mlops.images import ImageError, ImageFormat
from mlops.images.format import image_bytes, to_rows
from mlops.serving.multipart import FormError, files

JSON_TYPES = ("application/json",)
MULTIPART = "multipart/form-data"
IMAGE_BYTES = 8 * 1024 * 1024  # one uploaded image
MAX_IMAGE_BODY = 64 * 1024 * 1024  # one request of images
KEYS = ("inputs", "records")
_HOW = 'send {"inputs": [[numbers…], …]} or {"records": [{feature: number, …}, …]}'
_HOW_IMAGES = (
    'send {"records": [{"COLUMN": "<the file\'s bytes, base64>"}, …]} or a form upload '
    "(curl -F file=@image.png)"
)


def _how(spec: InputSpec) -> str:
    """How a body should look, for this model."""
    return _HOW_IMAGES.replace("COLUMN", spec.image.column) if spec.image else _HOW


class BadRequest(Exception):
    """A request the server refuses: an HTTP status (4xx) and a one-line message."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close  # answer with `Connection: close` (not worth reading the rest)


@dataclass(frozen=True)
class InputSpec:
    """What a request must match: the feature names, the input shape, the batch limit."""

    features: tuple[str, ...]
    input_shape: tuple[int, ...]
    max_batch: int
    image: ImageFormat | None = None
    encoding: Encoding | None = None  # a mixed table's: records of raw columns

    @property
    def sink_names(self) -> tuple[str, ...]:
        """The names the sink records a row's values under: the features, for an image
        model one per decoded value (`image.0`, `image.1`, …), for a mixed table one per
        encoded value (`Encoding.names`)."""
        if self.encoding is not None:
            return tuple(self.encoding.names())
        if self.image is None:
            return self.features
        return tuple(f"{self.image.column}.{i}" for i in range(self.image.values))

    @property
    def in_features(self) -> int:
        """Values per row (an image model's: channels x height x width; a mixed table's:
        its encoded width)."""
        if self.encoding is not None:
            return self.encoding.width
        return self.image.values if self.image is not None else len(self.features)

    @cached_property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The row shapes a request may use: flat, the model's input shape, and that shape
        without its size-1 axes (an 8x8 image for a 1x8x8 input)."""
        squeezed = tuple(d for d in self.input_shape if d != 1)
        found = [(self.in_features,), self.input_shape, squeezed]
        return tuple(dict.fromkeys(s for s in found if s))

    @cached_property
    def max_body_bytes(self) -> int:
        """The largest body worth parsing: a full batch of long numbers with their keys."""
        longest = max((len(f) for f in self.features), default=0)
        if self.image is not None:  # a batch of base64 images (or of decoded rows)
            encoded = self.max_batch * (IMAGE_BYTES * 4 // 3 + 64 + longest)
            return min(max(encoded, self.max_batch * self.in_features * 32), MAX_IMAGE_BODY)
        return self.max_batch * self.in_features * (32 + longest) + (1 << 20)

    @cached_property
    def max_opens(self) -> int:
        """The most `[` and `{` a full batch can hold: per row, the lists of a shaped row or
        the object of a record (with any brackets in its feature names)."""
        lists, width = 1, 1
        for size in self.input_shape[:-1]:
            width *= size
            lists += width
        named = sum(f.count("[") + f.count("{") for f in self.features)
        return 2 + self.max_batch * max(lists, 1 + named)

    @cached_property
    def max_commas(self) -> int:
        """The most commas a full batch can hold (in_features - 1 per row, one between
        rows, and any in the feature names of records)."""
        named = sum(f.count(",") for f in self.features)
        return 2 + self.max_batch * (self.in_features + named)


class Tally:
    """A body's size, `[`/`{` and commas, counted as its chunks arrive; `add` refuses (413)
    as soon as they exceed what a full batch can hold, before the body is parsed."""

    __slots__ = ("commas", "counting", "opens", "size", "spec")

    def __init__(self, spec: InputSpec, counting: bool = True) -> None:
        self.spec = spec
        self.counting = counting  # False for a form upload: file bytes are not JSON
        self.size = self.opens = self.commas = 0

    def add(self, chunk: bytes) -> None:
        """Count one chunk; raise `BadRequest(413)` once the body cannot be a batch."""
        spec = self.spec
        self.size += len(chunk)
        if self.size > spec.max_body_bytes:
            raise BadRequest(
                413, f"body exceeds {spec.max_body_bytes} bytes ({_batch(spec)})", close=True
            )
        if not self.counting:
            return
        self.opens += chunk.count(b"[") + chunk.count(b"{")
        if self.opens > spec.max_opens:
            raise BadRequest(413, f"body holds over {spec.max_opens} lists or objects: more "
                             f"than {_batch(spec)} can hold; refused before parsing")  # fmt: skip
        self.commas += chunk.count(b",")
        if self.commas > spec.max_commas:
            raise BadRequest(413, f"body holds over {spec.max_commas} values: more than "
                             f"{_batch(spec)} can hold; refused before parsing")  # fmt: skip


def _batch(spec: InputSpec) -> str:
    shape = "x".join(map(str, spec.input_shape))
    return f"a batch of {spec.max_batch} rows of {shape} values (--max-batch)"


def check_content_type(value: str | None, spec: InputSpec | None = None) -> None:
    """Refuse a body that does not say it is JSON, or for an image model a form upload
    (415)."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES or (media == MULTIPART and spec is not None and spec.image):
        return
    shown = media or "none"
    upload = " or multipart/form-data" if spec is not None and spec.image else ""
    raise BadRequest(415, f"content type {shown!r}: send Content-Type: application/json{upload}")


def parse_request(
    body: bytes,
    spec: InputSpec,
    tallied: bool = False,
    content_type: str | None = None,
    unseen: dict[str, int] | None = None,
) -> np.ndarray:
    """The batch of a `/predict` body as a float32 matrix (rows x in_features): JSON, or
    for an image model a `multipart/form-data` upload of image files. For a mixed table,
    `unseen` receives how many values of each categorical column training never saw.

    The body is counted first (`Tally`) unless the caller did it as it arrived."""

    if not tallied:
        Tally(spec).add(body)
    if spec.image is not None and (content_type or "").lower().startswith(MULTIPART):
        return _uploads(body, content_type or "", spec, spec.image)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(400, f"the body must be a JSON object: {_how(spec)}")
    unknown = [k for k in doc if k not in KEYS]
    if unknown:
        raise BadRequest(400, f"unknown key {unknown[0]!r}: {_how(spec)}")
    if len(doc) != 1:
        how = _how(spec)
        raise BadRequest(400, f"both `inputs` and `records` given: {how}" if doc else how)
    key, batch = next(iter(doc.items()))
    if not isinstance(batch, list):
        raise BadRequest(422, f"`{key}` must be a list (a batch), not {_kind(batch)}")
    if not batch:
        raise BadRequest(422, f"`{key}` is an empty batch")
    if len(batch) > spec.max_batch:
        raise BadRequest(
            413, f"batch of {len(batch)} rows exceeds the limit of {spec.max_batch} rows"
        )
    if key == "records" and spec.image is not None:
        return _image_records(batch, spec.image)
    if spec.encoding is not None:
        return _encoded(batch, key, spec.encoding, unseen)
    rows = batch if key == "inputs" else _records(batch, spec.features)
    # A boolean parses to True/False, which numpy turns into 1/0 among numbers: only a
    # body that spells `true` or `false` somewhere needs the walk over every value.
    return to_matrix(rows, spec, key, booleans=b"true" in body or b"false" in body)


def _image_records(records: list[Any], fmt: ImageFormat) -> np.ndarray:
    """`[{"image": "<base64>"}, …]` decoded as evaluation decodes the test split."""
    pixels = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadRequest(422, f"records[{i}] must be an object, not {_kind(record)}")
        if fmt.column not in record:
            raise BadRequest(422, f"records[{i}]: missing {fmt.column!r} (the image, base64)")
        extra = next((k for k in record if k != fmt.column), None)
        if extra is not None:
            raise BadRequest(422, f"records[{i}]: unknown key {extra!r}")
        value, where = record[fmt.column], f"records[{i}].{fmt.column}"
        if not isinstance(value, str):
            raise BadRequest(422, f"{where}: expected base64 text, not {_kind(value)}")
        pixels.append(_decode(image_bytes_or_422(value, where), fmt, where))
    return to_rows(np.stack(pixels))


def _encoded(
    records: list[Any], key: str, encoding: Encoding, unseen: dict[str, int] | None
) -> np.ndarray:
    """A mixed table's raw records encoded as training encoded the split."""
    if key != "records":
        raise BadRequest(
            422,
            "this model reads raw columns by name: send "
            '{"records": [{"COLUMN": value, …}, …]} (nulls for missing values)',
        )
    try:
        x, counts = encoding.records(records)
    except RecordError as exc:
        raise BadRequest(422, str(exc)) from None
    if unseen is not None:
        unseen.update(counts)
    return x


def image_bytes_or_422(value: str, where: str) -> bytes:
    """Base64 text as bytes, or a 422 naming where it was."""
    try:
        data = image_bytes(value)
    except ImageError as exc:
        raise BadRequest(422, f"{where}: {exc}") from None
    if len(data) > IMAGE_BYTES:
        raise BadRequest(413, f"{where}: {len(data)} bytes, over {IMAGE_BYTES} for one image")
    return data


def _decode(data: bytes, fmt: ImageFormat, where: str) -> np.ndarray:
    try:
        return fmt.decode(data)
    except ImageError as exc:
        raise BadRequest(422, f"{where}: cannot decode the image: {exc}") from None


def _uploads(body: bytes, content_type: str, spec: InputSpec, fmt: ImageFormat) -> np.ndarray:
    """A form upload (`curl -F file=@cat.jpg`): every file part is one image, in order."""
    try:
        parts = files(body, content_type, spec.max_batch)
    except FormError as exc:
        raise BadRequest(exc.status, str(exc)) from None
    pixels = []
    for name, data in parts:
        if len(data) > IMAGE_BYTES:
            raise BadRequest(413, f"file {name!r}: {len(data)} bytes, over {IMAGE_BYTES}")
        pixels.append(_decode(data, fmt, f"file {name!r}"))
    return to_rows(np.stack(pixels))


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


def _records(records: list[Any], features: Sequence[str]) -> list[list[Any]]:
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadRequest(422, f"records[{i}] must be an object, not {_kind(record)}")
        try:
            rows.append([record[name] for name in features])
        except KeyError as exc:
            raise BadRequest(422, f"records[{i}]: missing feature {exc.args[0]!r}") from None
        if len(record) != len(features):
            known = set(features)
            extra = next(k for k in record if k not in known)
            raise BadRequest(422, f"records[{i}]: unknown feature {extra!r}")
    return rows


def to_matrix(
    rows: list[Any], spec: InputSpec, key: str = "inputs", booleans: bool = True
) -> np.ndarray:
    """Numbers only (no strings, booleans or nulls), one shape per row, finite in float32.

    `booleans=False` says the rows hold no boolean at any depth (the caller checked the
    raw body), which saves a walk over every value."""

    try:
        array = np.asarray(rows)
    except ValueError:
        if _depth(rows) > 1 + max(1, len(spec.input_shape)):
            raise BadRequest(422, f"`{key}`: rows nested too deep") from None
        raise BadRequest(422, f"`{key}`: rows of different lengths or shapes") from None
    if booleans or array.dtype.kind not in "iuf":
        array = _numbers(rows, key)
    shape = array.shape[1:]
    n = array.shape[0]
    if shape not in spec.shapes:
        if array.ndim == 1:
            raise BadRequest(422, f"`{key}` must be a list of rows, each a list of numbers")
        if array.ndim > 1 + max(1, len(spec.input_shape)):
            raise BadRequest(422, f"`{key}`: rows nested too deep (shape {list(shape)})")
        expected = f"{spec.in_features} values"
        shaped = [list(s) for s in spec.shapes if len(s) > 1]
        if shaped:
            expected += " or shape " + " or ".join(map(str, shaped))
        raise BadRequest(422, f"`{key}`: rows of shape {list(shape)}, expected {expected}")
    with np.errstate(over="ignore"):
        matrix = array.astype(np.float32, copy=False).reshape(n, spec.in_features)
    if not np.isfinite(matrix).all():
        raise BadRequest(422, f"`{key}`: a value is beyond float32's range")
    return np.ascontiguousarray(matrix)


def _numbers(rows: list[Any], key: str) -> np.ndarray:
    """The same rows as float64, or a 422 naming the first value that is not a number."""

    for i, row in enumerate(rows):
        for value in _leaves(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                shown = orjson.dumps(value).decode()[:40]
                raise BadRequest(422, f"`{key}`[{i}]: {shown} is not a number")
    try:
        return np.asarray(rows, dtype=np.float64)  # e.g. an int beyond int64
    except (OverflowError, ValueError):
        raise BadRequest(422, f"`{key}`: a value is beyond float32's range") from None


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and depth < 100:
        depth, value = depth + 1, value[0] if value else None
    return depth


def _leaves(value: Any) -> list[Any]:
    """Every value that is not a list, in order, at any depth (no recursion: a body may
    nest as deep as the parser allows)."""
    found: list[Any] = []
    stack = [iter([value])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            found.append(item)
        else:
            stack.pop()
    return found

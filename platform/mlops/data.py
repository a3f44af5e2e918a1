"""Reading data sources and the columnar files the pipeline passes between stages."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.columns import Encoding, infer_kinds
from mlops.errors import DataError, UserError, first_line
from mlops.images import FILE_COLUMN, ImageError, ImageFormat
from mlops.images.source import Found, read_folder, read_table
from mlops.io import read_json, write_json, write_with

if TYPE_CHECKING:
    import pandas as pd

    from mlops.params import DataParams

BUILTIN_DIGITS = "builtin:digits"


@dataclass(frozen=True)
class Schema:
    """What ingest found: feature columns, target, classes and, for images, their shape."""

    source: str
    target: str
    features: list[str]
    dtypes: dict[str, str]
    classes: list[Any]
    n_rows: int
    task: str = "classification"
    input_shape: list[int] = field(default_factory=list)
    image: dict[str, Any] = field(default_factory=dict)  # ImageFormat, for an image source
    # A mixed table's feature kinds (numeric, categorical), from ingest; empty for a table
    # of complete numeric columns, which the model reads as they are.
    columns: dict[str, str] = field(default_factory=dict)
    encoding: dict[str, Any] = field(default_factory=dict)  # Encoding, fitted by split

    @property
    def image_format(self) -> ImageFormat | None:
        """How the image column is decoded (None: numeric features)."""
        return ImageFormat.from_dict(self.image) if self.image else None

    @property
    def column_encoding(self) -> Encoding | None:
        """How a mixed table's raw columns are encoded (None: not a mixed table); a
        `DataError` for a mixed table's schema read before `split` fitted it."""
        if not self.columns:
            return None
        if not self.encoding:
            raise DataError(
                "the schema has no fitted column encoding: read data/split/schema.json "
                "(run `dvc repro split`)"
            )
        return Encoding.from_dict(self.encoding)

    def fitted(self, train: pd.DataFrame, data: DataParams) -> Schema:
        """This schema with a mixed table's encoding fitted on the `train` split (and the
        input shape it gives); unchanged for other data."""
        if not self.columns:
            return self
        encoding = Encoding.fit(
            train, self.columns, data.one_hot_max, data.max_categories, data.tokenizer,
            data.category_embedding_max,
        )  # fmt: skip
        return replace(self, encoding=encoding.as_dict(), input_shape=[encoding.width])

    def encoded_as(self, encoding: dict[str, Any]) -> Schema:
        """This schema with a model's column encoding (a mixed table's; unchanged for
        other data), so the splits are read exactly as that model reads them."""
        if not self.columns or not encoding:
            return self
        return replace(self, encoding=encoding, input_shape=[Encoding.from_dict(encoding).width])

    def save(self, path: str | Path) -> None:
        """Write the schema as JSON (atomically)."""
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read a schema written by `save`."""
        return cls(**read_json(path))


def check_source(source: str, base: Path) -> Path | None:
    """The file or folder a data source names (relative to `base`), or None for a
    builtin set.

    Raises `UserError` naming `data.source` when it does not exist.
    """
    if source == BUILTIN_DIGITS:
        return None
    path = Path(source) if Path(source).is_absolute() else base / source
    folder = Path(source).suffix == ""
    if folder and not path.is_dir():
        raise UserError(f"data.source: folder not found: {source}")
    if not folder and not path.is_file():
        raise UserError(f"data.source: file not found: {source}")
    return path


DEFAULT_IMAGE_COLUMN = "image"


def load_images(source: str, target: str, base: Path, column: str | None) -> Found:
    """An image source: a folder of class subfolders (the images in column `image`), or
    a table whose `column` names image files. The target is called `target`."""
    path = check_source(source, base)
    assert path is not None
    if path.is_dir():
        return read_folder(path, column or DEFAULT_IMAGE_COLUMN, base)
    assert column is not None
    table = load_source(source, target, base)
    return read_table(table, path, column, base)


def load_source(source: str, target: str, base: Path) -> pd.DataFrame:
    """Read the data source named in params: the builtin digits set, or a CSV/Parquet file
    (a relative path is taken from `base`, the stage's working directory).

    The target column is always called `target` in the returned frame.
    """
    import pandas as pd

    if source == BUILTIN_DIGITS:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        columns = [f"px_{r}_{c}" for r in range(8) for c in range(8)]
        frame = pd.DataFrame(bunch.data.astype("float32"), columns=columns)
        frame["target"] = bunch.target.astype("int64")
        return frame
    path = check_source(source, base)
    assert path is not None
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DataError(f"{source}: cannot read: {first_line(exc)}") from None
    if target not in frame.columns:
        raise UserError(
            f"data.target = {target!r}: no such column in {source} "
            f"(columns: {', '.join(map(str, frame.columns[:10]))})"
        )
    if pd.api.types.is_float_dtype(frame[target]) and frame[target].isna().any():
        frame[target] = _integer_labels(path, target, frame[target])
    frame.columns = [str(c) for c in frame.columns]
    if target != "target":
        if "target" in frame.columns:
            raise DataError(f"{source}: a feature column is named 'target'; rename it")
        frame = frame.rename(columns={target: "target"})
    return frame


def _integer_labels(path: Path, target: str, column: pd.Series) -> pd.Series:
    """`column` as nullable integers when the file stores the target as integers (pandas
    reads an integer column with a missing value as floats), else `column` unchanged."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            raw = pd.read_csv(path, usecols=[target], dtype_backend="numpy_nullable")[target]
        else:
            raw = pd.read_parquet(path, columns=[target], dtype_backend="numpy_nullable")[target]
    except Exception:  # read once already: the first read's floats stand
        return column
    return column.astype("Int64") if pd.api.types.is_integer_dtype(raw) else column


def resolve_task(labels: pd.Series, task: str = "auto") -> str:
    """`classification` or `regression`: `data.task`, or with `auto` the target's type
    (a float column is a quantity; integers, strings and booleans are classes)."""
    import pandas as pd

    if task != "auto":
        return task
    floats = pd.api.types.is_float_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    return "regression" if floats else "classification"


def infer_schema(
    frame: pd.DataFrame,
    source: str,
    target: str,
    input_shape: list[int] | None = None,
    task: str = "auto",
    image: ImageFormat | None = None,
    declared: dict[str, str] | None = None,
) -> Schema:
    """Describe a loaded frame: features, dtypes, task, sorted class labels, input shape
    (an image source's one feature is its image column, of `image`'s shape).

    The task is `data.task`, or with `auto` the target's type (`resolve_task`). A float
    target read as classes (`data.task: classification`) must hold whole values; it is
    converted to integers in place.
    """
    import pandas as pd

    labels = frame["target"].dropna()
    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    continuous = pd.api.types.is_float_dtype(labels) and not (labels == labels.round()).all()
    task = resolve_task(labels, task)
    if task == "classification" and continuous:
        raise DataError(
            f"data.task = classification: the target {target!r} holds continuous values "
            "(set data.task: regression or auto)"
        )
    if task == "regression":
        if not numeric:
            raise DataError(
                f"data.task = regression: the target {target!r} is not numeric "
                "(set data.task: classification or auto)"
            )
        frame["target"] = frame["target"].astype("float64")
    elif pd.api.types.is_float_dtype(labels):
        frame["target"] = frame["target"].astype("Int64")
        labels = frame["target"].dropna()
    values: list[Any] = []
    if task == "classification":
        values = sorted({v.item() if hasattr(v, "item") else v for v in labels.unique()}, key=str)
        if all(isinstance(v, int) for v in values):
            values = sorted(values)
    features = [c for c in frame.columns if c not in ("target", FILE_COLUMN)]
    columns: dict[str, str] = {}
    if image is None and source != BUILTIN_DIGITS:
        columns = _mixed_columns(frame, features, declared or {}, input_shape)
        features = list(columns) or features
    shape = [1, 8, 8] if source == BUILTIN_DIGITS else [len(features)]
    if image is not None:
        shape = image.shape
    elif input_shape is not None:
        if math.prod(input_shape) != len(features):
            raise UserError(
                f"data.input_shape = {input_shape}: holds {math.prod(input_shape)} values, "
                f"but the data has {len(features)} feature columns"
            )
        shape = list(input_shape)
    return Schema(
        source=source,
        target=target,
        features=features,
        dtypes={c: str(t) for c, t in frame.dtypes.items()},
        classes=values,
        n_rows=len(frame),
        task=task,
        input_shape=shape,
        image=image.as_dict() if image is not None else {},
        columns=columns,
    )


def _mixed_columns(
    frame: pd.DataFrame, features: list[str], declared: dict[str, str], shape: list[int] | None
) -> dict[str, str]:
    """A table's kept features and their kinds when it needs encoding (a categorical
    column, a missing value or `data.columns`), its dropped columns removed from `frame`;
    `{}` for complete numeric columns, which are read as they are."""
    kinds = infer_kinds(frame, features, declared)
    simple = all(k == "numeric" for k in kinds.values()) and not declared
    if simple and not frame[features].isna().to_numpy().any():
        return {}
    if shape is not None:
        raise UserError(
            "data.input_shape: a table with categorical columns or missing values is read "
            "column by column (drop data.input_shape)"
        )
    dropped = [c for c, k in kinds.items() if k == "drop"]
    for column in dropped:  # in place: the caller's frame loses them
        del frame[column]
    kept = {c: k for c, k in kinds.items() if k != "drop"}
    if not kept:
        raise UserError("data.columns: every feature column is dropped")
    return kept


def subsample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows, stratified by target, in a reproducible order."""
    if max_rows is None or len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(
        frame, train_size=max_rows, random_state=seed, stratify=frame["target"]
    )
    return kept.sort_index().reset_index(drop=True)


# A row group's size in memory (Arrow), about: the unit a streamed split is read in, by
# each DataLoader worker at once (16 MB groups cost a 2M-row job 1.4x the memory of a
# 200k-row one with 2 workers; 4 MB groups 1.07x: benchmarks/stream_memory.py).
GROUP_BYTES = 4 * 1024 * 1024


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a frame to Parquet atomically, in row groups of about `GROUP_BYTES` (the unit
    a streamed split is read in); the same frame always gives the same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    table = table.replace_schema_metadata(None)
    rows = max(1, min(1 << 20, GROUP_BYTES * max(len(table), 1) // max(table.nbytes, 1)))
    write_with(
        path, lambda tmp: pq.write_table(table, tmp, compression="zstd", row_group_size=rows)
    )


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a Parquet file written by `write_parquet`."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run the earlier stages first)") from None


def features_and_target(frame: pd.DataFrame, schema: Schema) -> tuple[Any, Any]:
    """Features as float32 and targets as class indices, both numpy arrays (an image
    source's images decoded to rows, `ImageFormat.rows`)."""

    fmt = schema.image_format
    encoding = schema.column_encoding
    if fmt is not None:
        x = _image_rows(frame, fmt)
    elif encoding is not None:
        x, _ = encoding.transform(frame)
    else:
        x = frame[schema.features].to_numpy(dtype=np.float32, copy=True)
    if schema.task == "regression":
        return x, frame["target"].to_numpy(dtype=np.float32, copy=True)
    index = {str(c): i for i, c in enumerate(schema.classes)}
    try:
        y = np.array([index[str(v)] for v in frame["target"]], dtype=np.int64)
    except KeyError as exc:
        raise DataError(f"label {exc.args[0]!r} is not among the schema's classes") from None
    return x, y


def _image_rows(frame: pd.DataFrame, fmt: ImageFormat) -> np.ndarray:
    """The frame's images decoded; a `DataError` naming the file of one that is not (a
    split written without `validate`, or changed since)."""
    files = list(frame[FILE_COLUMN]) if FILE_COLUMN in frame.columns else None
    try:
        return fmt.rows(frame[fmt.column], files)
    except ImageError as exc:
        raise DataError(f"image {exc} (run `dvc repro validate`)") from None

"""Data validation: pure checks on a frame against its schema and the validate params."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlops.images import FILE_COLUMN, ImageFormat
from mlops.images.checks import named, survey

if TYPE_CHECKING:
    import pandas as pd

    from mlops.data import Schema
    from mlops.params import ValidateParams


@dataclass(frozen=True)
class Check:
    """One validation check: what was measured, against what, and whether it passed."""

    name: str
    passed: bool
    value: Any
    threshold: Any
    detail: str


def _check(name: str, passed: bool, value: Any, threshold: Any, detail: str) -> Check:
    return Check(name=name, passed=bool(passed), value=value, threshold=threshold, detail=detail)


def _task_hint(schema: Schema) -> str:
    """For a numeric target read as classes: how to read it as a quantity instead."""
    dtype = schema.dtypes.get("target", "").lower()
    if not dtype.startswith(("int", "uint")):
        return ""
    return (
        f"; the integer target {schema.target!r} is read as classes "
        "(set data.task: regression if it is a quantity)"
    )


def _label_checks(counts: pd.Series, schema: Schema, params: ValidateParams) -> list[Check]:
    checks: list[Check] = []
    hint = _task_hint(schema)
    known = {str(c) for c in schema.classes}
    unknown = sorted(set(counts.index) - known)
    n_classes = int(counts.size)
    checks.append(
        _check(
            "labels.set",
            not unknown and 2 <= n_classes <= params.max_classes,
            n_classes,
            f"2..{params.max_classes} classes, all known to the schema",
            f"{n_classes} classes"
            + (f"; labels not in schema: {unknown[:5]}" if unknown else "")
            + ("; a classifier needs at least 2" if n_classes < 2 else "")
            + (hint if n_classes > params.max_classes else ""),
        )
    )
    share = float(counts.min() / counts.sum()) if n_classes else 0.0
    balance = "no classes"
    if n_classes:
        largest = float(counts.max() / counts.sum())
        balance = (
            f"rarest class {counts.idxmin()} has {share:.1%} of the rows, "
            f"largest {counts.idxmax()} {largest:.1%}"
        )
    checks.append(
        _check(
            "labels.balance",
            n_classes > 0 and share >= params.min_class_share,
            round(share, 6),
            params.min_class_share,
            balance,
        )
    )
    smallest = int(counts.min()) if n_classes else 0
    rare = counts[counts < params.min_rows_per_class]
    checks.append(
        _check(
            "labels.min_rows_per_class",
            n_classes > 0 and rare.empty,
            smallest,
            params.min_rows_per_class,
            f"smallest class has {smallest} rows"
            + (
                f"; too few rows for {', '.join(map(str, rare.index[:5]))}"
                if not rare.empty
                else ""
            )
            + (hint if not rare.empty else ""),
        )
    )
    return checks


def validate_frame(
    frame: pd.DataFrame, schema: Schema, params: ValidateParams, max_length: int = 128
) -> dict[str, Any]:
    """Run every check and return the report (JSON-ready); `report["passed"]` is the verdict.
    `max_length` is the tokens a text keeps (data.tokenizer.max_length)."""
    present = [c for c in schema.features if c in frame.columns]
    labels = frame["target"].dropna()
    counts = labels.astype(str).value_counts()
    n = len(frame)
    fmt = schema.image_format
    checks = [
        *_schema_checks(frame, schema, present),
        _missing_check(frame, present, params),
        *_target_checks(labels, counts, schema, params),
        _duplicates_check(frame, present, params),
        _check("rows", n > 0, n, "> 0", f"{n} rows"),
    ]
    if fmt is not None and fmt.column in frame.columns and FILE_COLUMN in frame.columns:
        checks += _image_checks(frame, fmt, params)
    text = [c for c, k in schema.columns.items() if k == "text" and c in frame.columns]
    if text:
        checks += _text_checks(frame, text, params, max_length)
    return {
        "passed": all(c.passed for c in checks),
        "n_rows": n,
        "class_counts": {k: int(v) for k, v in sorted(counts.items())},
        "checks": [asdict(c) for c in checks],
    }


def _schema_checks(frame: pd.DataFrame, schema: Schema, present: list[str]) -> list[Check]:
    """The columns are the ones ingest recorded, and every numeric feature is numeric
    (every feature, unless the table has categorical columns)."""
    import pandas as pd

    expected = [*schema.features, "target", *([FILE_COLUMN] if schema.image else [])]
    missing_cols = [c for c in expected if c not in frame.columns]
    extra_cols = [c for c in frame.columns if c not in expected]
    columns = _check(
        "schema.columns",
        not missing_cols and not extra_cols,
        {"missing": missing_cols, "unexpected": extra_cols},
        "columns as recorded by ingest",
        "columns match the schema"
        if not missing_cols and not extra_cols
        else f"missing {missing_cols}, unexpected {extra_cols}",
    )
    numbers = [c for c in present if c != schema.image.get("column")]
    if schema.columns:  # a mixed table: its numeric columns only
        numbers = [c for c in numbers if schema.columns.get(c) == "numeric"]
    non_numeric = [c for c in numbers if not pd.api.types.is_numeric_dtype(frame[c])]
    non_numeric += [c for c in numbers if pd.api.types.is_bool_dtype(frame[c])]
    numeric = _check(
        "schema.numeric_features",
        not non_numeric,
        non_numeric,
        "all features numeric",
        "all features are numeric"
        if not non_numeric
        else f"non-numeric feature columns: {', '.join(non_numeric[:5])}",
    )
    return [columns, numeric]


def _missing_check(frame: pd.DataFrame, present: list[str], params: ValidateParams) -> Check:
    """The emptiest feature column's share of missing values within the limit (they are
    imputed: `mlops.columns`), and no row without a target."""
    shares = frame[present].isna().mean() if present and len(frame) else None
    worst = str(shares.idxmax()) if shares is not None and float(shares.max()) > 0 else ""
    share = float(shares.max()) if worst and shares is not None else 0.0
    no_target = int(frame["target"].isna().sum())
    detail = f"column {worst!r} is {share:.1%} empty" if worst else "no missing feature values"
    if no_target:
        detail += f"; {no_target} rows have no target (remove them from the source)"
    return _check(
        "missing_values",
        share <= params.max_missing_fraction and not no_target,
        round(share, 6),
        f"at most {params.max_missing_fraction} of a column; every row has a target",
        detail,
    )


def _target_checks(
    labels: pd.Series, counts: pd.Series, schema: Schema, params: ValidateParams
) -> list[Check]:
    """A regression target has at least two distinct numeric values; classes have the
    label checks."""
    import pandas as pd

    if schema.task != "regression":
        return list(_label_checks(counts, schema, params))
    distinct = int(labels.nunique())
    numeric = pd.api.types.is_numeric_dtype(labels)
    return [
        _check(
            "target.values",
            numeric and distinct >= 2,
            distinct,
            ">= 2 distinct numeric values",
            f"{distinct} distinct values" + ("" if numeric else "; the target is not numeric"),
        )
    ]


def _duplicates_check(frame: pd.DataFrame, present: list[str], params: ValidateParams) -> Check:
    """The share of duplicate rows within the limit; rows that share features but not
    the label are counted in the detail."""
    n = len(frame)
    frame = frame[[c for c in frame.columns if c != FILE_COLUMN]]  # an image's name differs
    dup = int(frame.duplicated().sum()) if n else 0
    conflicting = 0
    if n and present:
        by_features = frame.drop_duplicates().duplicated(subset=present, keep=False)
        conflicting = int(by_features.sum())
    frac_dup = dup / n if n else 0.0
    return _check(
        "duplicates",
        frac_dup <= params.max_duplicate_fraction,
        round(frac_dup, 6),
        params.max_duplicate_fraction,
        f"{dup} duplicate rows; {conflicting} rows share features but not the label",
    )


def _image_checks(frame: pd.DataFrame, fmt: ImageFormat, params: ValidateParams) -> list[Check]:
    """Every image decodes in full, has 8 bits per channel and is not tiny (the first
    bad files named in the detail)."""
    found = survey(list(frame[fmt.column]), list(frame[FILE_COLUMN]), fmt, params.min_image_size)
    width, height = found.smallest
    return [
        _check(
            "images.readable",
            not found.unreadable,
            len(found.unreadable),
            "0 unreadable or truncated files",
            f"{len(found.unreadable)} unreadable: {named(found.unreadable)}"
            if found.unreadable
            else "every image decodes",
        ),
        _check(
            "images.mode",
            not found.mode,
            len(found.mode),
            "8 bits per channel (grayscale, RGB, palette, CMYK)",
            f"{len(found.mode)} in other modes: {named(found.mode)}"
            if found.mode
            else "every image has 8 bits per channel",
        ),
        _check(
            "images.min_size",
            not found.tiny,
            f"{width}x{height}",
            f">= {params.min_image_size} pixels either side",
            f"{len(found.tiny)} too small: {named(found.tiny)}"
            if found.tiny
            else f"smallest image {width}x{height}",
        ),
    ]


def _text_checks(
    frame: pd.DataFrame, columns: list[str], params: ValidateParams, max_length: int
) -> list[Check]:
    """Rows whose text is empty (every text column blank), within the missing limit; rows
    longer than `max_length` words (each cut there), counted within their limit."""
    n = max(len(frame), 1)
    texts = frame[columns].fillna("").astype(str)
    words = sum(texts[c].str.split().str.len() for c in columns)
    empty = int((words == 0).sum())
    longer = int((words > max_length).sum())
    empty_share, longer_share = empty / n, longer / n
    return [
        _check(
            "text.empty",
            empty_share <= params.max_missing_fraction,
            round(empty_share, 6),
            params.max_missing_fraction,
            f"{empty} of {len(frame)} rows have no text in {', '.join(columns)}",
        ),
        _check(
            "text.length",
            longer_share <= params.max_truncated_fraction,
            round(longer_share, 6),
            params.max_truncated_fraction,
            f"{longer} of {len(frame)} rows are longer than {max_length} words and will be cut "
            f"to {max_length} tokens (data.tokenizer.max_length); longest {int(words.max())} words",
        ),
    ]


def failure_summary(report: dict[str, Any]) -> str:
    """One line naming every failed check."""
    failed = [c for c in report["checks"] if not c["passed"]]
    return "; ".join(f"{c['name']}: {c['detail']} (limit {c['threshold']})" for c in failed)

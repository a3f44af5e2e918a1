"""Stratified train/val/test split: pure, seeded, order-stable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from mlops.params import SplitParams


def stratified_split(
    frame: pd.DataFrame, params: SplitParams, task: str = "classification"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split by `target` into train/val/test with the given fractions and seed
    (a regression target is stratified by its deciles).

    Rows without a target are dropped first (`validate` refuses them; missing feature
    values stay, to be imputed as `mlops.columns` says). Each part keeps the original row
    order, so identical input and seed give identical parts.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    clean = frame.dropna(subset=["target"]).reset_index(drop=True)
    if task == "regression":
        bins = max(1, min(10, len(clean) // 20))
        labels = pd.qcut(clean["target"], q=bins, labels=False, duplicates="drop").astype(str)
    else:
        labels = clean["target"].astype(str)
    n_classes = labels.nunique()
    n_test = round(len(clean) * params.test_fraction)
    n_val = round(len(clean) * params.val_fraction)
    if min(n_test, n_val) < n_classes:
        raise DataError(
            f"split: {len(clean)} rows give {min(n_test, n_val)} rows in the smallest part, "
            f"fewer than the {n_classes} classes; raise the fractions or add data"
        )
    try:
        rest, test = train_test_split(
            clean, test_size=n_test, random_state=params.seed, stratify=labels
        )
        train, val = train_test_split(
            rest, test_size=n_val, random_state=params.seed, stratify=labels.loc[rest.index]
        )
    except ValueError as exc:
        raise DataError(f"split: {exc}") from None
    return tuple(part.sort_index().reset_index(drop=True) for part in (train, val, test))

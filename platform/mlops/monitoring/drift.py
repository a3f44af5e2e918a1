"""Drift statistics: per-feature PSI and two-sample KS, the shift of the predictions, and
a verdict against the `monitor.drift` thresholds. Pure: numpy arrays in, dataclasses out.

PSI (population stability index) compares the shares of rows in bins fixed by the
reference: `bins` quantile bins of the reference (ties merged, so a discrete or constant
feature gets fewer bins), plus one bin below the reference's minimum and one above its
maximum, which hold nothing in the reference, so values outside the training range count
as drift. Bins empty on both sides are left out; the others' shares are smoothed,
(count + 0.5) / (n + 0.5·bins), so a bin empty on one side adds a finite term scaled to
the sample size instead of an infinite one.
PSI = Σ (current - reference) · ln(current / reference); under 0.1 is usually read as
stable, above 0.2 as a significant shift.

PSI is inflated by noise on small samples (about (bins - 1)·(1/n + 1/m) for identical
distributions: 0.3 for 30 rows in 10 bins), so a PSI counts only when the chi-square test
of homogeneity on the same bins' counts is significant too.

A categorical column of a mixed table is binned by its categories instead (one bin each,
plus one for categories training never saw and one for missing values); KS does not
apply, and the current share of unseen categories is reported beside its PSI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mlops.params import DriftParams

SMOOTHING = 0.5


def bin_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Sorted edges: the reference's minimum, its inner quantiles, and just above its
    maximum (duplicates merged). Bin i holds edges[i-1] <= x < edges[i]; bin 0 is below
    the minimum, the last bin above the maximum."""
    ref = np.asarray(reference, dtype=np.float64)
    inner = np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    top = np.nextafter(ref.max(), np.inf)
    return np.unique(np.concatenate([[ref.min()], inner, [top]]))


def binned_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows of `values` in each bin of `edges` (len(edges) + 1 bins)."""
    index = np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="right")
    return np.bincount(index, minlength=len(edges) + 1)


def smoothed_shares(counts: np.ndarray) -> np.ndarray:
    """(count + 0.5) / (n + 0.5·bins): strictly positive shares that sum to one."""
    counts = np.asarray(counts, dtype=np.float64)
    return (counts + SMOOTHING) / (counts.sum() + SMOOTHING * len(counts))


def psi_of_counts(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two count vectors over the same bins (smoothed shares of the bins that are
    not empty on both sides)."""
    both = np.vstack([reference, current])
    both = both[:, both.sum(axis=0) > 0]
    ref, cur = smoothed_shares(both[0]), smoothed_shares(both[1])
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def chi2_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    """p-value of the chi-square test that both counts come from one distribution (bins
    empty on both sides dropped; 1.0 when fewer than two bins are left)."""
    from scipy.stats import chi2_contingency

    table = np.vstack([reference, current])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(chi2_contingency(table).pvalue)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of one feature, binned by the reference's quantiles."""
    edges = bin_edges(reference, bins)
    return psi_of_counts(binned_counts(reference, edges), binned_counts(current, edges))


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (scipy's `ks_2samp`)."""
    from scipy.stats import ks_2samp

    found = ks_2samp(np.asarray(reference, np.float64), np.asarray(current, np.float64))
    statistic, pvalue = float(found.statistic), float(found.pvalue)
    return (0.0, 1.0) if np.isnan(statistic) else (statistic, pvalue)


@dataclass(frozen=True)
class FeatureDrift:
    """One feature: PSI (and its chi-square p-value), KS statistic and p-value, and the
    tests that flagged it (`psi`, `ks`)."""

    name: str
    psi: float
    psi_pvalue: float
    ks_statistic: float
    ks_pvalue: float
    flagged_by: list[str] = field(default_factory=list)
    # a categorical column's: the current share of categories training never saw
    unseen_share: float | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.flagged_by)


@dataclass(frozen=True)
class PredictionShift:
    """How the model's outputs moved: PSI over predicted classes (with each class's share)
    or over binned predicted values (with summary statistics)."""

    kind: str  # "classes" or "values"
    psi: float
    pvalue: float
    reference: dict[str, float]
    current: dict[str, float]
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """Every feature (highest PSI first), the prediction shift and the verdict."""

    features: list[FeatureDrift]
    prediction: PredictionShift | None
    drifted_share: float
    drift: bool
    reasons: list[str]
    pvalue_per_feature: float

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def as_dict(self) -> dict[str, Any]:
        """Plain values for `--json`."""
        found = asdict(self)
        for row, feature in zip(found["features"], self.features, strict=True):
            row["drifted"] = feature.drifted
        found["drifted_features"] = self.drifted_features
        return found


def feature_drift(
    names: Sequence[str],
    reference: np.ndarray,
    current: np.ndarray,
    params: DriftParams,
    categorical: Mapping[str, int] | None = None,
) -> tuple[list[FeatureDrift], float]:
    """PSI and KS of each column, highest PSI first, and the p-value threshold each
    feature's tests were held to (`pvalue`, divided by the features under `bonferroni`).
    A `categorical` column (its values category indices, 0 unseen, below its size) is
    compared by PSI over its categories with the chi-square test, and reports the current
    share of unseen categories."""
    alpha = params.pvalue / max(len(names), 1) if params.bonferroni else params.pvalue
    found = []
    for j, name in enumerate(names):
        if categorical and name in categorical:
            found.append(_category_drift(name, reference[:, j], current[:, j],
                                         categorical[name], params, alpha))  # fmt: skip
            continue
        edges = bin_edges(reference[:, j], params.bins)
        ref_counts = binned_counts(reference[:, j], edges)
        cur_counts = binned_counts(current[:, j], edges)
        value, value_p = psi_of_counts(ref_counts, cur_counts), chi2_pvalue(ref_counts, cur_counts)
        statistic, pvalue = ks(reference[:, j], current[:, j])
        flagged = []
        if value > params.psi and value_p < alpha:
            flagged.append("psi")
        if statistic >= params.ks_statistic and pvalue < alpha:
            flagged.append("ks")
        found.append(FeatureDrift(name, value, value_p, statistic, pvalue, flagged))
    return sorted(found, key=lambda f: (-f.psi, f.name)), alpha


def _category_drift(
    name: str, reference: np.ndarray, current: np.ndarray, size: int, params: DriftParams,
    alpha: float,
) -> FeatureDrift:  # fmt: skip
    ref = np.bincount(reference.astype(np.int64), minlength=size)
    cur = np.bincount(current.astype(np.int64), minlength=size)
    value, value_p = psi_of_counts(ref, cur), chi2_pvalue(ref, cur)
    flagged = ["psi"] if value > params.psi and value_p < alpha else []
    unseen = float(cur[0] / max(cur.sum(), 1))
    return FeatureDrift(name, value, value_p, 0.0, 1.0, flagged, unseen)


def class_shift(
    reference: np.ndarray, current: np.ndarray, labels: Sequence[Any], params: DriftParams
) -> PredictionShift:
    """Shift of predicted class indices (0..len(labels)-1): PSI over the classes."""
    k = len(labels)
    ref_counts = np.bincount(np.asarray(reference, np.int64), minlength=k)
    cur_counts = np.bincount(np.asarray(current, np.int64), minlength=k)
    value, pvalue = psi_of_counts(ref_counts, cur_counts), chi2_pvalue(ref_counts, cur_counts)
    ref_share, cur_share = _class_shares(labels, ref_counts), _class_shares(labels, cur_counts)
    drifted = value > params.prediction_psi and pvalue < params.pvalue
    return PredictionShift("classes", value, pvalue, ref_share, cur_share, drifted)


def _class_shares(labels: Sequence[Any], counts: np.ndarray) -> dict[str, float]:
    total = max(int(counts.sum()), 1)
    return {str(c): n / total for c, n in zip(labels, counts.tolist(), strict=True)}


def _summary(values: np.ndarray) -> dict[str, float]:
    p10, p50, p90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {"mean": float(values.mean()), "std": float(values.std()),
            "p10": float(p10), "p50": float(p50), "p90": float(p90)}  # fmt: skip


def value_shift(reference: np.ndarray, current: np.ndarray, params: DriftParams) -> PredictionShift:
    """Shift of predicted values (regression): PSI over the reference's quantile bins."""
    ref, cur = np.asarray(reference, np.float64), np.asarray(current, np.float64)
    edges = bin_edges(ref, params.bins)
    ref_counts, cur_counts = binned_counts(ref, edges), binned_counts(cur, edges)
    value, pvalue = psi_of_counts(ref_counts, cur_counts), chi2_pvalue(ref_counts, cur_counts)
    drifted = value > params.prediction_psi and pvalue < params.pvalue
    return PredictionShift("values", value, pvalue, _summary(ref), _summary(cur), drifted)


def assess(
    names: Sequence[str],
    reference: np.ndarray,
    current: np.ndarray,
    params: DriftParams,
    prediction: PredictionShift | None = None,
    categorical: Mapping[str, int] | None = None,
) -> DriftReport:
    """The verdict: drift when more than `max_drifted_share` of the features drifted, or
    the predictions shifted by more than `prediction_psi`."""
    features, alpha = feature_drift(names, reference, current, params, categorical)
    drifted = [f.name for f in features if f.drifted]
    share = len(drifted) / len(features) if features else 0.0
    reasons = []
    if drifted and share > params.max_drifted_share:
        more = f" and {len(drifted) - 5} more" if len(drifted) > 5 else ""
        reasons.append(
            f"{len(drifted)} of {len(features)} features drifted "
            f"({share:.0%} > {params.max_drifted_share:.0%}): {', '.join(drifted[:5])}{more}"
        )
    if prediction is not None and prediction.drifted:
        reasons.append(
            f"predicted {prediction.kind} shifted: PSI {prediction.psi:.3f} > "
            f"{params.prediction_psi:g}"
        )
    return DriftReport(features, prediction, share, bool(reasons), reasons, alpha)

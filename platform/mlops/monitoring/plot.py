"""The drift PNG (matplotlib, Agg): PSI of every feature against its threshold, the
predictions' shift, and reference-vs-current histograms of the features that moved most;
and the live performance PNG (trend and confusion)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.io import write_with

if TYPE_CHECKING:
    from mlops.monitoring.drift import DriftReport
    from mlops.monitoring.performance import Performance

_PNG_METADATA = {"Software": None}
TOP_FEATURES = 6
PSI_BARS = 30


def drift_png(
    report: DriftReport,
    names: list[str],
    reference: np.ndarray,
    current: np.ndarray,
    psi_threshold: float,
    title: str,
    path: str | Path,
) -> None:
    """Write the plot to `path` (atomically; the same inputs give the same bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 9))
    grid = fig.add_gridspec(3, 3, height_ratios=[1.2, 1, 1])
    _psi_bars(fig.add_subplot(grid[0, :2]), report, psi_threshold)
    _prediction(fig.add_subplot(grid[0, 2]), report)
    column = {name: j for j, name in enumerate(names)}
    for k, feature in enumerate(report.features[:TOP_FEATURES]):
        ax = fig.add_subplot(grid[1 + k // 3, k % 3])
        j = column[feature.name]
        _histograms(ax, reference[:, j], current[:, j])
        mark = " (drifted)" if feature.drifted else ""
        ax.set_title(f"{feature.name}: PSI {feature.psi:.2f}{mark}", fontsize=9)
    verdict = "DRIFT" if report.drift else "no drift"
    fig.suptitle(f"{title}: {verdict}", fontsize=12)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90, metadata=_PNG_METADATA))
    plt.close(fig)


def _psi_bars(ax: Any, report: DriftReport, threshold: float) -> None:
    shown = report.features[:PSI_BARS]
    colors = ["tab:red" if f.drifted else "tab:blue" for f in shown]
    ax.bar(range(len(shown)), [f.psi for f in shown], color=colors)
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"psi {threshold:g}")
    ax.set_xticks(range(len(shown)), [f.name for f in shown], rotation=90, fontsize=7)
    ax.set_ylabel("PSI")
    total = len(report.features)
    more = f" (top {len(shown)} of {total})" if total > len(shown) else ""
    ax.set_title(f"PSI per feature{more}; red: drifted", fontsize=10)
    ax.legend(fontsize=8)


def _prediction(ax: Any, report: DriftReport) -> None:
    shift = report.prediction
    if shift is None:
        ax.axis("off")
        return
    keys = list(shift.reference)
    if shift.kind == "classes":
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], [shift.reference[k] for k in keys], 0.4, label="reference")
        ax.bar([x + 0.2 for x in xs], [shift.current[k] for k in keys], 0.4, label="current")
        ax.set_xticks(list(xs), keys, fontsize=7)
        ax.set_ylabel("share of predictions")
    else:
        keys = [k for k in keys if k != "std"]
        ax.plot(keys, [shift.reference[k] for k in keys], "o-", label="reference")
        ax.plot(keys, [shift.current[k] for k in keys], "o-", label="current")
    ax.set_title(f"predicted {shift.kind}: PSI {shift.psi:.2f}", fontsize=10)
    ax.legend(fontsize=8)


def _histograms(ax: Any, reference: np.ndarray, current: np.ndarray) -> None:
    low = float(min(reference.min(), current.min()))
    high = float(max(reference.max(), current.max()))
    edges = np.linspace(low, high if high > low else low + 1.0, 21)
    for values, label in ((reference, "reference"), (current, "current")):
        weights = np.full(len(values), 1.0 / max(len(values), 1))
        ax.hist(values, bins=edges, weights=weights, alpha=0.5, label=label)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)


def performance_png(found: Performance, path: str | Path) -> None:
    """The live performance plot: the trend (accuracy with its 95% interval, or RMSE)
    over the shares of labelled answers, and the confusion matrix of a classifier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.array(found.confusion) if found.confusion else None
    fig, axes = plt.subplots(1, 2 if confusion is not None else 1, figsize=(12, 5),
                             squeeze=False)  # fmt: skip
    ax = axes[0][0]
    x = np.arange(len(found.trend))
    values = [w.value for w in found.trend]
    ax.plot(x, values, marker="o", color="tab:blue")
    if found.task != "regression":
        low = [w.low if w.low is not None else w.value for w in found.trend]
        high = [w.high if w.high is not None else w.value for w in found.trend]
        ax.fill_between(x, low, high, color="tab:blue", alpha=0.2, label="95% interval")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xticks(x, [f"{w.start[5:16]}\n{w.labelled} rows" for w in found.trend], fontsize=7)
    ax.set_ylabel("RMSE" if found.task == "regression" else "accuracy")
    ax.set_title("Trend over the labelled answers (oldest first)", fontsize=10)
    if confusion is not None:
        cm = axes[0][1]
        cm.imshow(confusion, cmap="Blues")
        names = [str(c) for c in found.classes]
        cm.set_xticks(range(len(names)), names, fontsize=7)
        cm.set_yticks(range(len(names)), names, fontsize=7)
        cm.set_xlabel("predicted")
        cm.set_ylabel("label")
        for (i, j), n in np.ndenumerate(confusion):
            if n:
                cm.text(j, i, str(n), ha="center", va="center", fontsize=7)
        cm.set_title("Confusion", fontsize=10)
    key = "rmse" if found.task == "regression" else "accuracy"
    fig.suptitle(f"{found.model} v{found.version}: live {key} "
                 f"{found.metrics.get(key, float('nan')):.4f} on {found.labelled} labels",
                 fontsize=12)  # fmt: skip
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90, metadata=_PNG_METADATA))
    plt.close(fig)

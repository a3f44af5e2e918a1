"""Live evidence: two versions of a model compared on the rows they both answered in
production (`mlops serve --shadow … --feedback`: the primary's answers and its shadow's
scores of the same rows, with the labels sent to `/feedback`), read from the serving
sink by `mlops.live`. How often they agree on every pair; on the labelled pairs, each
one's accuracy and McNemar's exact test. `mlops registry compare --live` shows it, and
the gate `require_live` demands it before a promotion."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlops.errors import UserError
from mlops.live import default_sink, paired
from mlops.settings import Settings
from registry import stats


@dataclass(frozen=True)
class LiveEvidence:
    """`baseline` and `candidate` on the same live rows (see the module docstring)."""

    baseline: int
    candidate: int
    sink: str
    pairs: int
    agreement: float | None
    labelled_pairs: int
    baseline_accuracy: float | None
    candidate_accuracy: float | None
    only_baseline_right: int
    only_candidate_right: int
    mcnemar_p: float

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON and the ledger)."""
        return asdict(self)


def live_evidence(
    settings: Settings, model: str, baseline: int, candidate: int, sink: Path | None = None
) -> LiveEvidence | None:
    """The live comparison of two versions, or None when there is no sink to read."""
    path = sink if sink is None or sink.is_absolute() else settings.root / sink
    path = path or default_sink(settings, model)
    if not path.is_file():
        return None
    try:
        found = paired(path, model, baseline, candidate)
    except sqlite3.Error as exc:
        raise UserError(f"{path}: cannot read the serving sink: {exc}") from None
    n = len(found)
    agree = sum(a == b for a, b in zip(found.a, found.b, strict=True))
    scored = [(a, b, y) for a, b, y in zip(found.a, found.b, found.labels, strict=True)
              if y is not None]  # fmt: skip
    base_right = np.array([a == y for a, _, y in scored], dtype=bool)
    cand_right = np.array([b == y for _, b, y in scored], dtype=bool)
    test = stats.mcnemar(base_right, cand_right)
    m = len(scored)
    return LiveEvidence(
        baseline, candidate, str(path), n, agree / n if n else None, m,
        float(base_right.mean()) if m else None, float(cand_right.mean()) if m else None,
        test.a_only, test.b_only, test.p_value,
    )  # fmt: skip


def describe(found: LiveEvidence | None) -> str:
    """One line for people."""
    if found is None:
        return "no serving sink: serve with --shadow (or --canary) and --feedback"
    if not found.pairs:
        return (
            f"no rows answered by both v{found.baseline} and v{found.candidate} in "
            f"{found.sink} (serve one with the other as --shadow)"
        )
    line = f"{found.pairs} live pairs, agreement {found.agreement:.1%}"
    if not found.labelled_pairs:
        return line + "; none labelled yet"
    acc = (found.baseline_accuracy or math.nan, found.candidate_accuracy or math.nan)
    return (
        f"{line}; {found.labelled_pairs} labelled: v{found.baseline} {acc[0]:.4f} vs "
        f"v{found.candidate} {acc[1]:.4f} (only v{found.baseline} right "
        f"{found.only_baseline_right}, only v{found.candidate} right "
        f"{found.only_candidate_right}; McNemar p {found.mcnemar_p:.3g})"
    )

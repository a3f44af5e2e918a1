"""Promotion gates: from evidence (plain values) to a verdict, each gate with its value,
threshold and pass/fail. Pure: the service gathers the evidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mlops.params import HIGHER_IS_BETTER, GateParams, LiveGateParams


@dataclass(frozen=True)
class Evidence:
    """What is known about one version at promotion time."""

    version: int
    metrics: dict[str, float] = field(default_factory=dict)
    signature: str | None = None
    recorded_sha256: str = ""
    actual_sha256: str = ""
    recorded_artifact_sha256: str = ""
    actual_artifact_sha256: str = ""
    size_mb: float | None = None
    latency_ms: float | None = None
    exports: dict[str, str] = field(default_factory=dict)  # passing export → its format
    live: dict[str, Any] | None = None  # registry.live.LiveEvidence beside the holder


@dataclass(frozen=True)
class GateResult:
    """One gate: what was measured, against what, and whether it passed."""

    gate: str
    value: str
    threshold: str
    passed: bool


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _threshold(metric: str, minimum: float, metrics: dict[str, float]) -> GateResult:
    value = metrics.get(metric)
    higher = HIGHER_IS_BETTER[metric]
    passed = value is not None and (value >= minimum if higher else value <= minimum)
    return GateResult(
        f"metric {metric}", _fmt(value), f"{'≥' if higher else '≤'} {minimum:g}", passed
    )


def _beat(primary: str, delta: float, cand: Evidence, holder: Evidence | None) -> GateResult:
    gate = f"beats holder on {primary}"
    if holder is None:
        return GateResult(gate, "no current holder", f"by ≥ {delta:g}", True)
    mine, theirs = cand.metrics.get(primary), holder.metrics.get(primary)
    if mine is None or theirs is None:
        return GateResult(gate, "n/a", f"by ≥ {delta:g}", False)
    gain = mine - theirs if HIGHER_IS_BETTER[primary] else theirs - mine
    value = f"{gain:+.6g} vs v{holder.version} ({_fmt(mine)} vs {_fmt(theirs)})"
    # A tolerance far below any metric's resolution: 0.11 - 0.10 must count as 0.01.
    return GateResult(gate, value, f"by ≥ {delta:g}", gain >= delta - 1e-9)


def _live(want: LiveGateParams, cand: Evidence, holder: Evidence | None) -> GateResult:
    """Right more often than the holder on labelled live pairs, significantly."""
    gate = "live evidence"
    threshold = (
        f"≥ {want.min_labelled_pairs} labelled pairs, right more often, McNemar p ≤ "
        f"{want.max_p_value:g}"
    )
    if holder is None:
        return GateResult(gate, "no current holder", threshold, True)
    live = cand.live or {}
    if not live.get("sink"):
        return GateResult(gate, "no serving sink with live answers", threshold, False)
    pairs, gained = (
        live["labelled_pairs"],
        live["only_candidate_right"] - live["only_baseline_right"],
    )
    p_value = live["mcnemar_p"]
    value = (
        f"{pairs} labelled pairs vs v{holder.version}: {_fmt(live['candidate_accuracy'])} vs "
        f"{_fmt(live['baseline_accuracy'])}, McNemar p {p_value:.3g}"
    )
    ok = pairs >= want.min_labelled_pairs and gained > 0 and p_value <= want.max_p_value
    return GateResult(gate, value, threshold, ok)


def evaluate(
    gate: GateParams,
    primary: str,
    candidate: Evidence,
    holder: Evidence | None,
    rollback: bool = False,
) -> list[GateResult]:
    """Every configured gate for `candidate` entering a stage that `holder` holds now.

    On a rollback the "beats the holder" gate is not applied: the holder is the
    version being rolled back, usually because it misbehaves where tests did not look.
    """
    results: list[GateResult] = []
    if gate.integrity:
        weights_ok = bool(candidate.recorded_sha256) and (
            candidate.actual_sha256 == candidate.recorded_sha256
        )
        files_ok = bool(candidate.recorded_artifact_sha256) and (
            candidate.actual_artifact_sha256 == candidate.recorded_artifact_sha256
        )
        value = (
            f"weights {candidate.actual_sha256[:12] or 'missing'}, "
            f"files {'match' if files_ok else 'differ'}"
        )
        results.append(
            GateResult(
                "artifact integrity",
                value,
                f"= {candidate.recorded_sha256[:12] or 'n/a'} (recorded)",
                weights_ok and files_ok,
            )
        )
    for metric, minimum in sorted(gate.thresholds.items()):
        results.append(_threshold(metric, minimum, candidate.metrics))
    if gate.beat_holder_by is not None and not rollback:
        results.append(_beat(primary, gate.beat_holder_by, candidate, holder))
    if gate.signature and holder is not None:
        same = candidate.signature == holder.signature
        results.append(
            GateResult("signature", "same" if same else "differs", f"= v{holder.version}'s", same)
        )
    if gate.max_size_mb is not None:
        ok = candidate.size_mb is not None and candidate.size_mb <= gate.max_size_mb
        results.append(
            GateResult("size MB", _fmt(candidate.size_mb), f"≤ {gate.max_size_mb:g}", ok)
        )
    if gate.max_latency_ms is not None:
        ok = candidate.latency_ms is not None and candidate.latency_ms <= gate.max_latency_ms
        results.append(
            GateResult(
                "p50 latency ms", _fmt(candidate.latency_ms), f"≤ {gate.max_latency_ms:g}", ok
            )
        )
    if gate.require_live is not None and not rollback:
        results.append(_live(gate.require_live, candidate, holder))
    if gate.require_export is not None:
        fmt = gate.require_export
        ok = fmt in candidate.exports.values()
        found = ", ".join(sorted(candidate.exports)) or "none"
        results.append(GateResult("export", found, f"a passing {fmt} export", ok))
    return results


def passed(results: list[GateResult]) -> bool:
    """True when every gate passed (no gates: passed)."""
    return all(r.passed for r in results)


def as_evidence(results: list[GateResult]) -> list[dict[str, Any]]:
    """Gate results as plain dicts for the ledger and tags."""
    return [asdict(r) for r in results]

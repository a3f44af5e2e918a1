"""Promotion gates: evidence in, one result per configured gate out."""

from __future__ import annotations

import json

import pytest

from mlops.params import GateParams
from registry.gates import Evidence, GateResult, as_evidence, evaluate, passed

SHA = "a" * 64
FILES = "f" * 64
SIG = '{"inputs": "[64 floats]"}'

# Only the gate under test: integrity and signature are on by default.
BARE = {"integrity": False, "signature": False}


def _ev(version: int = 2, **kwargs: object) -> Evidence:
    base: dict[str, object] = {
        "recorded_sha256": SHA,
        "actual_sha256": SHA,
        "recorded_artifact_sha256": FILES,
        "actual_artifact_sha256": FILES,
        "signature": SIG,
    }
    base.update(kwargs)
    return Evidence(version, **base)  # type: ignore[arg-type]


def _one(results: list[GateResult], gate: str) -> GateResult:
    found = [r for r in results if r.gate == gate]
    assert len(found) == 1, results
    return found[0]


# --- no gates -----------------------------------------------------------------------------


def test_no_gates_configured() -> None:
    results = evaluate(GateParams(**BARE), "accuracy", _ev(), None)
    assert results == []
    assert passed(results)
    assert as_evidence(results) == []


# --- integrity ----------------------------------------------------------------------------


def test_integrity_passes_when_both_match() -> None:
    results = evaluate(GateParams(signature=False), "accuracy", _ev(), None)
    assert results == [
        GateResult(
            "artifact integrity",
            "weights aaaaaaaaaaaa, files match",
            "= aaaaaaaaaaaa (recorded)",
            True,
        )
    ]
    assert passed(results)


@pytest.mark.parametrize(
    ("changes", "value"),
    [
        pytest.param(
            {"actual_sha256": "b" * 64}, "weights bbbbbbbbbbbb, files match", id="weights"
        ),
        pytest.param(
            {"actual_artifact_sha256": "e" * 64}, "weights aaaaaaaaaaaa, files differ", id="files"
        ),
        pytest.param(
            {"actual_sha256": "b" * 64, "actual_artifact_sha256": "e" * 64},
            "weights bbbbbbbbbbbb, files differ",
            id="both",
        ),
        pytest.param({"actual_sha256": ""}, "weights missing, files match", id="weights-missing"),
        pytest.param(
            {"recorded_artifact_sha256": "", "actual_artifact_sha256": ""},
            "weights aaaaaaaaaaaa, files differ",
            id="no-recorded-manifest",
        ),
    ],
)
def test_integrity_fails(changes: dict[str, str], value: str) -> None:
    result = _one(
        evaluate(GateParams(signature=False), "accuracy", _ev(**changes), None),
        "artifact integrity",
    )
    assert result.value == value
    assert not result.passed


def test_integrity_fails_without_a_recorded_sha_even_if_actual_is_empty_too() -> None:
    cand = _ev(recorded_sha256="", actual_sha256="")
    result = _one(
        evaluate(GateParams(signature=False), "accuracy", cand, None), "artifact integrity"
    )
    assert not result.passed
    assert result.threshold == "= n/a (recorded)"
    assert result.value.startswith("weights missing")


def test_integrity_can_be_turned_off() -> None:
    cand = _ev(actual_sha256="b" * 64)
    results = evaluate(GateParams(**BARE), "accuracy", cand, None)
    assert all(r.gate != "artifact integrity" for r in results)
    assert passed(results)


# --- thresholds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "minimum", "value", "ok", "threshold"),
    [
        ("accuracy", 0.9, 0.95, True, "≥ 0.9"),
        ("accuracy", 0.9, 0.9, True, "≥ 0.9"),
        ("accuracy", 0.9, 0.89, False, "≥ 0.9"),
        ("r2", 0.5, 0.7, True, "≥ 0.5"),
        ("f1_macro", 0.8, 0.2, False, "≥ 0.8"),
        ("log_loss", 0.3, 0.2, True, "≤ 0.3"),
        ("log_loss", 0.3, 0.3, True, "≤ 0.3"),
        ("log_loss", 0.3, 0.31, False, "≤ 0.3"),
        ("rmse", 1.5, 1.2, True, "≤ 1.5"),
        ("rmse", 1.5, 2.0, False, "≤ 1.5"),
        ("mae", 0.1, 0.5, False, "≤ 0.1"),
    ],
)
def test_threshold(metric: str, minimum: float, value: float, ok: bool, threshold: str) -> None:
    gate = GateParams(thresholds={metric: minimum}, **BARE)
    results = evaluate(gate, "accuracy", _ev(metrics={metric: value}), None)
    assert len(results) == 1
    result = results[0]
    assert result.gate == f"metric {metric}"
    assert result.threshold == threshold
    assert result.value == f"{value:.6g}"
    assert result.passed is ok
    assert passed(results) is ok


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "rmse"])
def test_missing_metric_fails(metric: str) -> None:
    gate = GateParams(thresholds={metric: 0.5}, **BARE)
    result = evaluate(gate, "accuracy", _ev(metrics={"f1_macro": 0.99}), None)[0]
    assert result.value == "n/a"
    assert not result.passed


def test_thresholds_are_sorted_and_each_reported() -> None:
    gate = GateParams(thresholds={"log_loss": 0.5, "accuracy": 0.9, "f1_macro": 0.9}, **BARE)
    cand = _ev(metrics={"accuracy": 0.95, "log_loss": 0.7, "f1_macro": 0.91})
    results = evaluate(gate, "accuracy", cand, None)
    assert [r.gate for r in results] == ["metric accuracy", "metric f1_macro", "metric log_loss"]
    assert [r.passed for r in results] == [True, True, False]
    assert not passed(results)


# --- beat the holder ----------------------------------------------------------------------


def test_beat_without_holder_passes() -> None:
    gate = GateParams(beat_holder_by=0.05, **BARE)
    result = evaluate(gate, "accuracy", _ev(metrics={"accuracy": 0.1}), None)[0]
    assert result == GateResult("beats holder on accuracy", "no current holder", "by ≥ 0.05", True)


@pytest.mark.parametrize(
    ("mine", "theirs", "by", "ok"),
    [
        (0.96, 0.90, 0.05, True),
        (0.96, 0.90, 0.07, False),
        (0.90, 0.90, 0.0, True),
        (0.89, 0.90, 0.0, False),
    ],
)
def test_beat_holder_higher_is_better(mine: float, theirs: float, by: float, ok: bool) -> None:
    gate = GateParams(beat_holder_by=by, **BARE)
    cand = _ev(2, metrics={"accuracy": mine})
    holder = _ev(1, metrics={"accuracy": theirs})
    result = evaluate(gate, "accuracy", cand, holder)[0]
    assert result.gate == "beats holder on accuracy"
    assert result.passed is ok
    assert result.value == f"{mine - theirs:+.6g} vs v1 ({mine:.6g} vs {theirs:.6g})"
    assert result.threshold == f"by ≥ {by:g}"


@pytest.mark.parametrize(
    ("mine", "theirs", "ok"),
    [
        (0.8, 1.0, True),  # lower error: better
        (1.2, 1.0, False),  # higher error: worse
    ],
)
def test_beat_holder_lower_is_better(mine: float, theirs: float, ok: bool) -> None:
    gate = GateParams(beat_holder_by=0.1, **BARE)
    cand = _ev(5, metrics={"rmse": mine})
    holder = _ev(3, metrics={"rmse": theirs})
    result = evaluate(gate, "rmse", cand, holder)[0]
    assert result.gate == "beats holder on rmse"
    assert result.passed is ok
    gain = theirs - mine
    assert result.value.startswith(f"{gain:+.6g} vs v3 ")


def test_beat_holder_log_loss_sign() -> None:
    gate = GateParams(beat_holder_by=0.0, **BARE)
    cand = _ev(2, metrics={"log_loss": 0.25})
    holder = _ev(1, metrics={"log_loss": 0.5})
    result = evaluate(gate, "log_loss", cand, holder)[0]
    assert result.passed
    assert result.value == "+0.25 vs v1 (0.25 vs 0.5)"


@pytest.mark.parametrize(
    ("cand_metrics", "holder_metrics"),
    [({}, {"accuracy": 0.5}), ({"accuracy": 0.99}, {}), ({}, {})],
)
def test_beat_holder_missing_primary_fails(
    cand_metrics: dict[str, float], holder_metrics: dict[str, float]
) -> None:
    gate = GateParams(beat_holder_by=0.0, **BARE)
    result = evaluate(
        gate, "accuracy", _ev(2, metrics=cand_metrics), _ev(1, metrics=holder_metrics)
    )[0]
    assert result.value == "n/a"
    assert not result.passed


def test_rollback_skips_beat_holder() -> None:
    gate = GateParams(beat_holder_by=0.0, **BARE)
    cand = _ev(1, metrics={"accuracy": 0.5})
    holder = _ev(2, metrics={"accuracy": 0.99})
    assert not passed(evaluate(gate, "accuracy", cand, holder))
    results = evaluate(gate, "accuracy", cand, holder, rollback=True)
    assert results == []
    assert passed(results)


def test_rollback_keeps_other_gates() -> None:
    gate = GateParams(thresholds={"accuracy": 0.9}, beat_holder_by=0.0)
    cand = _ev(1, metrics={"accuracy": 0.5}, actual_sha256="c" * 64, signature="other")
    holder = _ev(2, metrics={"accuracy": 0.99})
    results = evaluate(gate, "accuracy", cand, holder, rollback=True)
    assert [r.gate for r in results] == ["artifact integrity", "metric accuracy", "signature"]
    assert [r.passed for r in results] == [False, False, False]


# --- signature ----------------------------------------------------------------------------


def test_signature_same() -> None:
    gate = GateParams(integrity=False)
    result = evaluate(gate, "accuracy", _ev(2), _ev(1))[0]
    assert result == GateResult("signature", "same", "= v1's", True)


def test_signature_differs() -> None:
    gate = GateParams(integrity=False)
    other = json.dumps({"inputs": "[32 floats]"})
    result = evaluate(gate, "accuracy", _ev(2, signature=other), _ev(7))[0]
    assert result == GateResult("signature", "differs", "= v7's", False)


def test_signature_missing_on_one_side_differs() -> None:
    gate = GateParams(integrity=False)
    result = evaluate(gate, "accuracy", _ev(2, signature=None), _ev(1))[0]
    assert not result.passed


def test_signature_without_holder_is_not_checked() -> None:
    gate = GateParams(integrity=False)
    assert evaluate(gate, "accuracy", _ev(2, signature="anything"), None) == []


def test_signature_gate_off() -> None:
    gate = GateParams(**BARE)
    assert evaluate(gate, "accuracy", _ev(2, signature="x"), _ev(1)) == []


# --- size and latency ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "ok", "value"),
    [(1.5, True, "1.5"), (2.0, True, "2"), (2.5, False, "2.5"), (None, False, "n/a")],
)
def test_size_limit(size: float | None, ok: bool, value: str) -> None:
    gate = GateParams(max_size_mb=2, **BARE)
    result = evaluate(gate, "accuracy", _ev(size_mb=size), None)[0]
    assert result == GateResult("size MB", value, "≤ 2", ok)


@pytest.mark.parametrize(
    ("latency", "ok", "value"),
    [(0.25, True, "0.25"), (0.5, True, "0.5"), (3.0, False, "3"), (None, False, "n/a")],
)
def test_latency_limit(latency: float | None, ok: bool, value: str) -> None:
    gate = GateParams(max_latency_ms=0.5, **BARE)
    result = evaluate(gate, "accuracy", _ev(latency_ms=latency), None)[0]
    assert result == GateResult("p50 latency ms", value, "≤ 0.5", ok)


# --- all together -------------------------------------------------------------------------


def test_full_gate_order_and_verdict() -> None:
    gate = GateParams(
        thresholds={"accuracy": 0.9},
        beat_holder_by=0.01,
        max_size_mb=5,
        max_latency_ms=1,
    )
    cand = _ev(3, metrics={"accuracy": 0.97}, size_mb=1.0, latency_ms=0.2)
    holder = _ev(2, metrics={"accuracy": 0.93})
    results = evaluate(gate, "accuracy", cand, holder)
    assert [r.gate for r in results] == [
        "artifact integrity",
        "metric accuracy",
        "beats holder on accuracy",
        "signature",
        "size MB",
        "p50 latency ms",
    ]
    assert passed(results)

    slow = _ev(3, metrics={"accuracy": 0.97}, size_mb=1.0, latency_ms=2.0)
    results = evaluate(gate, "accuracy", slow, holder)
    assert [r.passed for r in results] == [True, True, True, True, True, False]
    assert not passed(results)


def test_as_evidence_is_plain_dicts() -> None:
    gate = GateParams(thresholds={"rmse": 1.0}, **BARE)
    results = evaluate(gate, "rmse", _ev(metrics={"rmse": 2.0}), None)
    evidence = as_evidence(results)
    assert evidence == [{"gate": "metric rmse", "value": "2", "threshold": "≤ 1", "passed": False}]
    assert json.loads(json.dumps(evidence)) == evidence


def test_passed_needs_every_gate() -> None:
    ok = GateResult("a", "1", "≥ 0", True)
    bad = GateResult("b", "0", "≥ 1", False)
    assert passed([ok, ok])
    assert not passed([ok, bad])
    assert not passed([bad])

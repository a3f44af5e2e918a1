"""Comparison tables (rows and Markdown) and the significance verdict of `compare`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from registry.compare import significance, verdict
from registry.evaluation import Scored
from registry.gates import Evidence
from registry.render import comparison_markdown, comparison_rows

# --- hand-made `compare` results --------------------------------------------------------


def _column(version: int, ref: str, stage: str, **over: Any) -> dict[str, Any]:
    column: dict[str, Any] = {
        "version": version,
        "ref": ref,
        "stage": stage,
        "logged": {"accuracy": 0.9, "log_loss": 0.3},
        "now": {"accuracy": 0.9, "log_loss": 0.3, "n_samples": 120.0},
        "git_commit": "0123456789abcdef0123",
        "data_md5": {"raw": "fedcba9876543210fedc", "split": "11112222333344445555"},
        "family": "mlp",
        "parameters": 1234,
        "size_mb": 0.05,
        "latency_ms": 0.123456,
        "sha256": "a" * 64,
    }
    column.update(over)
    return column


def _result(**over: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "model": "digits",
        "primary_metric": "accuracy",
        "test_split_md5": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "n_test_rows": 120,
        "versions": [
            _column(1, "1", "production"),
            _column(
                2,
                "@staging",
                "staging",
                logged={"accuracy": 0.95, "log_loss": 0.2},
                now={"accuracy": 0.96, "log_loss": 0.19, "n_samples": 120.0},
                git_commit=None,
                data_md5={"raw": "fedcba9876543210fedc"},
                family="cnn",
                parameters=5678,
                size_mb=0.25,
                latency_ms=None,
            ),
        ],
        "params_diff": {"train.epochs": [10, 20], "train.model.family": ["mlp", "cnn"]},
        "tests": [
            {
                "metric": "accuracy",
                "delta": 0.06,
                "baseline": 1,
                "candidate": 2,
                "verdict": "v2 is significantly better than v1: accuracy +0.0600",
            }
        ],
    }
    result.update(over)
    return result


def _row(rows: list[list[str]], label: str) -> list[str]:
    found = [r for r in rows if r[0] == label]
    assert len(found) == 1, (label, [r[0] for r in rows])
    return found[0][1:]


def test_header_names_versions_and_stage_refs() -> None:
    header, _ = comparison_rows(_result())
    assert header == ["", "v1", "v2 (@staging)"]


def test_rows_have_one_cell_per_version() -> None:
    header, rows = comparison_rows(_result())
    assert rows
    assert all(len(row) == len(header) for row in rows)


def test_rows_in_order() -> None:
    _, rows = comparison_rows(_result())
    assert [r[0] for r in rows] == [
        "stage",
        "accuracy (logged)",
        "accuracy (now, same test split)",
        "log_loss (logged)",
        "log_loss (now, same test split)",
        "family",
        "parameters",
        "size MB",
        "p50 latency ms (1 row)",
        "git commit",
        "data raw md5",
        "data split md5",
        "param train.epochs",
        "param train.model.family",
    ]


def test_rows_values() -> None:
    _, rows = comparison_rows(_result())
    assert _row(rows, "stage") == ["production", "staging"]
    assert _row(rows, "accuracy (logged)") == ["0.9000", "0.9500"]
    assert _row(rows, "accuracy (now, same test split)") == ["0.9000", "0.9600"]
    assert _row(rows, "log_loss (now, same test split)") == ["0.3000", "0.1900"]
    assert _row(rows, "family") == ["mlp", "cnn"]
    assert _row(rows, "parameters") == ["1234", "5678"]
    assert _row(rows, "size MB") == ["0.0500", "0.2500"]
    assert _row(rows, "p50 latency ms (1 row)") == ["0.1235", "—"]
    assert _row(rows, "git commit") == ["0123456789ab", "—"]
    assert _row(rows, "data raw md5") == ["fedcba987654", "fedcba987654"]
    assert _row(rows, "data split md5") == ["111122223333", "—"]
    assert _row(rows, "param train.epochs") == ["10", "20"]
    assert _row(rows, "param train.model.family") == ["mlp", "cnn"]


def test_n_samples_is_not_a_row() -> None:
    _, rows = comparison_rows(_result())
    assert not any("n_samples" in r[0] for r in rows)


def test_metric_known_only_to_one_version() -> None:
    result = _result()
    result["versions"][1]["now"] = {"accuracy": 0.96, "f1_macro": 0.955}
    _, rows = comparison_rows(result)
    assert _row(rows, "f1_macro (now, same test split)") == ["—", "0.9550"]
    assert _row(rows, "f1_macro (logged)") == ["—", "—"]
    # log_loss is still logged for both, and re-evaluated only for v1
    assert _row(rows, "log_loss (now, same test split)") == ["0.3000", "—"]


def test_no_params_diff_means_no_param_rows() -> None:
    _, rows = comparison_rows(_result(params_diff={}))
    assert not any(r[0].startswith("param ") for r in rows)


def test_three_versions() -> None:
    result = _result()
    result["versions"].append(_column(7, "@production", "production"))
    result["params_diff"] = {"train.epochs": [10, 20, "—"]}
    header, rows = comparison_rows(result)
    assert header == ["", "v1", "v2 (@staging)", "v7 (@production)"]
    assert all(len(r) == 4 for r in rows)
    assert _row(rows, "param train.epochs") == ["10", "20", "—"]


# --- Markdown -----------------------------------------------------------------------------


def test_markdown_layout() -> None:
    text = comparison_markdown(_result())
    lines = text.split("\n")
    assert text.endswith("\n")
    assert lines[0] == "### digits: v1 vs v2 (@staging)"
    assert lines[1] == ""
    assert lines[2] == "|  | v1 | v2 (@staging) |"
    assert lines[3] == "|---|---|---|"
    assert lines[4] == "| stage | production | staging |"
    assert "| accuracy (now, same test split) | 0.9000 | 0.9600 |" in lines
    assert "| param train.epochs | 10 | 20 |" in lines
    assert "**Verdict:** v2 is significantly better than v1: accuracy +0.0600" in lines
    assert lines[-2] == (
        "_Re-evaluated on 120 test rows (DVC md5 `0a1b2c3d4e5f60718293a4b5c6d7e8f9`)._"
    )


def test_markdown_table_rows_have_equal_cell_counts() -> None:
    text = comparison_markdown(_result())
    table = [line for line in text.splitlines() if line.startswith("|")]
    _, rows = comparison_rows(_result())
    assert len(table) == len(rows) + 2  # header and separator
    assert {line.count("|") for line in table} == {4}


def test_markdown_one_verdict_per_test() -> None:
    result = _result()
    result["tests"].append({"verdict": "v3 is worse than v1 but not significantly: x"})
    text = comparison_markdown(result)
    verdicts = [line for line in text.splitlines() if line.startswith("**Verdict:**")]
    assert verdicts == [
        "**Verdict:** v2 is significantly better than v1: accuracy +0.0600",
        "**Verdict:** v3 is worse than v1 but not significantly: x",
    ]


def test_markdown_without_tests_has_no_verdict() -> None:
    assert "Verdict" not in comparison_markdown(_result(tests=[]))


# --- verdict --------------------------------------------------------------------------------


def _sig(**over: Any) -> dict[str, Any]:
    sig: dict[str, Any] = {
        "metric": "accuracy",
        "delta": 0.05,
        "ci_low": 0.02,
        "ci_high": 0.08,
        "level": 0.95,
        "mcnemar_p": 0.0012,
        "only_baseline_right": 1,
        "only_candidate_right": 7,
        "significant": True,
        "candidate_better": True,
    }
    sig.update(over)
    return sig


def test_verdict_significantly_better() -> None:
    assert verdict(1, 2, _sig()) == (
        "v2 is significantly better than v1: accuracy +0.0500 "
        "(95% CI +0.0200 … +0.0800, McNemar p=0.0012)"
    )


def test_verdict_significantly_worse() -> None:
    sig = _sig(delta=-0.05, ci_low=-0.08, ci_high=-0.02, candidate_better=False)
    assert verdict(3, 4, sig).startswith("v4 is significantly worse than v3: accuracy -0.0500")


def test_verdict_not_significant() -> None:
    sig = _sig(delta=0.01, ci_low=-0.02, ci_high=0.04, mcnemar_p=0.5, significant=False)
    assert verdict(1, 2, sig) == (
        "v2 is better than v1 but not significantly: accuracy +0.0100 "
        "(95% CI -0.0200 … +0.0400, McNemar p=0.5)"
    )


def test_verdict_same_score() -> None:
    sig = _sig(delta=0.0, ci_low=0.0, ci_high=0.0, mcnemar_p=1.0, significant=False)
    sig["candidate_better"] = False
    assert verdict(1, 2, sig).startswith("v2 and v1 score the same: accuracy +0.0000")


def test_verdict_regression_has_no_mcnemar() -> None:
    sig = _sig(metric="rmse", delta=-0.4, ci_low=-0.5, ci_high=-0.3)
    del sig["mcnemar_p"]
    assert verdict(1, 2, sig) == (
        "v2 is significantly better than v1: rmse -0.4000 (95% CI -0.5000 … -0.3000)"
    )


# --- significance ---------------------------------------------------------------------------

Y = np.array([0, 1, 2] * 40)


def _proba(pred: np.ndarray, k: int = 3) -> np.ndarray:
    out = np.full((len(pred), k), 0.1)
    out[np.arange(len(pred)), pred] = 0.8
    return out


def _scored(version: int, outputs: np.ndarray, task: str = "classification") -> Scored:
    return Scored(Evidence(version), outputs, 100, task, "mlp")


def _wrong(fraction: float) -> np.ndarray:
    pred = Y.copy()
    n = int(len(Y) * fraction)
    pred[:n] = (pred[:n] + 1) % 3
    return pred


def test_significance_classifier_clearly_better() -> None:
    base = _scored(1, _proba(_wrong(0.5)))
    cand = _scored(2, _proba(Y))
    sig = significance("accuracy", Y, base, cand, rounds=200)
    assert sig["metric"] == "accuracy"
    assert sig["delta"] == pytest.approx(0.5)
    assert sig["ci_low"] <= sig["delta"] <= sig["ci_high"]
    assert sig["ci_low"] > 0
    assert sig["level"] == 0.95
    assert sig["only_baseline_right"] == 0
    assert sig["only_candidate_right"] == 60
    assert sig["mcnemar_p"] == pytest.approx(2 * 0.5**60)
    assert sig["significant"] is True
    assert sig["candidate_better"] is True
    assert verdict(1, 2, sig).startswith("v2 is significantly better than v1: accuracy +0.5000")


def test_significance_classifier_clearly_worse() -> None:
    sig = significance(
        "accuracy", Y, _scored(1, _proba(Y)), _scored(2, _proba(_wrong(0.5))), rounds=200
    )
    assert sig["delta"] == pytest.approx(-0.5)
    assert sig["ci_high"] < 0
    assert sig["only_baseline_right"] == 60
    assert sig["only_candidate_right"] == 0
    assert sig["significant"] is True
    assert sig["candidate_better"] is False
    assert "significantly worse" in verdict(1, 2, sig)


def test_significance_identical_models() -> None:
    outputs = _proba(_wrong(0.2))
    sig = significance("accuracy", Y, _scored(1, outputs), _scored(2, outputs.copy()), rounds=100)
    assert sig["delta"] == 0.0
    assert (sig["ci_low"], sig["ci_high"]) == (0.0, 0.0)
    assert sig["mcnemar_p"] == 1.0
    assert sig["significant"] is False
    assert sig["candidate_better"] is False
    assert verdict(1, 2, sig).startswith("v2 and v1 score the same")


def test_significance_small_difference_is_not_significant() -> None:
    # 2 of 120 rows differ: the candidate is better, but not significantly.
    base = _scored(1, _proba(_wrong(2 / 120)))
    cand = _scored(2, _proba(Y))
    sig = significance("accuracy", Y, base, cand, rounds=200)
    assert sig["delta"] == pytest.approx(2 / 120)
    assert sig["mcnemar_p"] == pytest.approx(0.5)
    assert sig["significant"] is False
    assert sig["candidate_better"] is True
    assert verdict(1, 2, sig).startswith("v2 is better than v1 but not significantly")


def test_significance_log_loss_lower_is_better() -> None:
    base = _scored(1, _proba(_wrong(0.5)))
    cand = _scored(2, _proba(Y))
    sig = significance("log_loss", Y, base, cand, rounds=30)
    assert sig["metric"] == "log_loss"
    assert sig["delta"] < 0
    assert sig["ci_high"] < 0
    assert sig["candidate_better"] is True
    assert sig["significant"] is True


def test_significance_regression() -> None:
    y = np.linspace(0.0, 1.0, 50)
    base = _scored(1, y + 0.5, task="regression")
    cand = _scored(2, y + 0.1, task="regression")
    sig = significance("rmse", y, base, cand, rounds=100)
    assert "mcnemar_p" not in sig
    assert "only_candidate_right" not in sig
    assert sig["delta"] == pytest.approx(-0.4)
    assert sig["ci_low"] == pytest.approx(-0.4)
    assert sig["ci_high"] == pytest.approx(-0.4)
    assert sig["significant"] is True
    assert sig["candidate_better"] is True
    assert verdict(1, 2, sig).startswith("v2 is significantly better than v1: rmse -0.4000")


def test_significance_regression_r2_higher_is_better() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=80)
    base = _scored(1, y + rng.normal(scale=1.0, size=80), task="regression")
    cand = _scored(2, y + rng.normal(scale=0.1, size=80), task="regression")
    sig = significance("r2", y, base, cand, rounds=100)
    assert sig["delta"] > 0
    assert sig["candidate_better"] is True
    reverse = significance("r2", y, cand, base, rounds=100)
    assert reverse["delta"] == pytest.approx(-sig["delta"])
    assert reverse["candidate_better"] is False

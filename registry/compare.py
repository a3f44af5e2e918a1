"""Side-by-side comparison of versions: logged metrics, metrics re-evaluated now on the
same test split, params diff, data hashes, git commits, size, parameters, latency,
and the significance of the difference in the primary metric."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlops.errors import UserError
from mlops.metrics import classification_metrics, regression_metrics
from mlops.params import HIGHER_IS_BETTER
from registry import mlflow_port, stats
from registry.context import Context
from registry.db.store import Version
from registry.evaluation import Scored, TestSplit, load_test_split, score
from registry.loading import verify
from registry.promotion import resolve
from registry.queries import lineage_of
from registry.stages import Ref


def _metric_fn(metric: str, n_classes: int) -> stats.Metric:
    if metric == "accuracy":
        return lambda y, p: float((p.argmax(axis=1) == y).mean())
    if metric in ("f1_macro", "log_loss"):
        return lambda y, p: classification_metrics(y, p)[metric]
    return lambda y, p: regression_metrics(y, p)[metric]


def significance(
    metric: str, y: np.ndarray, base: Scored, cand: Scored, rounds: int = 1000
) -> dict[str, Any]:
    """Difference (candidate - baseline) in `metric` on the same rows, its paired
    bootstrap interval and, for classifiers, McNemar's exact test."""
    assert base.outputs is not None and cand.outputs is not None
    fn = _metric_fn(metric, base.outputs.shape[1] if base.outputs.ndim == 2 else 0)
    interval = stats.paired_bootstrap(fn, y, base.outputs, cand.outputs, rounds=rounds)
    result: dict[str, Any] = {
        "metric": metric,
        "delta": interval.delta,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "level": interval.level,
    }
    significant = interval.excludes_zero()
    if base.outputs.ndim == 2:
        test = stats.mcnemar(base.outputs.argmax(axis=1) == y, cand.outputs.argmax(axis=1) == y)
        result |= {
            "mcnemar_p": test.p_value,
            "only_baseline_right": test.a_only,
            "only_candidate_right": test.b_only,
        }
        significant = significant and test.p_value < 0.05
    better = interval.delta > 0 if HIGHER_IS_BETTER[metric] else interval.delta < 0
    result["significant"] = significant
    result["candidate_better"] = better and interval.delta != 0
    return result


def verdict(base: int, cand: int, sig: dict[str, Any]) -> str:
    """One line a reviewer can act on."""
    detail = (
        f"{sig['metric']} {sig['delta']:+.4f} (95% CI {sig['ci_low']:+.4f} … {sig['ci_high']:+.4f}"
    )
    detail += f", McNemar p={sig['mcnemar_p']:.3g})" if "mcnemar_p" in sig else ")"
    if sig["delta"] == 0:
        return f"v{cand} and v{base} score the same: {detail}"
    word = "better" if sig["candidate_better"] else "worse"
    if sig["significant"]:
        return f"v{cand} is significantly {word} than v{base}: {detail}"
    return f"v{cand} is {word} than v{base} but not significantly: {detail}"


def _comparable(versions: list[Version], scored: list[Scored]) -> None:
    """Versions are compared row by row: they must answer the same question (the same task
    and, for classifiers, the same classes in the same order)."""
    base, first = versions[0], scored[0]
    for v, s in zip(versions[1:], scored[1:], strict=True):
        if s.task != first.task or s.classes != first.classes:
            raise UserError(
                f"compare: version {v.version} ({s.task}, classes {s.classes}) and version "
                f"{base.version} ({first.task}, classes {first.classes}) do not predict the "
                "same thing"
            )


def compare(
    ctx: Context, model: str, refs: list[Ref], step: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Compare two or more versions of `model` (the first is the baseline); `step(text)`
    is told each step that takes a while."""
    step = step or (lambda _text: None)
    if len(refs) < 2:
        raise UserError("compare needs at least two versions (e.g. 1 2, or @staging @production)")
    ctx.connect_mlflow()
    versions = [resolve(ctx, model, ref) for ref in refs]
    if len({v.version for v in versions}) != len(versions):
        raise UserError("compare: the same version is named twice")
    step("reading the test split")
    split = load_test_split(ctx.settings.root)
    scored = _score_all(model, versions, split, step)
    _comparable(versions, scored)
    task = scored[0].task
    metric = (
        ctx.primary_metric
        if task == "classification" or ctx.primary_metric in ("rmse", "mae", "r2")
        else "rmse"
    )
    params = [v.info.get("params", {}) for v in versions]
    keys = sorted({k for p in params for k in p})
    diff = {k: [p.get(k, "—") for p in params] for k in keys if len({p.get(k) for p in params}) > 1}
    step("testing the significance of the differences")
    return {
        "model": model,
        "primary_metric": metric,
        "test_split_md5": split.md5,
        "n_test_rows": len(split),
        "versions": [_column(r, v, s) for r, v, s in zip(refs, versions, scored, strict=True)],
        "params_diff": diff,
        "tests": _tests(metric, versions, scored),
    }


def _score_all(
    model: str, versions: list[Version], split: TestSplit, step: Callable[[str], None]
) -> list[Scored]:
    """Download, verify and score each version on the test split."""
    scored: list[Scored] = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in versions:
            step(f"downloading v{v.version}")
            local = mlflow_port.download(model, v.version, Path(tmp, str(v.version)))
            step(f"verifying and evaluating v{v.version}")
            verify(v, local)  # a file that differs: one line naming it
            scored.append(score(v, local, split, latency=True))
    return scored


def _column(ref: Ref, v: Version, s: Scored) -> dict[str, Any]:
    """One version's column: what it logged, what it scores now, where it came from."""
    lin = lineage_of(v)
    return {
        "version": v.version,
        "ref": str(ref),
        "stage": v.stage,
        "logged": {
            k.removeprefix("mlops.metric.test_"): float(val)
            for k, val in v.info.items()
            if k.startswith("mlops.metric.test_")
        },
        "now": s.evidence.metrics,
        "git_commit": lin["git_commit"],
        "data_md5": lin["data_md5"],
        "family": s.family,
        "parameters": s.parameters,
        "size_mb": s.evidence.size_mb,
        "latency_ms": s.evidence.latency_ms,
        "sha256": v.sha256,
    }


def _tests(metric: str, versions: list[Version], scored: list[Scored]) -> list[dict[str, Any]]:
    """Each candidate against the baseline (the first): the test and its verdict."""
    tests = []
    for v, s in zip(versions[1:], scored[1:], strict=True):
        assert scored[0].y is not None
        sig = significance(metric, scored[0].y, scored[0], s)
        sig |= {
            "baseline": versions[0].version,
            "candidate": v.version,
            "verdict": verdict(versions[0].version, v.version, sig),
        }
        tests.append(sig)
    return tests

"""A version's model card: Markdown that the MLflow UI shows as the version's description —
what it is, how it scored, where it came from, and which gates it passed on its way to a
stage. Pure: a version record and its ledger entries in, text out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from registry.db.store import Entry, Version

METRIC_PREFIX = "mlops.metric.test_"
MAX_PARAMS = 16


def _short(value: Any, n: int = 12) -> str:
    text = str(value)
    return f"`{text[:n]}`" if text and text != "unknown" else "unknown"


def _metrics(info: dict[str, Any]) -> list[str]:
    rows = [
        (k.removeprefix(METRIC_PREFIX), v)
        for k, v in sorted(info.items())
        if k.startswith(METRIC_PREFIX) and not k.endswith("n_samples")
    ]
    if not rows:
        return []
    lines = ["| test metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return [*lines, ""]


def _lineage(v: Version) -> list[str]:
    info = v.info
    dirty = info.get("mlops.git_dirty", "unknown")
    state = {"true": " (uncommitted changes)", "false": " (clean)"}.get(str(dirty), "")
    data = [
        f"{k.removeprefix('mlops.data.').removesuffix('.md5')} {_short(val, 8)}"
        for k, val in sorted(info.items())
        if k.startswith("mlops.data.") and k.endswith(".md5")
    ]
    lines = [
        f"- **git commit** {_short(info.get('mlops.git_commit', 'unknown'))}{state}",
        f"- **data (DVC md5)** {', '.join(data) if data else 'not recorded'}",
        f"- **params sha256** {_short(info.get('mlops.params_hash', 'unknown'))}",
        f"- **training run** {_short(info.get('mlops.train_run_id', 'unknown'), 32)}",
    ]
    if "mlops.dvc_exp.name" in info:
        changed = info.get("mlops.dvc_exp.params", "")
        lines.append(
            f"- **DVC experiment** `{info['mlops.dvc_exp.name']}`"
            + (f" ({info['mlops.dvc_exp.ref']})" if info.get("mlops.dvc_exp.ref") else "")
            + (f", params changed from the baseline: `{changed}`" if changed else "")
        )
    if "mlops.optuna.study" in info:
        lines.append(
            f"- **Optuna** study `{info['mlops.optuna.study']}`, "
            f"trial {info.get('mlops.optuna.trial', '?')}"
        )
    if info.get("mlops.role") == "challenger":
        lines.append(f"- **challenger** of {info.get('mlops.challenger_of', 'a scheduled sweep')}")
    return lines


def _params(info: dict[str, Any]) -> list[str]:
    params = info.get("params") or {}
    if not isinstance(params, dict) or not params:
        return []
    shown = sorted(params.items())[:MAX_PARAMS]
    text = ", ".join(f"`{k.removeprefix('train.')}={v}`" for k, v in shown)
    more = f" (and {len(params) - MAX_PARAMS} more in the run)" if len(params) > MAX_PARAMS else ""
    return ["", f"**Params** {text}{more}"]


def _gates(entries: Sequence[Entry]) -> list[str]:
    lines = []
    for e in entries:
        gates = e.evidence.get("gates") if isinstance(e.evidence, dict) else None
        if e.outcome not in ("done", "repaired", "refused") or e.to_stage == "none":
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.at)) if e.at else ""
        if gates:
            passed = sum(1 for g in gates if g.get("passed"))
            detail = ", ".join(f"{g['gate']} {'✓' if g.get('passed') else '✗'}" for g in gates)
            verdict = f"{passed}/{len(gates)} gates passed ({detail})"
        else:
            verdict = "no gates"
        forced = " — **forced**" if e.forced else ""
        lines.append(
            f"- {when} UTC {e.action} → **{e.to_stage}** by {e.actor}: {e.outcome}; "
            f"{verdict}{forced}" + (f" — {e.reason}" if e.reason else "")
        )
    return ["", "**Stages and gates**", *lines] if lines else []


def render_card(v: Version, entries: Sequence[Entry]) -> str:
    """The Markdown card of version `v`, with its stage changes among `entries` (the
    model's ledger)."""
    entries = [e for e in entries if e.model == v.model and e.version == v.version]
    info = v.info
    family = info.get("mlops.family", "model")
    task = info.get("mlops.task", "")
    parameters = str(info.get("mlops.parameters") or "")
    size = f", {int(parameters):,} parameters" if parameters.isdigit() else ""
    lines = [
        f"**{v.model} version {v.version}**: PyTorch {family} {task}{size}.".replace("  ", " "),
        f"Stage **{v.stage}** · weights sha256 {_short(v.sha256)} · all files "
        f"{_short(v.artifact_sha256)} (verified on every load).",
        "",
        *_metrics(info),
        *_lineage(v),
        *_params(info),
        *_gates(entries),
    ]
    return "\n".join(lines).strip() + "\n"

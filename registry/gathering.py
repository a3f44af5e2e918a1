"""The evidence a stage's gates need: the candidate's (and the current holder's) files
downloaded, verified against the registration record and measured on the test split."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mlops.params import GateParams
from registry import mlflow_port
from registry.context import Context
from registry.db.store import Version
from registry.evaluation import Scored, TestSplit, load_test_split, score
from registry.export.records import passing_exports
from registry.live import live_evidence

Progress = Callable[[str], None]


def _quiet(_text: str) -> None:
    return None


def needs_evidence(gate: GateParams) -> bool:
    """True when a gate of this stage needs the model's files or measurements."""
    return any(
        (
            gate.integrity,
            gate.signature,
            gate.thresholds,
            gate.max_size_mb,
            gate.beat_holder_by is not None,
            gate.max_latency_ms,
            gate.require_export,
            gate.require_live,
        )
    )


def gather(
    ctx: Context,
    candidate: Version,
    holder: Version | None,
    gate: GateParams,
    progress: Progress = _quiet,
) -> tuple[Scored, Scored | None]:
    """Measure the candidate (and the current holder) for the gates of one stage."""
    needs_data = (
        bool(gate.thresholds) or gate.beat_holder_by is not None or bool(gate.max_latency_ms)
    )
    if needs_data:
        progress("reading the test split")
    split: TestSplit | None = load_test_split(ctx.settings.root) if needs_data else None
    what = "verifying and evaluating" if split is not None else "verifying"
    with tempfile.TemporaryDirectory() as tmp:
        progress(f"downloading v{candidate.version}")
        local = mlflow_port.download(candidate.model, candidate.version, Path(tmp, "a"))
        progress(f"{what} v{candidate.version}")
        mine = score(candidate, local, split, latency=gate.max_latency_ms is not None)
        theirs = None
        if holder is not None and (gate.signature or gate.beat_holder_by is not None):
            progress(f"downloading the holder v{holder.version}")
            local = mlflow_port.download(holder.model, holder.version, Path(tmp, "b"))
            progress(f"{what} the holder v{holder.version}")
            theirs = score(holder, local, split)
    if gate.require_live is not None and holder is not None:
        progress(f"reading live evidence of v{candidate.version} beside v{holder.version}")
        sink = Path(gate.require_live.sink) if gate.require_live.sink else None
        found_live = live_evidence(ctx.settings, candidate.model, holder.version,
                                   candidate.version, sink)  # fmt: skip
        live = found_live.as_dict() if found_live else {"sink": None}
        mine = replace(mine, evidence=replace(mine.evidence, live=live))
    if gate.require_export is not None:
        found = mlflow_port.get_version(candidate.model, candidate.version)
        exports = passing_exports(found.tags if found is not None else {})
        mine = replace(mine, evidence=replace(mine.evidence, exports=exports))
    return mine, theirs

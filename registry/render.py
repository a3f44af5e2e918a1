"""How registry results look to people: Rich tables, and Markdown for pull requests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mlops import console
from registry.live import LiveEvidence, describe

if TYPE_CHECKING:
    from registry.db.store import Entry
    from registry.promotion import Outcome


def when(ts: float, short: bool = False) -> str:
    """A timestamp as local `YYYY-MM-DD HH:MM:SS` (`MM-DD HH:MM` when short)."""
    return time.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S", time.localtime(ts))


def outcome(o: Outcome) -> None:
    """The gates of a stage change and what happened."""
    if o.gates:
        rows = [
            (g.gate, g.value, g.threshold, "[green]pass[/]" if g.passed else "[red]FAIL[/]")
            for g in o.gates
        ]
        console.table(
            f"Gates for {o.model} v{o.version} → {o.to_stage}",
            ["gate", "value", "threshold", "result"],
            rows,
        )
    verb = {"promote": "promoted", "rollback": "rolled back", "archive": "archived"}[o.action]
    if o.dry_run:
        state = "would pass" if o.passed else "would be refused"
        console.out.print(f"dry run: {o.model} v{o.version} {o.from_stage} → {o.to_stage} {state}")
        return
    extra = f" (replacing v{o.displaced})" if o.displaced and o.displaced != o.version else ""
    forced = " [yellow]FORCED past failing gates[/]" if o.forced and not o.passed else ""
    if o.emptied:
        forced += f" [yellow]FORCED: no version holds {' or '.join(o.emptied)} now[/]"
    console.out.print(
        f"{o.model} v{o.version} {verb}: {o.from_stage} → {o.to_stage}{extra}{forced}"
    )


def history(model: str, entries: list[Entry]) -> None:
    """The ledger as a table."""
    rows = []
    for e in entries:
        gates = e.evidence.get("gates") or []
        failed = [g["gate"] for g in gates if not g["passed"]]
        summary = f"failed: {', '.join(failed)}" if failed else f"{len(gates)} passed"
        rows.append(
            (
                when(e.at, short=True),
                e.actor,
                f"{e.action}{' (forced)' if e.forced else ''} v{e.version}",
                f"{e.from_stage} → {e.to_stage}",
                e.outcome,
                e.reason,
                summary if gates else "",
            )
        )
    console.table(
        f"Ledger of {model}", ["when", "who", "what", "stage", "outcome", "reason", "gates"], rows
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "—" if value is None else str(value)


def comparison_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a comparison: one row per property, one column per version."""
    cols = result["versions"]
    header = [
        "",
        *[
            f"v{c['version']} ({c['ref']})" if c["ref"].startswith("@") else f"v{c['version']}"
            for c in cols
        ],
    ]
    rows: list[list[str]] = [["stage", *[c["stage"] for c in cols]]]
    metrics = sorted({k for c in cols for k in (*c["logged"], *c["now"]) if k != "n_samples"})
    for m in metrics:
        rows.append([f"{m} (logged)", *[_fmt(c["logged"].get(m)) for c in cols]])
        rows.append([f"{m} (now, same test split)", *[_fmt(c["now"].get(m)) for c in cols]])
    for key, label in (
        ("family", "family"),
        ("parameters", "parameters"),
        ("size_mb", "size MB"),
        ("latency_ms", "p50 latency ms (1 row)"),
        ("git_commit", "git commit"),
    ):
        rows.append(
            [label, *[_fmt(c[key])[:12] if key == "git_commit" else _fmt(c[key]) for c in cols]]
        )
    for name in sorted({k for c in cols for k in c["data_md5"]}):
        rows.append([f"data {name} md5", *[c["data_md5"].get(name, "—")[:12] for c in cols]])
    for param, values in result["params_diff"].items():
        rows.append([f"param {param}", *[str(v) for v in values]])
    return header, rows


def comparison(result: dict[str, Any]) -> None:
    """A comparison as a Rich table and verdict lines."""
    header, rows = comparison_rows(result)
    console.table(
        f"{result['model']}: side by side ({result['n_test_rows']} test rows, "
        f"split md5 {result['test_split_md5'][:12]})",
        header,
        rows,
    )
    for test in result["tests"]:
        console.out.print(f"verdict: {test['verdict']}", soft_wrap=True)
    if "live" in result:
        console.out.print(f"live: {live_line(result['live'])}", soft_wrap=True)


def live_line(found: dict[str, Any] | None) -> str:
    """The live comparison of `compare --live` in one line."""
    return describe(LiveEvidence(**found) if found else None)


def comparison_markdown(result: dict[str, Any]) -> str:
    """A comparison as a Markdown table and verdicts, for a pull request."""
    header, rows = comparison_rows(result)
    lines = [
        f"### {result['model']}: " + " vs ".join(header[1:]),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines += [f"**Verdict:** {t['verdict']}" for t in result["tests"]]
    if "live" in result:
        lines += ["", f"**Live:** {live_line(result['live'])}"]
    lines.append("")
    lines.append(
        f"_Re-evaluated on {result['n_test_rows']} test rows "
        f"(DVC md5 `{result['test_split_md5']}`)._"
    )
    return "\n".join(lines) + "\n"

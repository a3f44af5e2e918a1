"""`mlops monitor …`: parses and prints; `mlops.monitoring.service` decides.

Imports only typer and rich at import time. `drift` exits 1 when the verdict is drift
(for schedules and cron), 2 on bad input, 0 otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlops import console

if TYPE_CHECKING:
    from mlops.monitoring.drift import FeatureDrift
    from mlops.monitoring.performance import Performance
    from mlops.monitoring.service import DriftCheck

app = typer.Typer(
    help="Monitoring of served models: data and prediction drift, live performance.",
    no_args_is_help=True,
)

TABLE_ROWS = 20


@app.command("drift")
def drift_cmd(
    target: Annotated[
        str,
        typer.Argument(
            help="MODEL, MODEL@STAGE or MODEL@VERSION (default stage: production).",
            show_default=False,
        ),
    ],
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input", help="Current rows: a CSV or Parquet file with the feature columns."
        ),
    ] = None,
    sink: Annotated[
        Path | None,
        typer.Option("--sink", help="The serving sink to read (default .mlops/serving/MODEL.db)."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Where to write the PNG (default reports/drift/MODEL-vN.png)."),
    ] = None,
    all_rows: Annotated[bool, typer.Option("--all", help="Every feature in the table.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Drift of current inputs from the version's training split (exit 1 on drift).

    PSI and KS per feature, the shift of the version's predictions, a verdict against
    `monitor.drift` in params.yaml, and a PNG plot.
    """
    from mlops.monitoring.reference import UNVERIFIED
    from mlops.monitoring.service import check_drift
    from mlops.settings import Settings

    if input_file is not None and sink is not None:
        from mlops.errors import UserError

        raise UserError("give --input FILE or --sink PATH, not both")
    found = check_drift(Settings.from_env(), target.strip(), input_file, sink, plot)
    if found.reference["origin"] == UNVERIFIED:
        console.err.print(
            f"warning: {found.model} version {found.version} records no training split md5; "
            f"compared with the workspace's {found.reference['path']} as it is",
            soft_wrap=True,
            markup=False,
        )
    if as_json:
        console.emit_json(found.as_dict())
    else:
        _print(found, all_rows)
    if found.report.drift:
        raise typer.Exit(1)


def _row(f: FeatureDrift, categorical: bool) -> tuple[str, ...]:
    """One feature's cells: KS does not apply to a categorical column, which reports the
    share of categories training never saw."""
    category = f.unseen_share is not None
    ks = ("-", "-") if category else (f"{f.ks_statistic:.3f}", f"{f.ks_pvalue:.2g}")
    unseen = (f"{f.unseen_share:.1%}" if category else "-",) if categorical else ()
    drifted = f"[red]yes ({', '.join(f.flagged_by)})[/]" if f.drifted else "no"
    return (f.name, f"{f.psi:.3f}", *ks, *unseen, drifted)


def _print(found: DriftCheck, all_rows: bool) -> None:
    report = found.report
    features = report.features if all_rows else report.features[:TABLE_ROWS]
    categorical = any(f.unseen_share is not None for f in features)
    rows = [_row(f, categorical) for f in features]
    console.out.print(
        f"{found.model} version {found.version} ({found.ref}): {found.current['rows']} rows of "
        f"{found.current['source']} against {found.reference['rows']} training rows "
        f"({found.reference['origin']}, md5 {found.reference['md5'][:8]})",
        soft_wrap=True,
    )
    console.table(
        "Feature drift (highest PSI first)",
        [
            "feature",
            "PSI",
            "KS statistic",
            "KS p-value",
            *(["unseen categories"] if categorical else []),
            "drifted",
        ],
        rows,
    )
    if len(features) < len(report.features):
        console.out.print(
            f"showing {len(features)} of {len(report.features)} features; --all for every one"
        )
    shift = report.prediction
    if shift is not None:
        state = "[red]shifted[/]" if shift.drifted else "stable"
        if shift.kind == "classes":
            moved = sorted(
                shift.reference, key=lambda k: -abs(shift.current[k] - shift.reference[k])
            )
            detail = ", ".join(
                f"{k}: {shift.reference[k]:.0%} → {shift.current[k]:.0%}" for k in moved[:3]
            )
        else:
            detail = f"mean {shift.reference['mean']:.3g} → {shift.current['mean']:.3g}"
        console.out.print(f"Predictions: PSI {shift.psi:.3f} ({state}); {detail}", soft_wrap=True)
    for metric, value in found.performance.items():
        console.out.print(f"Current {metric}: {value:.4f}")
    if report.drift:
        console.out.print(
            "[bold red]Verdict: DRIFT[/] — " + "; ".join(report.reasons), soft_wrap=True
        )
    else:
        drifted = len(report.drifted_features)
        console.out.print(
            f"[bold green]Verdict: no drift[/] ({drifted} of {len(report.features)} features "
            "drifted, within monitor.drift.max_drifted_share; predictions stable)",
            soft_wrap=True,
        )
    if found.plot:
        console.out.print(f"Plot: {found.plot}", soft_wrap=True)


@app.command("performance")
def performance_cmd(
    target: Annotated[
        str,
        typer.Argument(
            help="MODEL, MODEL@STAGE or MODEL@VERSION (default stage: production).",
            show_default=False,
        ),
    ],
    sink: Annotated[
        Path | None,
        typer.Option("--sink", help="The serving sink to read (default .mlops/serving/MODEL.db)."),
    ] = None,
    buckets: Annotated[
        int, typer.Option(help="Shares of the labelled answers the trend shows.", min=1, max=100)
    ] = 10,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Where to write the PNG (default reports/performance/MODEL-vN.png)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Live accuracy (or RMSE) of a served version on the labels sent to /feedback.

    Accuracy with its 95% interval, the confusion matrix and the trend, oldest labelled
    answers first, and a PNG of both. Needs `mlops serve --feedback`.
    """
    from mlops.monitoring.service import check_performance
    from mlops.settings import Settings

    found = check_performance(Settings.from_env(), target.strip(), sink, buckets, plot)
    if as_json:
        console.emit_json(found.as_dict())
        return
    _print_performance(found)


def _print_performance(found: Performance) -> None:
    console.out.print(
        f"{found.model} version {found.version}"
        + ("" if found.ref.isdigit() else f" ({found.ref})")
        + f": {found.labelled} labelled of "
        f"{found.answered} answers in {found.sink}",
        soft_wrap=True,
    )
    if not found.labelled:
        console.out.print("No labels yet: POST them to /feedback (`mlops serve --feedback`).")
        return
    m = found.metrics
    if found.task == "regression":
        console.out.print(f"Live RMSE {m['rmse']:.4f}, MAE {m['mae']:.4f}")
        heads = ["answered from", "to", "labelled", "RMSE"]
        rows: list[tuple[str, ...]] = [
            (w.start, w.end, str(w.labelled), f"{w.value:.4f}") for w in found.trend
        ]
    else:
        console.out.print(
            f"Live accuracy {m['accuracy']:.4f} (95% interval {m['low']:.4f} to {m['high']:.4f})"
        )
        names = [str(c) for c in found.classes]
        console.table(
            "Confusion (rows: label, columns: predicted)",
            ["label", *names],
            [(names[i], *map(str, row)) for i, row in enumerate(found.confusion)],
        )
        heads = ["answered from", "to", "labelled", "accuracy", "95% interval"]
        rows = [
            (w.start, w.end, str(w.labelled), f"{w.value:.4f}", f"{w.low:.3f} to {w.high:.3f}")
            for w in found.trend
        ]
    console.table("Trend (oldest first)", heads, rows)
    if found.plot:
        console.out.print(f"Plot: {found.plot}", soft_wrap=True)

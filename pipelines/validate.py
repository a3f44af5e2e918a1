"""Stage `validate`: check the raw data against its schema; write a report, fail if unusable."""

from __future__ import annotations

from mlops import tracking, workspace
from mlops.data import Schema, read_parquet
from mlops.errors import DataError
from mlops.io import write_json
from mlops.validation import failure_summary, validate_frame
from pipelines._stage import StageContext, run_stage


def validate(ctx: StageContext) -> None:
    """Run every check, write `reports/validation.json`, raise when a check fails."""
    schema = Schema.load(workspace.SCHEMA)
    frame = read_parquet(workspace.RAW)
    with tracking.stage_run(ctx.settings, ctx.experiment, "validate") as run_id:
        tracking.log_params(ctx.params.validate_.model_dump(mode="json"), prefix="validate")
        report = validate_frame(
            frame, schema, ctx.params.validate_, ctx.params.data.tokenizer.max_length
        )
        write_json(workspace.VALIDATION, report)
        tracking.log_artifacts(workspace.VALIDATION)
        tracking.log_metrics({"checks_failed": sum(not c["passed"] for c in report["checks"])})
        failed = [c["name"] for c in report["checks"] if not c["passed"]]
        verdict = f"failed {', '.join(failed)}" if failed else "passed"
        tracking.describe_run(run_id, f"validate {verdict} · {report['n_rows']} rows")
        if not report["passed"]:
            raise DataError(f"data unusable ({workspace.VALIDATION}): {failure_summary(report)}")
        print(f"validate: {len(report['checks'])} checks passed on {report['n_rows']} rows")


def main() -> None:
    """Entry point of `python -m pipelines.validate`."""
    run_stage("validate", validate)


if __name__ == "__main__":
    main()

"""Stage `split`: stratified train/val/test Parquet files, identical bytes for a given seed,
and the schema of the splits (a mixed table's column encoding fitted on the train split)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops import tracking, workspace
from mlops.data import Schema, read_parquet, write_parquet
from mlops.errors import DataError
from mlops.io import read_json
from mlops.lineage import dvc_md5
from mlops.splitting import stratified_split
from pipelines._stage import StageContext, run_stage

if TYPE_CHECKING:
    import pandas as pd


def split(ctx: StageContext) -> None:
    """Split the validated data set."""
    if not read_json(workspace.VALIDATION).get("passed"):
        raise DataError(f"{workspace.VALIDATION}: the data did not pass validation")
    frame = read_parquet(workspace.RAW)
    schema = Schema.load(workspace.SCHEMA)
    task = schema.task
    with tracking.stage_run(ctx.settings, ctx.experiment, "split") as run_id:
        tracking.log_params(ctx.params.split.model_dump(mode="json"), prefix="split")
        parts = dict(
            zip(workspace.SPLITS, stratified_split(frame, ctx.params.split, task), strict=True)
        )
        for name, part in parts.items():
            write_parquet(part, workspace.SPLITS[name])
        fitted = schema.fitted(parts["train"], ctx.params.data)
        fitted.save(workspace.SPLIT_SCHEMA)
        _report_text(fitted, parts["train"])
        tracking.log_metrics({f"rows_{name}": len(part) for name, part in parts.items()})
        tracking.set_tags({f"mlops.data.{n}.md5": dvc_md5(p) for n, p in workspace.SPLITS.items()})
        sizes = ", ".join(f"{name} {len(part)}" for name, part in parts.items())
        counts = "/".join(str(len(part)) for part in parts.values())
        tracking.describe_run(run_id, f"split {counts} rows (train/val/test)")
        print(f"split: {sizes}")


def _report_text(schema: Schema, train: pd.DataFrame) -> None:
    """Log and print how the train split's texts tokenize (every cut counted)."""
    encoding = schema.column_encoding
    report = encoding.text_report(train) if encoding is not None else {}
    if not report:
        return
    tracking.log_metrics(report)
    print(
        f"split: tokenizer of {report['text_vocab_size']:.0f} pieces; train texts "
        f"{report['text_tokens_mean']:.1f} tokens on average, {report['text_truncated']:.0f} of "
        f"{report['text_rows']:.0f} cut at {encoding.max_length if encoding else 0} tokens, "
        f"{report['text_unknown']:.0f} unknown pieces"
    )


def main() -> None:
    """Entry point of `python -m pipelines.split`."""
    run_stage("split", split)


if __name__ == "__main__":
    main()

"""Stage `ingest`: read `data.source` into a Parquet file plus a schema."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlops import tracking, workspace
from mlops.data import (
    DEFAULT_IMAGE_COLUMN,
    check_source,
    infer_schema,
    load_images,
    load_source,
    subsample,
    write_parquet,
)
from mlops.images import ImageFormat
from mlops.lineage import dvc_md5
from mlops.params import DataParams
from pipelines._stage import StageContext, run_stage

if TYPE_CHECKING:
    import pandas as pd


def ingest(ctx: StageContext) -> None:
    """Load, subsample if asked, and write the raw data set and its schema."""
    p = ctx.params.data
    check_source(p.source, Path.cwd())
    with tracking.stage_run(ctx.settings, ctx.experiment, "ingest") as run_id:
        tracking.log_params(p.model_dump(mode="json"), prefix="data")
        frame, skipped, image = _load(p)
        frame = subsample(frame, p.max_rows, p.seed)
        schema = infer_schema(frame, p.source, p.target, p.input_shape, p.task, image, p.declared)
        write_parquet(frame, workspace.RAW)
        schema.save(workspace.SCHEMA)
        tracking.log_metrics(
            {"rows": len(frame), "features": len(schema.features), "classes": len(schema.classes)}
        )
        tracking.set_tags({"mlops.data.raw.md5": dvc_md5(workspace.RAW)})
        tracking.log_artifacts(workspace.SCHEMA)
        kind = f"{len(schema.classes)} classes" if schema.classes else "a regression target"
        if skipped:
            print(f"ingest: skipped {skipped} files that are not .png, .jpg, .jpeg or .webp")
        what = f"ingest {len(frame)} rows · {len(schema.features)} features · {kind}"
        tracking.describe_run(run_id, what)
        print(
            f"ingest: {len(frame)} rows, {len(schema.features)} features, {kind} "
            f"(data.task: {p.task}) -> {workspace.RAW}"
        )


def _load(p: DataParams) -> tuple[pd.DataFrame, int, ImageFormat | None]:
    """The source's frame, how many files were skipped, and how images are decoded."""
    images = p.images
    if images is None:
        return load_source(p.source, p.target, Path.cwd()), 0, None
    found = load_images(p.source, p.target, Path.cwd(), p.image_column)
    column = p.image_column or DEFAULT_IMAGE_COLUMN
    height, width = images.size
    return found.frame, found.skipped, ImageFormat(column, (height, width), images.channels)


def main() -> None:
    """Entry point of `python -m pipelines.ingest`."""
    run_stage("ingest", ingest)


if __name__ == "__main__":
    main()

"""Stage `train`: fit the selected model family on the train split, keep the best epoch.

`python -m pipelines.train [--resume] [--checkpoint-every SECONDS]`; under
`torchrun --nproc_per_node N -m pipelines.train` it trains data-parallel and only rank 0
logs to MLflow and writes outputs. A checkpoint of the same job (same model, params and
data) is resumed automatically, so a killed `dvc repro` picks up where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import TYPE_CHECKING, Any

from mlops import distributed, tracking, workspace
from mlops.board import Board, record_training
from mlops.checkpoint import fingerprint, load_checkpoint
from mlops.data import Schema, read_parquet
from mlops.io import read_json, write_json
from mlops.lineage import data_hashes, flatten
from mlops.logged_training import log_weights, train_logged
from mlops.models import ModelSpec, build_model, count_parameters, spec_for_data
from mlops.params import DataParams, TrainParams
from mlops.training import Checkpointing, EpochResult, TrainResult, check_metric
from mlops.tuning.search_space import data_values, derive, derive_data
from pipelines._stage import StageContext, run_stage
from registry.context import Context
from registry.finetune import Parent, fit, head_kept, load_parent, starter

if TYPE_CHECKING:
    from torch import nn


def _logged_params(p: TrainParams) -> dict[str, Any]:
    values = p.model_dump(mode="json", exclude={"model"})
    values["model"] = {"family": p.model.family, p.model.family: p.model.selected.model_dump()}
    return values


def _note(p: TrainParams, task: str, result: Any, parameters: int, hashes: dict[str, str]) -> str:
    """The train run's description (Markdown): what was trained, how it went, on what."""
    best = result.history[result.best_epoch - 1].metrics
    hyper = p.model.selected.model_dump(mode="json")
    shown = {
        "optimizer": p.optimizer, "learning_rate": p.learning_rate,
        "weight_decay": p.weight_decay, "batch_size": p.batch_size,
        "schedule": p.schedule.name, "epochs": p.epochs, **hyper,
    }  # fmt: skip
    stopped = "stopped early" if result.stopped_early else "ran every epoch"
    lines = [
        f"**{p.model.family}** {task}, {parameters:,} parameters: best epoch "
        f"{result.best_epoch} of {len(result.history)} ({stopped}).",
        "",
        "| validation | best epoch |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in sorted(best.items()) if k.startswith("val_")),
        "",
        "**Params** " + ", ".join(f"`{k}={v}`" for k, v in shown.items()),
        "",
        "**Data (DVC md5)** " + ", ".join(f"{k} `{v[:8]}`" for k, v in sorted(hashes.items())),
    ]
    return "\n".join(lines) + "\n"


def tuned_params(base: TrainParams) -> tuple[TrainParams, dict[str, Any]]:
    """params.yaml's train section with the tune stage's best values applied (if tuned)."""
    found = read_json(workspace.BEST_PARAMS) if workspace.BEST_PARAMS.is_file() else {}
    if not found.get("tuned"):
        return base, {}
    return derive(base, found["values"]), found


def tuned_schema(data: DataParams, tuned: dict[str, Any]) -> Schema:
    """The splits' schema; when the tune stage searched how columns are encoded
    (`data.tokenizer.*`, ...), its encoding refitted on the train split with the best
    trial's values, as that trial trained (the model's spec carries it from here on)."""
    schema = Schema.load(workspace.SPLIT_SCHEMA)
    searched = data_values(tuned.get("values", {}))
    if not searched:
        return schema
    shown = ", ".join(f"{k}={v}" for k, v in sorted(searched.items()))
    print(f"train: column encoding refitted on the train split with the tuned {shown}")
    return schema.fitted(read_parquet(workspace.SPLITS["train"]), derive_data(data, searched))


def _parent(ctx: StageContext, p: TrainParams) -> Parent | None:
    """The registered version `train.init_from` names, verified (None without one)."""
    if p.init_from is None:
        return None
    registry = Context(ctx.settings, ctx.params.registry, ctx.params.evaluate.primary_metric)
    parent = load_parent(registry, p.init_from)
    print(f"train: starting from {parent.model} version {parent.version} ({parent.sha256[:12]})")
    return parent


def _started(start: Callable[[nn.Module], nn.Module], spec: ModelSpec) -> nn.Module:
    return start(build_model(spec))


def _splits(p: TrainParams, schema: Schema) -> tuple[Any, Any]:
    """The train and validation splits: in memory, or streamed when larger than
    `train.loader.stream_above_mb` decoded."""
    from mlops.streaming import load_split

    train = load_split(workspace.SPLITS["train"], schema, p.loader, p.seed)
    return train, load_split(workspace.SPLITS["val"], schema, p.loader, p.seed)


def _loading(split: Any) -> str:
    from mlops.streaming import loading

    return loading(split)


def _augmenter(p: TrainParams, schema: Schema) -> Any:
    """The augmenter `train.augment` asks for (None: none)."""
    from mlops.augment import augmenter

    return augmenter(p.augment, schema.input_shape, bool(schema.image))


def train(ctx: StageContext, resume: bool, checkpoint_every: float) -> None:
    """Train, save `models/` (safetensors + spec) and the per-epoch history."""
    p, tuned = tuned_params(ctx.params.train)
    schema = tuned_schema(ctx.params.data, tuned)
    check_metric(schema.task, p.early_stopping.metric)
    parent = _parent(ctx, p)
    train_split, val_split = _splits(p, schema)
    spec = spec_for_data(p.model, schema, train_split)
    make_model: Callable[[], nn.Module] = partial(build_model, spec)
    parent_tags: dict[str, str] = {}
    if parent is not None:
        spec = fit(parent, spec)
        start = starter(parent, spec, p.freeze)
        make_model = partial(_started, start, spec)
        parent_tags = parent.tags("kept" if head_kept(parent, spec) else "replaced")
    augment = _augmenter(p, schema)
    hashes = data_hashes(workspace.SPLITS)
    job = fingerprint(asdict(spec), p.model_dump(mode="json"), hashes | parent_tags)
    checkpointing = Checkpointing(workspace.CHECKPOINT, job, checkpoint_every, resume)
    if resume:  # refuse a missing or foreign checkpoint before anything starts
        load_checkpoint(workspace.CHECKPOINT, job, required=True)
    dist = distributed.from_env()
    tags = _run_tags(p, schema.task, hashes, dist.world_size, tuned)
    tags["mlops.data.loading"] = _loading(train_split)
    tags |= parent_tags
    run = (
        tracking.stage_run(ctx.settings, ctx.experiment, "train", tags=tags)
        if dist.is_main
        else contextlib.nullcontext("")
    )
    try:
        with run as run_id:
            if dist.is_main:
                tracking.log_params(_logged_params(p), prefix="train")
            board = Board("train") if p.tensorboard and dist.is_main else None

            def on_epoch(result: EpochResult) -> None:
                if not dist.is_main:
                    return
                shown = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k != "lr")
                print(f"train: epoch {result.epoch:>3}/{p.epochs}  {shown}", flush=True)
                if board is not None:
                    board.scalars(result.metrics, result.epoch)

            result = train_logged(
                run_id or None, make_model, p,
                (train_split, val_split), schema.task, on_epoch, checkpointing, dist, augment,
            )  # fmt: skip
            if dist.is_main:
                _record(run_id, p, spec, result, hashes)
            if board is not None:
                _board(board, p, spec, result, train_split)
    finally:
        distributed.shutdown(dist)


def _board(board: Board, p: TrainParams, spec: ModelSpec, result: TrainResult, train: Any) -> None:
    """The run's TensorBoard files: hyperparameters with the best metrics, the graph and
    (images) a grid of training images; logged under the run's `tensorboard/`."""
    best = result.history[result.best_epoch - 1].metrics
    sample = train[0][:64] if isinstance(train, tuple) else train.probe(64)
    shape = spec.input_shape if spec.image else None
    flat = {f"train.{k}": v for k, v in flatten(_logged_params(p)).items()}
    for note in record_training(board, flat, best, result.model, sample, shape):
        print(f"train: tensorboard: {note}")
    board.close()


def _run_tags(
    p: TrainParams, task: str, hashes: dict[str, str], world_size: int, tuned: dict[str, Any]
) -> dict[str, Any]:
    """The train run's tags: data md5s, family, task, world size, and the trial it came
    from when tuned."""
    tags: dict[str, Any] = {f"mlops.data.{k}.md5": v for k, v in hashes.items()}
    tags |= {"mlops.family": p.model.family, "mlops.world_size": str(world_size)}
    tags["mlops.task"] = task
    if tuned:
        tags |= {"mlops.optuna.study": tuned["study"], "mlops.optuna.trial": str(tuned["trial"])}
    return tags


def _record(
    run_id: str, p: TrainParams, spec: ModelSpec, result: TrainResult, hashes: dict[str, str]
) -> None:
    """Save `models/` and the history, and log the weights, best metrics, tags and the
    run's name and note (main process only)."""
    # The safe weights travel with the run: `mlops registry register --run` uses them.
    log_weights(result.model, spec, workspace.MODEL_DIR)
    write_json(workspace.HISTORY, [{"epoch": h.epoch, **h.metrics} for h in result.history])
    best = result.history[result.best_epoch - 1].metrics
    parameters = count_parameters(result.model)
    tracking.log_metrics(
        {"best_epoch": result.best_epoch, "parameters": parameters}
        | {f"best_{k}": v for k, v in best.items() if k.startswith("val_")}
    )
    tracking.set_tags({
        "mlops.stopped_early": result.stopped_early,
        "mlops.resumed_from_epoch": result.resumed_from,
        "mlops.device": result.device,
        "mlops.precision": p.precision if result.device.startswith("cuda") else "fp32",
        "mlops.parameters": parameters,
    })  # fmt: skip
    metric = p.early_stopping.metric
    tracking.describe_run(
        run_id,
        f"train {p.model.family} · {metric} {best[metric]:.4f}",
        _note(p, spec.task, result, parameters, hashes),
    )
    print(
        f"train: {p.model.family}, best epoch {result.best_epoch} "
        f"({metric} {best[metric]:.4f}) -> {workspace.MODEL_DIR}/"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m pipelines.train`."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__)
    parser.add_argument(
        "--resume", action="store_true",
        help="resume from the checkpoint of this job; fail if there is none",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
        help="write a checkpoint at most this often (0: every epoch; default 10)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.checkpoint_every < 0:
        parser.error("--checkpoint-every must be >= 0")
    run_stage("train", partial(train, resume=args.resume, checkpoint_every=args.checkpoint_every))


if __name__ == "__main__":
    main()

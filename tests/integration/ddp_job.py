"""Run by test_ddp under `torchrun`: train the default MLP on digits data-parallel and,
on rank 0, write the test accuracy and what each rank saw to the file in argv[1]."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from mlops import distributed
from mlops.config import Params
from mlops.data import features_and_target, infer_schema, load_source
from mlops.metrics import classification_metrics
from mlops.models import build_model, make_spec
from mlops.splitting import stratified_split
from mlops.training import predict_proba, train_model


def main() -> None:
    ctx = distributed.from_env()
    params = Params()
    frame = load_source("builtin:digits", "target", Path.cwd())
    schema = infer_schema(frame, "builtin:digits", "target")
    train, val, test = stratified_split(frame, params.split)
    x_train, y_train = features_and_target(train, schema)
    x_val, y_val = features_and_target(val, schema)
    x_test, y_test = features_and_target(test, schema)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std < 1e-6] = 1.0
    spec = make_spec(params.train.model, schema.classes, mean.tolist(), std.tolist(), [1, 8, 8])
    result = train_model(
        lambda: build_model(spec), params.train, (x_train, y_train), (x_val, y_val), ctx=ctx
    )
    accuracy = classification_metrics(y_test, predict_proba(result.model, x_test))["accuracy"]
    first = next(iter(result.model.state_dict().values())).flatten()[:8].tolist()
    gathered: list[object] = [None] * ctx.world_size
    if ctx.distributed:
        dist.all_gather_object(gathered, first)
    else:
        gathered = [first]
    if ctx.is_main:
        Path(sys.argv[1]).write_text(json.dumps({
            "world_size": ctx.world_size,
            "accuracy": accuracy,
            "epochs": len(result.history),
            "weights_by_rank": gathered,
        }))  # fmt: skip
    distributed.shutdown(ctx)


if __name__ == "__main__":
    main()

"""Run by test_ddp under `torchrun`: train the default MLP on digits data-parallel and,
on rank 0, write the test accuracy and what each rank saw to the file in argv[1]."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from mlops import distributed
from mlops.metrics import classification_metrics
from mlops.models import build_model
from mlops.params import Params
from mlops.training import predict_proba, train_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script by torchrun
from tests.integration.digits import digits_job


def main() -> None:
    ctx = distributed.from_env()
    params = Params()
    spec, (x_train, y_train), (x_val, y_val), (x_test, y_test) = digits_job(params)
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

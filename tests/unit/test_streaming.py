"""Streamed splits: every row once per epoch in a seeded order, the same batches for the
same worker count, exact steps per epoch, statistics and validation metrics equal to the
in-memory path's, and a killed streamed job resumes to the uninterrupted result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mlops.data import Schema, features_and_target, infer_schema
from mlops.models import build_model, spec_for_data
from mlops.params import LoaderParams, TrainParams
from mlops.streaming import Stream, load_split, loading
from mlops.training import (
    Checkpointing,
    EpochCallback,
    TrainResult,
    _streamed_val_metrics,
    _val_metrics,
    train_model,
)
from tests.unit.resume import straight_and_resumed

ROWS, FEATURES = 1000, 6


def _split(path: Path, task: str = "classification", group: int = 64) -> Schema:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])
    frame["f0"] = np.arange(ROWS, dtype=np.float32)  # each row's id
    if task == "regression":
        frame["target"] = (x[:, 1] * 3 + x[:, 2]).astype(np.float64)
    else:
        frame["target"] = (x[:, 1] + x[:, 2] > 0).astype(np.int64)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, row_group_size=group)
    return infer_schema(frame, str(path), "target")


def _ids(stream: Stream, epoch: int, batch: int = 32) -> list[int]:
    return [int(v) for xb, _ in stream.batches(epoch, batch) for v in xb[:, 0]]


@pytest.fixture
def split(tmp_path: Path) -> tuple[Path, Schema]:
    path = tmp_path / "train.parquet"
    return path, _split(path)


@pytest.mark.parametrize("workers", [0, 2])
def test_each_epoch_holds_every_row_once_in_a_seeded_order(
    split: tuple[Path, Schema], workers: int
) -> None:
    path, schema = split
    stream = Stream(path, schema, LoaderParams(workers=workers, shuffle_buffer=100), seed=7)
    first = _ids(stream, 1)
    assert sorted(first) == list(range(ROWS))
    assert first != list(range(ROWS))  # shuffled
    assert _ids(stream, 1) == first  # the same epoch again: the same order
    assert _ids(stream, 2) != first
    again = Stream(path, schema, LoaderParams(workers=workers, shuffle_buffer=100), seed=7)
    assert _ids(again, 1) == first  # a new run with the same worker count


@pytest.mark.parametrize(("workers", "world"), [(0, 1), (2, 1), (2, 2)])
def test_steps_are_the_batches_an_epoch_yields(
    split: tuple[Path, Schema], workers: int, world: int
) -> None:
    path, schema = split
    stream = Stream(path, schema, LoaderParams(workers=workers), seed=1)
    for rank in range(world):
        batches = list(stream.batches(3, 50, True, rank, world))
        assert len(batches) == stream.steps(50, rank, world)
    every = [int(v) for r in range(world) for xb, _ in stream.batches(3, 50, True, r, world)
             for v in xb[:, 0]]  # fmt: skip
    assert sorted(every) == list(range(ROWS))  # ranks share the rows, none twice


def test_stats_equal_the_in_memory_statistics(split: tuple[Path, Schema]) -> None:
    path, schema = split
    x, y = features_and_target(pd.read_parquet(path), schema)
    mean, std, y_mean, y_std = Stream(path, schema, LoaderParams()).stats()
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(std, x.astype(np.float64).std(axis=0), rtol=1e-6)
    assert y_mean == pytest.approx(float(y.mean())) and y_std == pytest.approx(float(y.std()))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_streamed_validation_metrics_equal_the_in_memory_ones(tmp_path: Path, task: str) -> None:
    path = tmp_path / "val.parquet"
    schema = _split(path, task)
    x, y = features_and_target(pd.read_parquet(path), schema)
    spec = spec_for_data(TrainParams().model, schema, (x, y))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    n_classes = 1 if task == "regression" else 2
    held = _val_metrics(model, torch.from_numpy(x), torch.from_numpy(y), n_classes, task)
    stream = Stream(path, schema, LoaderParams(workers=0))
    batches = stream.batches(0, 128, shuffle=False)
    streamed = _streamed_val_metrics(model, batches, n_classes, task, torch.device("cpu"))
    assert streamed.keys() == held.keys()
    for key, value in held.items():
        assert streamed[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_a_split_streams_only_above_the_limit(split: tuple[Path, Schema]) -> None:
    path, schema = split
    held = load_split(path, schema, LoaderParams(), seed=0)
    assert isinstance(held, tuple) and loading(held) == "memory"
    streamed = load_split(path, schema, LoaderParams(stream_above_mb=0.01), seed=0)
    assert isinstance(streamed, Stream) and loading(streamed) == "stream"


def test_a_killed_streamed_job_resumes_to_the_uninterrupted_result(
    split: tuple[Path, Schema], tmp_path: Path
) -> None:
    path, schema = split
    loader = LoaderParams(workers=2, shuffle_buffer=100, stream_above_mb=0.0)
    params = TrainParams.model_validate({
        "epochs": 4, "batch_size": 32, "device": "cpu", "loader": loader.model_dump(),
        "schedule": {"name": "onecycle"}, "early_stopping": {"patience": 0},
        "model": {"mlp": {"hidden_sizes": [16], "dropout": 0.2}},
    })  # fmt: skip
    stream = Stream(path, schema, loader, seed=params.seed)
    spec = spec_for_data(params.model, schema, stream)

    def run(on_epoch: EpochCallback | None, cp: Checkpointing | None) -> TrainResult:
        return train_model(lambda: build_model(spec), params, stream, stream, on_epoch, cp)

    whole, resumed = straight_and_resumed(run, tmp_path)
    assert [h.metrics for h in resumed.history] == [h.metrics for h in whole.history]
    assert whole.history[-1].metrics["val_accuracy"] >= 0.6  # learns, above chance

"""Splits larger than memory: read in batches from their Parquet row groups by DataLoader
workers, never loaded whole. Imports torch at module level: import it lazily.

Row groups are dealt to shards (one per DataLoader worker, per DDP rank) once, by index,
so each shard's row count and so the steps per epoch are fixed. Each epoch a shard reads
its groups in an order drawn from (seed, epoch, shard) and shuffles rows within a bounded
buffer, yielding whole batches (the last one of a shard may be short). Decoding a group is
`data.features_and_target`, the same as the in-memory path (images decoded in the worker).
The DataLoader takes the workers' batches in turn, so a run is identical to another with
the same worker count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mlops.data import Schema, features_and_target, read_parquet
from mlops.params import LoaderParams

Batch = tuple[torch.Tensor, torch.Tensor]
STATS_ROWS = 8192  # rows converted to float64 at once by the statistics pass


def decoded_bytes(path: Path, schema: Schema) -> int:
    """What the split would take in memory as float32 rows."""
    fmt, encoding = schema.image_format, schema.column_encoding
    values = fmt.values if fmt is not None else max(len(schema.features), 1)
    if encoding is not None:
        values = encoding.width
    return pq.ParquetFile(path).metadata.num_rows * (values + 1) * 4


def should_stream(path: Path, schema: Schema, loader: LoaderParams) -> bool:
    """Whether a split is larger, decoded, than `loader.stream_above_mb`."""
    return decoded_bytes(path, schema) > loader.stream_above_mb * 1024 * 1024


@dataclass(frozen=True)
class Stream:
    """One split, read in batches (see the module docstring)."""

    path: Path
    schema: Schema
    loader: LoaderParams
    seed: int = 0

    @cached_property
    def group_rows(self) -> list[int]:
        """Rows per row group, in file order."""
        meta = pq.ParquetFile(self.path).metadata
        return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]

    def __len__(self) -> int:
        return sum(self.group_rows)

    def shards(self, rank: int = 0, world: int = 1) -> list[list[int]]:
        """The row groups of each of this rank's shards (one per worker)."""
        count = max(self.loader.workers, 1)
        total = count * world
        groups = range(len(self.group_rows))
        return [list(groups[rank * count + w :: total]) for w in range(count)]

    def steps(self, batch: int, rank: int = 0, world: int = 1) -> int:
        """Batches per epoch on this rank: each shard's rows in whole batches plus a last
        short one."""
        rows = self.group_rows
        return sum(math.ceil(sum(rows[g] for g in s) / batch) for s in self.shards(rank, world))

    def batches(
        self, epoch: int, batch: int, shuffle: bool = True, rank: int = 0, world: int = 1
    ) -> Iterator[Batch]:
        """This rank's batches of one epoch, as CPU tensors."""
        dataset = _Shards(self, self.shards(rank, world), epoch, batch, shuffle)
        workers = self.loader.workers
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            prefetch_factor=self.loader.prefetch if workers else None,
            pin_memory=self.loader.pin_memory and torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed + epoch),
        )
        yield from loader

    def group(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Row group `index` decoded as the model reads it (Arrow's buffers handed back
        to the system as soon as the frame is decoded)."""
        table = pq.ParquetFile(self.path).read_row_group(index)
        frame = table.to_pandas(split_blocks=True, self_destruct=True)
        del table
        decoded = features_and_target(frame, self.schema)
        del frame
        pa.default_memory_pool().release_unused()
        return decoded

    def probe(self, rows: int = 1) -> np.ndarray:
        """The first rows (of the first row group)."""
        return self.group(0)[0][:rows]

    def stats(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Per-feature (per-channel for images) mean and std, and the target's mean and
        std, in one pass over the groups (float64 sums; population std, as numpy's)."""
        fmt = self.schema.image_format
        sums = squares = None
        count = 0
        y_sum = y_squares = 0.0
        for index in range(len(self.group_rows)):
            x, y = self.group(index)
            for start in range(0, len(x), STATS_ROWS):  # float64 a chunk at a time
                chunk = x[start : start + STATS_ROWS].astype(np.float64)
                values = chunk.reshape(len(chunk), fmt.channels, -1) if fmt else chunk[:, :, None]
                part, part_sq = values.sum(axis=(0, 2)), (values**2).sum(axis=(0, 2))
                sums = part if sums is None else sums + part
                squares = part_sq if squares is None else squares + part_sq
                count += values.shape[0] * values.shape[2]
            y_sum += float(y.sum(dtype=np.float64))
            y_squares += float(np.dot(y.astype(np.float64), y.astype(np.float64)))
            del x, y
        assert sums is not None and squares is not None
        mean = sums / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        rows = len(self)
        y_mean = y_sum / rows
        return mean, std, y_mean, math.sqrt(max(y_squares / rows - y_mean**2, 0.0))


class _Shards(IterableDataset[Batch]):
    """The batches of one epoch: each DataLoader worker reads its own shard."""

    def __init__(
        self, stream: Stream, shards: list[list[int]], epoch: int, batch: int, shuffle: bool
    ) -> None:
        self.stream, self.shards, self.epoch = stream, shards, epoch
        self.batch, self.shuffle = batch, shuffle

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        shards = [info.id] if info is not None else range(len(self.shards))
        for shard in shards:
            yield from self._shard(shard)

    def _shard(self, shard: int) -> Iterator[Batch]:
        groups = list(self.shards[shard])
        rng = np.random.default_rng([self.stream.seed, self.epoch, shard])
        if self.shuffle:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        keep = self.stream.loader.shuffle_buffer if self.shuffle else 0
        x_left: np.ndarray | None = None
        y_left: np.ndarray | None = None
        for index in groups:
            x, y = self.stream.group(index)
            if x_left is not None and y_left is not None:
                x, y = np.concatenate([x_left, x]), np.concatenate([y_left, y])
            if self.shuffle:
                order = rng.permutation(len(x))
                x, y = x[order], y[order]
            ready = max(len(x) - keep, 0) // self.batch * self.batch
            yield from _split(x[:ready], y[:ready], self.batch)
            x_left, y_left = x[ready:], y[ready:]
        if x_left is not None and y_left is not None:
            yield from _split(x_left, y_left, self.batch)


def _split(x: np.ndarray, y: np.ndarray, batch: int) -> Iterator[Batch]:
    for start in range(0, len(x), batch):
        yield (
            torch.from_numpy(np.ascontiguousarray(x[start : start + batch])),
            torch.from_numpy(np.ascontiguousarray(y[start : start + batch])),
        )


def load_split(
    path: Path, schema: Schema, loader: LoaderParams, seed: int
) -> tuple[np.ndarray, np.ndarray] | Stream:
    """A split as training reads it: in memory (x, y) when it fits under
    `loader.stream_above_mb`, else a `Stream` over its row groups."""
    if should_stream(path, schema, loader):
        return Stream(path, schema, loader, seed)
    return features_and_target(read_parquet(path), schema)


def loading(split: Any) -> str:
    """How a split is read, for the train run's tag: `memory` or `stream`."""
    return "stream" if isinstance(split, Stream) else "memory"

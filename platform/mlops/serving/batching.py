"""Batched serving (`mlops serve --batch-max N --batch-wait-ms T`): concurrent `/predict`
requests are coalesced into one model call, and each caller gets its own rows back, in
order.

Requests are parsed on the event loop as before, then queued; one task takes the first
queued request and every one queued behind it (the same served version, at most N rows
in all; a request larger than N runs alone) and runs them as one batch in the model's own
thread, so the loop keeps reading requests meanwhile and the next batch is what arrived
during this one. Adaptive: a request waits for company only while other requests are
being read (at most T from the first of the batch); a lone request goes at once.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlops.serving.model import Served

Result = tuple[dict[str, Any], np.ndarray]


@dataclass
class _Waiting:
    served: Served
    x: np.ndarray
    future: asyncio.Future[Result]


class Batcher:
    """See the module docstring. `in_flight` is kept by the app: requests accepted and
    not yet answered (those not queued yet are the company worth waiting for)."""

    def __init__(
        self, max_rows: int, wait_s: float, on_call: Callable[[int, int], None] | None = None
    ) -> None:
        self.max_rows = max_rows
        self.wait_s = wait_s
        self.in_flight = 0
        self._on_call = on_call or (lambda requests, rows: None)
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._carry: collections.deque[_Waiting] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._model = ThreadPoolExecutor(1, thread_name_prefix="mlops-batch")

    async def submit(self, served: Served, x: np.ndarray) -> Result:
        """This request's body and predicted indices, from a coalesced model call."""
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        future: asyncio.Future[Result] = loop.create_future()
        await self._queue.put(_Waiting(served, x, future))
        return await future

    async def _next(self, deadline: float, taken: int) -> _Waiting | None:
        """The next queued request; waits (until `deadline`) only while requests that
        are not queued yet are being read."""
        assert self._queue is not None
        if self._carry:
            return self._carry.popleft()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        remaining = deadline - asyncio.get_running_loop().time()
        if self.in_flight <= taken or remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), remaining)
        except TimeoutError:
            return None

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = self._carry.popleft() if self._carry else await self._queue.get()
            batch, rows = [first], len(first.x)
            deadline = loop.time() + self.wait_s
            while rows < self.max_rows:
                item = await self._next(deadline, len(batch))
                if item is None:
                    break
                if item.served is not first.served or rows + len(item.x) > self.max_rows:
                    self._carry.append(item)  # the next batch starts with it
                    break
                batch.append(item)
                rows += len(item.x)
            self._on_call(len(batch), rows)
            try:
                results = await loop.run_in_executor(self._model, _predict, first.served, batch)
            except Exception as exc:  # every caller of the batch gets the failure
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)


def _predict(served: Served, batch: list[_Waiting]) -> list[Result]:
    """One model call for the batch, cut back into each request's answer."""
    if len(batch) == 1:
        return [served.predict(batch[0].x)]
    body, index = served.predict(np.concatenate([item.x for item in batch]))
    results, at = [], 0
    for item in batch:
        n = len(item.x)
        part = {k: v[at : at + n] if k in ("predictions", "probabilities") else v
                for k, v in body.items()}  # fmt: skip
        results.append((part, index[at : at + n]))
        at += n
    return results

"""The HTTP app: `POST /predict` as a plain ASGI handler (the hot path: bytes → orjson →
numpy → model → orjson, no per-row objects), `POST /feedback` (live labels, joined to
the answers by the row ids every answer carries: `mlops.serving.feedback`), and FastAPI
for `/health`, `/ready`, `/metadata` and `/metrics`.

Every answer is JSON except `/metrics`; every refusal is `{"error": "one line"}` with a
4xx status. An unexpected failure is a 500 with one line (logged with its traceback),
and the server keeps serving.

One client must not stall the others: a declared length beyond the limit is refused
before the body is read, the body is counted as it arrives (`schema.Tally`: more brackets
or commas than a full batch can hold is refused at once, unparsed), and a body larger than
`INLINE_BYTES` is parsed and predicted in a small thread pool, so the event loop keeps
answering `/health` and small requests meanwhile. Small bodies stay on the loop: a thread
hop would cost more than their whole parse.

With a token (`--auth-token-env`), every path but `/health` and `/ready` needs
`Authorization: Bearer <token>` (else a 401); `/ready` tells an unauthenticated caller
only that it is ready, not what it serves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from mlops.live import live
from mlops.serving.auth import Guard
from mlops.serving.backends import describe
from mlops.serving.batching import Batcher
from mlops.serving.feedback import Ids, Stored, UnknownId, parse_feedback, store
from mlops.serving.schema import (
    MULTIPART,
    BadRequest,
    InputSpec,
    Tally,
    check_content_type,
    parse_request,
)

if TYPE_CHECKING:
    import numpy as np

    from mlops.serving.model import Served
    from mlops.serving.swap import State

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("mlops.serve")
WORKER_ENV = "MLOPS_SERVE_WORKER"  # set in each process of `mlops serve --workers`
OTHER_WORKERS_S = 1.0
SHADOW_SETTLE_S = 1.0  # /feedback waits this long at most for the shadow's queued scores
_JSON = [(b"content-type", b"application/json")]
_CLOSE = (b"connection", b"close")
INLINE_BYTES = 64 * 1024  # larger bodies are parsed and predicted off the event loop
FEEDBACK_ENTRY_BYTES = 256  # a /feedback body may hold max_batch entries of about this size
_NO_FEEDBACK = (
    "/feedback needs the server started with --feedback (it records every answer, so a "
    "label can join the answer it names)"
)
WORKERS = 2
OPEN_PATHS = ("/health", "/ready")  # answered without the token (probes)
_UNAUTHORIZED = b'{"error":"missing or wrong bearer token: send Authorization: Bearer <token>"}'
_WWW = (b"www-authenticate", b'Bearer realm="mlops serve"')


def create_app(state: State, token: str | None = None) -> ASGIApp:
    """The ASGI app serving `state` (its `current` version may be swapped at any time);
    with `token`, requests need `Authorization: Bearer <token>` (see the module doc)."""
    return _App(state, token)


Headers = dict[bytes, bytes]
Extra = tuple[tuple[bytes, bytes], ...]


class _App:
    """The ASGI callable: `/predict` here, the rest through FastAPI."""

    def __init__(self, state: State, token: str | None) -> None:
        self.state = state
        self.metrics = state.metrics
        self.rest = _fastapi_app(state)
        self.guard = Guard(token) if token else None
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="mlops-predict")
        self.dumps = orjson.dumps
        self.numpy_option = orjson.OPT_SERIALIZE_NUMPY
        self.ids = Ids()
        self.window = state.live_window
        self.batcher = (
            Batcher(state.batch_max, state.batch_wait_ms / 1000.0, self.metrics.coalesced)
            if state.batch_max
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.rest(scope, receive, send)
            return
        path = scope["path"]
        headers: Headers = dict(scope["headers"])
        if self.guard is not None and not self.guard.allows(headers.get(b"authorization")):
            if path not in OPEN_PATHS:
                await _respond(send, 401, _UNAUTHORIZED, (_WWW,))
                self.metrics.answered(self.metrics.endpoint(path), 401, 0.0)
                return
            if path == "/ready":  # ready, without saying what is served
                await _respond(send, 200, b'{"ready":true}')
                self.metrics.answered(path, 200, 0.0)
                return
        if path == "/predict":
            await self.predict(scope, receive, send, headers)
            return
        if path == "/feedback":
            await self.feedback(scope, receive, send, headers)
            return
        start, seen = time.perf_counter(), [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen[0] = message["status"]
            await send(message)

        try:
            await self.rest(scope, receive, send_status)
        finally:
            self.metrics.answered(self.metrics.endpoint(path), seen[0], time.perf_counter() - start)

    def work(
        self, raw: bytes, served: Served, content_type: str | None = None
    ) -> tuple[np.ndarray, dict[str, Any], Any, bytes, dict[str, int]]:
        """Parse, predict and serialise one body (on the loop or in the pool)."""
        x, unseen = self.parse(raw, served, content_type)
        body, index = served.predict(x)
        return self.answer(x, body, index, unseen)

    def parse(
        self, raw: bytes, served: Served, content_type: str | None = None
    ) -> tuple[np.ndarray, dict[str, int]]:
        """A body's rows, and the categories in them the version never saw."""
        unseen: dict[str, int] = {}
        return parse_request(raw, served.input, True, content_type, unseen), unseen

    def answer(
        self, x: np.ndarray, body: dict[str, Any], index: Any, unseen: dict[str, int]
    ) -> tuple[np.ndarray, dict[str, Any], Any, bytes, dict[str, int]]:
        """The body with its row ids, serialised."""
        body["ids"] = self.ids.take(len(x))
        return x, body, index, self.dumps(body, option=self.numpy_option), unseen

    async def batched(
        self, raw: bytes, served: Served, content_type: str | None
    ) -> tuple[np.ndarray, dict[str, Any], Any, bytes, dict[str, int]]:
        """Parse (large bodies and images off the loop), then predict in a coalesced
        model call (`--batch-max`)."""
        assert self.batcher is not None
        if len(raw) <= INLINE_BYTES and served.input.image is None:
            x, unseen = self.parse(raw, served)
        else:
            loop = asyncio.get_running_loop()
            x, unseen = await loop.run_in_executor(self.pool, self.parse, raw, served, content_type)
        body, index = await self.batcher.submit(served, x)
        return self.answer(x, body, index, unseen)

    async def predict(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        start = time.perf_counter()
        served = self.state.current  # read once: a swap never changes a request in flight
        if self.state.canary is not None:
            served = self.state.canary.pick(served)
        status, done, extra = 200, None, cast(Extra, ())
        batcher = self.batcher
        if batcher is not None:
            batcher.in_flight += 1
        try:
            if scope["method"] != "POST":
                raise BadRequest(405, "/predict takes POST")
            media = _text(headers.get(b"content-type"))
            check_content_type(media, served.input)
            form = (media or "").lower().startswith(MULTIPART)
            raw = await _read_body(receive, served.input, headers.get(b"content-length"), form)
            if batcher is not None:
                done = await self.batched(raw, served, media)
            elif len(raw) <= INLINE_BYTES and served.input.image is None:
                done = self.work(raw, served)
            else:  # large bodies, and every image decode, off the loop
                loop = asyncio.get_running_loop()
                done = await loop.run_in_executor(self.pool, self.work, raw, served, media)
            payload = done[3]
        except BadRequest as exc:
            status, payload = exc.status, self.dumps({"error": exc.message})
            extra = (_CLOSE,) if exc.close else ()
        except Exception as exc:
            log.exception("/predict failed")
            payload = self.dumps({"error": f"internal error: {type(exc).__name__}"})
            status, done = 500, None
        finally:
            if batcher is not None:
                batcher.in_flight -= 1
        await _respond(send, status, payload, extra)
        self.metrics.answered("/predict", status, time.perf_counter() - start)
        if done is not None:
            x, body, index, _, unseen = done
            self.metrics.predicted(served, len(x), index)
            if unseen:
                self.metrics.unseen(served, unseen)
            if self.state.sink is not None:
                self.state.sink.offer(served.name, served.version, x, body, body["ids"])
            if self.state.shadow is not None:
                self.state.shadow.offer(served, x, body["ids"])

    async def feedback(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        """Labels for earlier answers, by row id: checked, stored, the live window updated."""
        start = time.perf_counter()
        status = 200
        try:
            if scope["method"] != "POST":
                raise BadRequest(405, "/feedback takes POST")
            sink = self.state.sink
            if sink is None or not sink.answers:
                raise BadRequest(409, _NO_FEEDBACK)
            spec = self.state.current.input
            media = _text(headers.get(b"content-type"))
            if not (media or "").lower().startswith("application/json"):
                raise BadRequest(
                    415, f"content type {media!r}: send Content-Type: application/json"
                )
            limit = spec.max_batch * FEEDBACK_ENTRY_BYTES + 1024
            raw = await _read_limited(receive, headers.get(b"content-length"), limit)
            entries = parse_feedback(raw, spec.max_batch)
            loop = asyncio.get_running_loop()
            payload = self.dumps(await loop.run_in_executor(self.pool, self._label, entries))
        except BadRequest as exc:
            status, payload = exc.status, self.dumps({"error": exc.message})
        except Exception as exc:
            log.exception("/feedback failed")
            status, payload = 500, self.dumps({"error": f"internal error: {type(exc).__name__}"})
        await _respond(send, status, payload)
        self.metrics.answered("/feedback", status, time.perf_counter() - start)

    def _store(self, path: Any, entries: list[Any]) -> Stored:
        """Store labels; under `--workers`, an unknown id is looked for again for up to
        `OTHER_WORKERS_S`: its answer may still be in another worker's sink queue."""
        deadline = time.monotonic() + (OTHER_WORKERS_S if os.environ.get(WORKER_ENV) else 0)
        while True:
            try:
                return store(path, entries)
            except UnknownId:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _label(self, entries: list[Any]) -> dict[str, Any]:
        """Store labels (after the answers queued before them are written) and refresh
        the live window of each version they label."""
        sink = self.state.sink
        assert sink is not None
        if self.state.shadow is not None:  # its scores of the rows answered so far, too
            self.state.shadow.settle(SHADOW_SETTLE_S)
        if not sink.sync():
            raise BadRequest(503, "the sink is behind; send the labels again shortly")
        stored = self._store(sink.path, entries)
        for (model, version), count in stored.versions.items():
            self.metrics.feedback_labels.labels(model, str(version)).inc(count)
        # every version served now, too: a shadow's scores of these rows may still be on
        # their way to the sink, and its window must not wait for the next label to show
        state = self.state
        rival = state.challenger
        served = {(s.current.name, s.current.version) for s in (state, rival) if s is not None}
        for model, version in sorted(set(stored.versions) | served):
            task, n, value = live(sink.path, model, version, self.window)
            if n:
                self.metrics.live(model, version, task, n, value)
        return {"accepted": stored.accepted, "replaced": stored.replaced}


def _columns(served: Served) -> dict[str, str] | None:
    """A mixed table's columns by kind (numeric, categorical, text), as records carry them."""
    encoding = served.spec.column_encoding
    if encoding is None:
        return None
    kinds = [("numeric", encoding.numeric), ("categorical", encoding.categorical),
             ("text", encoding.text)]  # fmt: skip
    return {column: kind for kind, columns in kinds for column in columns}


async def _respond(send: Send, status: int, body: bytes, extra: Extra = ()) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_limited(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """The whole body, or a 413 as soon as it is longer than `limit` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"body of {int(declared)} bytes exceeds {limit}", close=True)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"body exceeds {limit} bytes", close=True)
        chunks.append(chunk)
        more = bool(message.get("more_body"))
    return b"".join(chunks)


def _text(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode("latin-1")


async def _read_body(
    receive: Receive, spec: InputSpec, declared: bytes | None, form: bool = False
) -> bytes:
    """The whole body, counted as it arrives: refused (413) as soon as it cannot be a
    batch, and at once when its declared length is beyond the limit (nothing read). A
    form upload's bytes are only measured (its files are not JSON)."""
    limit = spec.max_body_bytes
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"body of {int(declared)} bytes exceeds {limit}", close=True)
    tally = Tally(spec, counting=not form)
    message = await receive()
    body = message.get("body", b"")
    tally.add(body)
    if not message.get("more_body"):
        return bytes(body)
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        tally.add(chunk)
        chunks.append(chunk)
    return b"".join(chunks)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def metadata(state: State) -> dict[str, Any]:
    """What `/metadata` answers: the version served, its signature, and the swaps."""

    served = state.current
    spec = served.spec
    return {
        "model": served.name,
        "version": served.version,
        "stage": state.stage,
        "target": state.target,
        "sha256": served.sha256,
        **describe(served.built),
        "task": spec.task,
        "family": spec.family,
        "classes": spec.classes,
        "features": list(served.input.features),
        "columns": _columns(served),
        "input_shape": list(served.input.input_shape),
        "max_batch": served.input.max_batch,
        "signature": served.signature,
        "loaded_at": _iso(served.loaded_at),
        "started_at": _iso(state.started_at),
        "poll_s": state.poll_s or None,
        "last_poll": _iso(state.last_poll),
        "poll_error": state.poll_error,
        "swaps": [s | {"at": _iso(s["at"])} for s in state.swaps],
        "sink": None
        if state.sink is None
        else {"path": str(state.sink.path), "fraction": state.sink.fraction},
        "hyper": asdict(spec).get("hyper", {}),
        "challenger": _challenger(state),
        "batching": None
        if not state.batch_max
        else {"max_rows": state.batch_max, "wait_ms": state.batch_wait_ms},
    }


def _challenger(state: State) -> dict[str, Any] | None:
    """The `--shadow` or `--canary` version: its target, version and share."""
    rival = state.challenger
    if rival is None:
        return None
    return {
        "role": rival.role,
        "target": rival.target,
        "version": rival.current.version,
        "sha256": rival.current.sha256,
        "share": state.canary.share if state.canary else 1.0,
        "swaps": [s | {"at": _iso(s["at"])} for s in rival.swaps],
        "poll_error": rival.poll_error,
        # a shadow of the primary's own version compares nothing (after a promotion)
        "idle": rival.current.version == state.current.version,
    }


def _fastapi_app(state: State) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    api = FastAPI(title="mlops serve", docs_url=None, redoc_url=None, openapi_url=None)

    @api.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready")
    async def ready() -> JSONResponse:
        served = state.current
        return JSONResponse({"ready": True, "model": served.name, "version": served.version})

    @api.get("/metadata")
    async def meta() -> dict[str, Any]:
        return metadata(state)

    @api.get("/metrics")
    async def prometheus() -> Response:
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return api

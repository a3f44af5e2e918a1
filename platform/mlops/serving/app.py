"""The HTTP app: `POST /predict` as a plain ASGI handler (the hot path: bytes → orjson →
numpy → model → orjson, no per-row objects), and FastAPI for `/health`, `/ready`,
`/metadata` and `/metrics`.

Every answer is JSON except `/metrics`; every refusal is `{"error": "one line"}` with a
4xx status. An unexpected failure is a 500 with one line (logged with its traceback),
and the server keeps serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops.serving.schema import BadRequest, check_content_type, parse_request

if TYPE_CHECKING:
    from mlops.serving.swap import State

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("mlops.serve")
_JSON = [(b"content-type", b"application/json")]


def create_app(state: State) -> ASGIApp:
    """The ASGI app serving `state` (its `current` version may be swapped at any time)."""
    import orjson

    dumps, numpy_option = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
    rest = _fastapi_app(state)
    metrics = state.metrics
    perf = time.perf_counter

    async def respond(send: Send, status: int, body: bytes) -> None:
        headers = [*_JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def predict(scope: Scope, receive: Receive, send: Send) -> None:
        start = perf()
        served = state.current  # read once: a swap never changes a request in flight
        status, x, body = 200, None, None
        try:
            if scope["method"] != "POST":
                raise BadRequest(405, "/predict takes POST")
            check_content_type(_header(scope, b"content-type"))
            raw = await _read_body(receive, served.input.max_body_bytes)
            x = parse_request(raw, served.input)
            body, index = served.predict(x)
            payload = dumps(body, option=numpy_option)
        except BadRequest as exc:
            status, payload = exc.status, dumps({"error": exc.message})
        except Exception as exc:
            log.exception("/predict failed")
            status, payload = 500, dumps({"error": f"internal error: {type(exc).__name__}"})
        await respond(send, status, payload)
        metrics.answered("/predict", status, perf() - start)
        if status == 200 and x is not None and body is not None:
            metrics.predicted(served, len(x), index)
            if state.sink is not None:
                state.sink.offer(served.name, served.version, x, body)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict":
            await predict(scope, receive, send)
            return
        if scope["type"] != "http":
            await rest(scope, receive, send)
            return
        start, seen = perf(), [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen[0] = message["status"]
            await send(message)

        try:
            await rest(scope, receive, send_status)
        finally:
            metrics.answered(metrics.endpoint(scope["path"]), seen[0], perf() - start)

    return app


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise BadRequest(413, f"body exceeds {limit} bytes")
        return bytes(body)
    chunks, size = [body], len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def metadata(state: State) -> dict[str, Any]:
    """What `/metadata` answers: the version served, its signature, and the swaps."""
    from dataclasses import asdict

    from mlops.serving.backends import describe

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
    }


def _fastapi_app(state: State) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

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
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return api

"""The pure parts of `mlops serve`: request validation, the sink, the metrics and the swap
watcher, without a server, a store or torch."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops.errors import StoreError
from mlops.images import ImageFormat
from mlops.serving.app import create_app
from mlops.serving.metrics import NAMES, ServingMetrics
from mlops.serving.schema import BadRequest, InputSpec, Tally, check_content_type, parse_request
from mlops.serving.sink import Sink, read_sink
from mlops.serving.swap import State, Watcher
from tests.shapes import png_bytes

SPEC = InputSpec(("a", "b", "c", "d"), (2, 2), max_batch=3)


def parse(doc: Any) -> np.ndarray:
    return parse_request(doc if isinstance(doc, bytes) else json.dumps(doc).encode(), SPEC)


@pytest.mark.parametrize(
    "doc",
    [
        {"inputs": [[1, 2, 3, 4.5]]},
        {"inputs": [[[1, 2], [3, 4.5]]]},
        {"records": [{"d": 4.5, "c": 3, "b": 2, "a": 1}]},
    ],
)
def test_accepted_forms_give_one_float32_matrix(doc: Any) -> None:
    x = parse(doc)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert x.tolist() == [[1.0, 2.0, 3.0, 4.5]]


@pytest.mark.parametrize(
    ("doc", "status", "needle"),
    [
        (b'{"inputs": [[1,', 400, "invalid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        ({}, 400, "inputs"),
        ({"input": []}, 400, "unknown key 'input'"),
        ({"inputs": [[1, 2, 3, 4]], "records": []}, 400, "both"),
        ({"inputs": {"a": 1}}, 422, "must be a list"),
        ({"inputs": []}, 422, "empty batch"),
        ({"inputs": [[1, 2, 3, 4]] * 4}, 413, "3 rows"),
        ({"inputs": [[1, 2], [3, 4], [5, 6], [7, 8]]}, 413, "limit of 3 rows"),
        ({"inputs": [[1, 2, 3]]}, 422, "expected 4 values or shape [2, 2]"),
        ({"inputs": [[1, 2, 3, 4], [1]]}, 422, "different lengths"),
        ({"inputs": [[1, 2, "3", 4]]}, 422, '"3" is not a number'),
        ({"inputs": [[1, 2, None, 4]]}, 422, "null is not a number"),
        ({"inputs": [[1, 2, True, 4]]}, 422, "true is not a number"),
        ({"inputs": [[[1, 2], [True, 4]]]}, 422, "true is not a number"),
        ({"inputs": [[[1.5, 2], [3, False]]]}, 422, "false is not a number"),
        ({"inputs": [[1, 2, 3, 4], [[1, 2], [3, True]]]}, 422, "rows of different"),
        ({"records": [{"a": 1, "b": True, "c": 3, "d": 4}]}, 422, "true is not a number"),
        ({"inputs": [[1, 2, 1e39, 4]]}, 422, "float32"),
        ({"inputs": [[1, 2, 10**40, 4]]}, 422, "float32"),
        ({"inputs": [1, 2, 3]}, 422, "list of rows"),
        ({"inputs": [[[[1, 2], [3, 4]]]]}, 422, "nested too deep"),
        ({"records": [[1, 2, 3, 4]]}, 422, "records[0] must be an object"),
        ({"records": [{"a": 1, "b": 2, "c": 3}]}, 422, "missing feature 'd'"),
        ({"records": [{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}]}, 422, "unknown feature 'e'"),
        (b"[" * 2000 + b"]" * 2000, 413, "refused before parsing"),
    ],
)
def test_malformed_bodies_are_refused_in_one_line(doc: Any, status: int, needle: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(doc)
    assert caught.value.status == status
    assert needle in caught.value.message and "\n" not in caught.value.message


def test_oversized_body_and_content_types() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(b" " * (SPEC.max_body_bytes + 1), SPEC)
    assert caught.value.status == 413
    check_content_type("application/json; charset=utf-8")
    for bad in (None, "text/plain", "application/x-www-form-urlencoded"):
        with pytest.raises(BadRequest) as caught:
            check_content_type(bad)
        assert caught.value.status == 415


def _served(version: int) -> Any:
    spec = SimpleNamespace(classes=[0, 1, 2], task="classification")
    features = ("a", "b")
    return SimpleNamespace(
        name="m", version=version, sha256=f"{version:064d}", spec=spec, classification=True,
        input=SimpleNamespace(features=features),
        built=SimpleNamespace(predictor=SimpleNamespace(backend="onnx")),
    )  # fmt: skip


def test_sink_writes_sampled_rows_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    written: list[int] = []
    sink = Sink(path, 1.0, on_written=written.append)
    sink.describe("m", ("a", "b"))
    x = np.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    body = {"predictions": np.asarray([2, 0]), "probabilities": np.full((2, 3), 1 / 3)}
    sink.offer("m", 7, x, body)
    sink.close()
    frame = read_sink(path, "m")
    assert list(frame.columns) == ["ts", "model", "version", "prediction", "a", "b"]
    assert frame[["a", "b"]].to_numpy().tolist() == x.tolist()
    assert frame["prediction"].tolist() == [2, 0] and set(frame["version"]) == {7}
    assert str(frame["ts"].dt.tz) == "UTC" and sum(written) == 2


def test_sink_off_and_full(tmp_path: Path) -> None:
    quiet = Sink(tmp_path / "off.db", 0.0)
    quiet.offer("m", 1, np.zeros((1, 2), np.float32), {"predictions": [0]})
    quiet.close()
    assert read_sink(tmp_path / "off.db").empty
    dropped: list[int] = []
    full = Sink(tmp_path / "full.db", 1.0, on_dropped=dropped.append, capacity=1)
    full._queue.put(None)  # the writer stops: nothing drains the queue
    full._thread.join()
    full.offer("m", 1, np.zeros((1, 2), np.float32), {"predictions": [0]})  # fills it
    full.offer("m", 1, np.zeros((3, 2), np.float32), {"predictions": [0, 0, 0]})
    assert dropped == [3]


def test_metrics_expose_the_names_the_dashboard_reads() -> None:
    metrics = ServingMetrics("m")
    metrics.serving(_served(1), "production")
    metrics.answered("/predict", 200, 0.001)
    metrics.answered("/predict", 422, 0.0005)
    metrics.predicted(_served(1), 4, np.asarray([2, 2, 0, 1]))
    metrics.serving(_served(2), "production")
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    samples = {s.name for f in families.values() for s in f.samples}
    for name in NAMES:
        assert name in samples or f"{name}_bucket" in samples, name
    counts = {s.labels["class"]: s.value for s in families["mlops_predictions"].samples}
    assert counts == {"0": 1.0, "1": 1.0, "2": 2.0}
    (info,) = families["mlops_model_info"].samples  # v1's series went with the swap
    assert info.labels["version"] == "2"
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)


def test_watcher_swaps_once_and_keeps_serving_when_a_load_fails() -> None:
    state = State(_served(1), "m@production", "production", ServingMetrics("m"))
    holder = {"version": 1}
    calls: list[int] = []

    def load(version: int) -> Any:
        calls.append(version)
        if version == 3:
            raise ValueError("sha256 differs\nsecond line")
        return _served(version)

    watcher = Watcher(state, lambda: holder["version"], load, poll_s=1.0)
    assert watcher.check() is False and calls == []
    holder["version"] = 2
    assert watcher.check() is True and state.current.version == 2
    assert [(s["from"], s["to"]) for s in state.swaps] == [(1, 2)]
    holder["version"] = 3
    assert watcher.check() is False and watcher.check() is False
    assert calls == [2, 3] and state.current.version == 2  # not retried until it moves
    assert state.poll_error == "v3 not loaded: sha256 differs"

    holder["version"] = 4

    def flaky(version: int) -> Any:  # the store is down at the first attempt only
        calls.append(version)
        if calls.count(version) == 1:
            raise StoreError("tracking store: unreachable for 60 s")
        return _served(version)

    flaky_watcher = Watcher(state, lambda: holder["version"], flaky, poll_s=1.0)
    assert flaky_watcher.check() is False and state.current.version == 2
    assert flaky_watcher.check() is True and state.current.version == 4  # retried
    assert calls[-2:] == [4, 4]

    def down() -> int:
        raise ConnectionError("store unreachable")

    outage = Watcher(state, down, load, poll_s=1.0)
    before = time.time()
    assert outage.check() is False and state.poll_error == "store unreachable"
    assert state.last_poll is not None and state.last_poll <= before


# --- the ASGI app, driven without a server --------------------------------------------

DIGITS = InputSpec(tuple(f"px_{r}_{c}" for r in range(8) for c in range(8)), (8, 8), max_batch=1024)
EMPTY_ROWS = b'{"inputs": [' + b",".join([b"[]"] * 1_000_000) + b"]}"  # 3 MB, 1M rows
TOKEN = "t0ken-" + "x" * 40


def _app(token: str | None = None) -> Any:
    served = _served(1)
    served.input = DIGITS
    served.predict = lambda x: (
        {"model": "m", "version": 1, "predictions": np.zeros(len(x), np.int64)},
        np.zeros(len(x), np.int64),
    )
    return create_app(State(served, "m@production", "production", ServingMetrics("m")),
                      token=token)  # fmt: skip


def call(
    app: Any, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
    chunk: int = 65536, declared: bool = True,
) -> tuple[int, Any, int, int]:  # fmt: skip
    """One request through the ASGI app: (status, answer, body chunks read, chunks)."""

    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    sent: list[Any] = []
    read: list[bytes] = []
    given = {"content-type": "application/json"} | (headers or {})
    if declared and body:
        given["content-length"] = str(len(body))

    async def receive() -> dict[str, Any]:
        read.append(chunks[len(read)])
        return {"type": "http.request", "body": read[-1], "more_body": len(read) < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "method": "POST" if body else "GET",
             "headers": [(k.lower().encode(), v.encode()) for k, v in given.items()],
             "query_string": b"", "root_path": ""}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    data = b"".join(m.get("body", b"") for m in sent[1:])
    answer = data if path == "/metrics" and status == 200 else json.loads(data)
    return status, answer, len(read), len(chunks)


def test_a_body_of_empty_rows_is_refused_while_it_streams() -> None:
    """A million empty rows fit the byte limit of 1024 rows of 64 values; they are
    refused from their first chunk, before the rest is read, let alone parsed."""
    assert len(EMPTY_ROWS) < DIGITS.max_body_bytes
    status, answer, read, chunks = call(_app(), "/predict", EMPTY_ROWS)
    assert status == 413 and read == 1 < chunks, (status, answer, read)
    assert "refused before parsing" in answer["error"] and "1024" in answer["error"]


def test_bodies_beyond_any_batch_are_refused_before_parsing() -> None:
    row = b"[" + b",".join([b"0"] * 64) + b"]"
    cases = {
        "a million empty rows": EMPTY_ROWS,
        "one row of a million values": b'{"inputs": [[' + b"0," * 999_999 + b"0]]}",
        "a million empty records": b'{"records": [' + b",".join([b"{}"] * 1_000_000) + b"]}",
        "1025 rows": b'{"inputs": [' + b",".join([row] * 1025) + b"]}",
    }
    for case, raw in cases.items():
        with pytest.raises(BadRequest) as caught:
            parse_request(raw, DIGITS)
        assert caught.value.status == 413, case
        assert "refused before parsing" in caught.value.message, (case, caught.value.message)
    deep = {
        b"[" * 2000 + b"]" * 2000: (400, "depth limit"),  # orjson's own limit
        b'{"inputs": [' + b"[" * 900 + b"true" + b"]" * 900 + b"]}": (422, "too deep"),
    }
    for raw, (status, needle) in deep.items():
        with pytest.raises(BadRequest) as caught:
            parse_request(raw, DIGITS)
        assert (caught.value.status, needle in caught.value.message) == (status, True)
    full = b'{"inputs": [' + b",".join([row] * 1024) + b"]}"  # the largest batch passes
    assert parse_request(full, DIGITS).shape == (1024, 64)
    shaped = json.dumps({"inputs": [[[0.5] * 8] * 8] * 1024}).encode()
    assert parse_request(shaped, DIGITS).shape == (1024, 64)
    records = json.dumps({"records": [dict.fromkeys(DIGITS.features, 1.0)] * 1024}).encode()
    assert parse_request(records, DIGITS).shape == (1024, 64)


def test_a_declared_length_beyond_the_limit_is_refused_unread() -> None:
    body = b" " * (DIGITS.max_body_bytes + 1)
    status, answer, read, _ = call(_app(), "/predict", body)
    assert status == 413 and read == 0, (status, read)
    assert str(DIGITS.max_body_bytes) in answer["error"]
    status, _, read, _ = call(_app(), "/predict", body, declared=False)  # chunked: counted
    assert status == 413 and read > 0


def test_a_token_guards_every_endpoint_but_health_and_ready() -> None:
    app = _app(TOKEN)
    row = json.dumps({"inputs": [[0.0] * 64]}).encode()
    good = {"authorization": f"Bearer {TOKEN}"}
    for headers in ({}, {"authorization": f"Bearer {TOKEN}x"}, {"authorization": TOKEN},
                    {"authorization": f"Basic {TOKEN}"}, {"authorization": "Bearer "}):  # fmt: skip
        for path, body in (("/predict", row), ("/metadata", b""), ("/metrics", b""),
                           ("/nowhere", b"")):  # fmt: skip
            status, answer, read, _ = call(app, path, body, headers)
            assert status == 401 and read == 0, (headers, path, status)
            assert "bearer token" in answer["error"] and "\n" not in answer["error"]
        assert call(app, "/health", headers=headers)[:2] == (200, {"status": "ok"})
        assert call(app, "/ready", headers=headers)[:2] == (200, {"ready": True})
    assert call(app, "/predict", row, good)[0] == 200
    assert call(app, "/predict", row, {"authorization": f"bearer {TOKEN}"})[0] == 200
    assert call(app, "/ready", headers=good)[1] == {"ready": True, "model": "m", "version": 1}
    status, text, _, _ = call(app, "/metrics", headers=good)
    assert status == 200 and b'mlops_requests_total{endpoint="/predict",status="401"}' in text
    assert call(_app(), "/predict", row)[0] == 200  # no token configured: open


def test_an_image_row_may_leave_out_its_single_channel() -> None:
    """The README's example: a digits model reads 1x8x8 inputs; an 8x8 row is that image."""
    image = InputSpec(tuple(f"px_{i}" for i in range(64)), (1, 8, 8), max_batch=4)
    pixels = np.arange(64, dtype=np.float32)
    flat = parse_request(json.dumps({"inputs": [pixels.tolist()]}).encode(), image)
    eight = parse_request(json.dumps({"inputs": [pixels.reshape(8, 8).tolist()]}).encode(), image)
    full = parse_request(json.dumps({"inputs": [pixels.reshape(1, 8, 8).tolist()]}).encode(), image)
    np.testing.assert_array_equal(flat, eight)
    np.testing.assert_array_equal(flat, full)
    with pytest.raises(BadRequest, match=r"expected 64 values or shape \[1, 8, 8\] or \[8, 8\]"):
        parse_request(json.dumps({"inputs": [[[1.0] * 4] * 16]}).encode(), image)


# --- image models: base64 records and form uploads ------------------------------------

IMAGES = InputSpec(("image",), (3, 16, 12), max_batch=2, image=ImageFormat("image", (16, 12), 3))
BOUNDARY = "xYzBoundary"


def _form(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    lines = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        lines.append(
            f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    body = b"".join(lines) + f"--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def test_uploads_and_records_decode_as_training_does() -> None:
    files = [png_bytes("circle", seed=1), png_bytes("square", seed=2)]
    expected = IMAGES.image.rows(files)  # type: ignore[union-attr]
    body, media = _form(("file", "a.png", files[0]), ("file", "b.png", files[1]))
    check_content_type(media, IMAGES)
    np.testing.assert_array_equal(parse_request(body, IMAGES, content_type=media), expected)
    doc = {"records": [{"image": base64.b64encode(f).decode()} for f in files]}
    np.testing.assert_array_equal(parse_request(json.dumps(doc).encode(), IMAGES), expected)


@pytest.mark.parametrize(
    ("parts", "status", "message"),
    [
        ([("file", "x.png", b"not a picture")], 422, "file 'x.png': cannot decode the image"),
        ([("note", None, b"hello")], 422, "form field 'note' is not a file"),
        ([("file", f"{i}.png", png_bytes("circle")) for i in range(3)], 413, "more than 2 parts"),
        ([], 400, "with a file (send -F file=@image.png)"),
    ],
)
def test_bad_uploads_are_4xx_naming_the_file(
    parts: list[tuple[str, str | None, bytes]], status: int, message: str
) -> None:
    body, media = _form(*parts)
    with pytest.raises(BadRequest) as caught:
        parse_request(body, IMAGES, content_type=media)
    assert caught.value.status == status and message in caught.value.message


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"image": "@@not base64@@"}, "records[0].image: not base64"),
        ({"image": 5}, "records[0].image: expected base64 text, not a number"),
        ({}, "records[0]: missing 'image'"),
        ({"image": "", "label": "x"}, "records[0]: unknown key 'label'"),
        ({"image": base64.b64encode(b"GIF89a").decode()}, "cannot decode the image"),
    ],
)
def test_bad_image_records_are_422(record: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(json.dumps({"records": [record]}).encode(), IMAGES)
    assert caught.value.status == 422 and message in caught.value.message


def test_a_form_is_accepted_only_by_an_image_model() -> None:
    check_content_type("multipart/form-data; boundary=x", IMAGES)
    with pytest.raises(BadRequest) as caught:
        check_content_type("multipart/form-data; boundary=x", SPEC)
    assert caught.value.status == 415


def test_file_bytes_are_not_counted_as_json_brackets() -> None:
    noisy = png_bytes("circle") + b"[[[[,,,,{{{{" * 2000  # a file full of JSON punctuation
    Tally(IMAGES, counting=False).add(noisy)
    with pytest.raises(BadRequest):
        Tally(IMAGES).add(noisy)


def test_a_form_of_many_tiny_parts_is_refused_before_it_is_parsed() -> None:
    body, media = _form(*[("f", None, b"") for _ in range(3000)])
    with pytest.raises(BadRequest) as caught:
        parse_request(body, IMAGES, content_type=media)
    assert caught.value.status == 413 and "more than 2 parts" in caught.value.message


def test_an_image_model_says_how_to_send_images() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(b'{"instances": []}', IMAGES)
    assert '{"records": [{"image": ' in caught.value.message and "curl -F" in caught.value.message

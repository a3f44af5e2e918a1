"""A webhook receiver that verifies what it is sent: `mlops registry hooks listen`.

For trying hooks out and for scripts that react to the registry: each POST must carry a
valid, fresh signature (401 otherwise), a JSON body under 1 MiB (413/400), and is taken
once per event id (the `id` in the signed body, which `Idempotency-Key` repeats: a retry
or a replay is answered 200 and not reported again).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from registry.hooks import events

MAX_BODY = 1 << 20
IDLE_S = 10.0
_SEEN_KEYS = 100_000


class Receiver(ThreadingHTTPServer):
    """Verifies and reports events POSTed to any path."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], secret: bytes,
                 report: Callable[[dict[str, Any]], None]) -> None:  # fmt: skip
        super().__init__(address, _Handler)
        self.secret, self.report = secret, report
        self.seen: dict[str, None] = {}
        self.guard = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away, or sent nonsense, is not worth a traceback."""

    def take(self, key: str, event: dict[str, Any]) -> None:
        """Report `event` unless its key was already taken."""
        with self.guard:
            if key in self.seen:
                return
            self.seen[key] = None
            if len(self.seen) > _SEEN_KEYS:
                self.seen.pop(next(iter(self.seen)))
            self.report(event)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    timeout = IDLE_S  # a connection that sends nothing for this long is closed

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._answer(411, "a Content-Length is required")
        if length < 0 or length > MAX_BODY:
            return self._answer(413, f"the body is over {MAX_BODY} bytes")
        body = self.rfile.read(length)
        header = self.headers.get(events.SIGNATURE_HEADER, "")
        if not events.verify(self.server.secret, body, header, time.time()):
            return self._answer(401, "missing, wrong or stale signature")
        try:
            event = json.loads(body)
        except ValueError:
            return self._answer(400, "the body is not JSON")
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            return self._answer(400, "the body is not an event (an object with an id)")
        self.server.take(event["id"], event)  # the signed id: a replay is not a new event
        return self._answer(200, "ok")

    def _answer(self, status: int, text: str) -> None:
        data = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the events are the output."""

"""An example receiver on the standard library's ``http.server`` (docs/WEBHOOKS.md): verifies each POST
with ``verify`` and hands the delivery to ``on_delivery``. A sketch of what a platform runs, not a server to
put on the internet as it is (one process, the ids it saw kept in memory)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from webhook_verify import REPLAYED, VerificationError, verify

__all__ = ["make_server"]

MAX_BODY = 1 << 20


def make_server(secret: str, host: str, port: int, on_delivery: Callable[[dict[str, Any]], None],
                tolerance_s: float = 300) -> ThreadingHTTPServer:
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                return self._answer(413 if length else 400, {"error": "MALFORMED"})
            raw = self.rfile.read(length)
            with lock:  # check and remember the id as one step
                try:
                    delivery = verify(secret, dict(self.headers.items()), raw, tolerance_s=tolerance_s, seen=seen)
                except VerificationError as e:
                    # a replay was handled before: 2xx, so the sender stops retrying it
                    return self._answer(200 if e.code == REPLAYED else 400, {"error": e.code})
            try:
                on_delivery(delivery)
            except Exception:
                with lock:
                    seen.discard(delivery["delivery_id"])  # not handled: let the retry through
                return self._answer(503, {"error": "RETRY"})
            self._answer(200, {"ok": True})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
            pass

    return ThreadingHTTPServer((host, port), Handler)

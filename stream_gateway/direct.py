"""Synchronous inbound dispatch: a joined socket's data messages handled from the transport's data callback.

aiohttp parses a WebSocket's frames in ``WebSocketReader`` (size limits, masking, fragments, close codes) and
hands each parsed message to a ``WebSocketDataQueue`` (``feed_data(msg, size)``); the socket's read loop then
wakes up once per message to take it off the queue (``ws.receive()``): one task wake-up per buy click.
``DirectQueue`` is that queue with a consumer in front: ``feed_data`` first offers the message to ``direct``
(set by the gateway once the connection exists), which handles it right there and returns True, or declines
(False) and the message goes into aiohttp's queue for the read loop exactly as before. The gateway declines
everything whose handling awaits, and everything while its read loop is busy or has messages queued, so the
order of one connection's messages is kept (``stream_gateway/handler.py`` ``Gateway._direct``).

This relies on aiohttp internals (3.14): ``WebSocketResponse._post_start`` (copied in ``GatewaySocket``, with
this queue in place of aiohttp's), the queue's ``feed_data(msg, size)`` / ``_buffer`` and, for the compiled
reader, Cython's dispatch of a ``cpdef`` method to a Python subclass's override. ``supported()`` checks them
once per process with a real frame through a real reader and, if anything differs, logs once and every socket
takes the ordinary path. tests/unit/test_aiohttp_internals.py pins them and fails loudly on an upgrade that
changes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web_ws
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader

__all__ = ["DirectQueue", "Direct", "supported", "post_start_sha", "TESTED_AIOHTTP"]

log = logging.getLogger(__name__)

# (message) -> True when handled; the message is a WSMessage tuple: (type, data, extra)
Direct = Callable[[Any], bool]

TESTED_AIOHTTP = "3.14."  # the aiohttp release line whose internals this was written against


class DirectQueue(WebSocketDataQueue):
    """aiohttp's queue of parsed WebSocket messages, with a synchronous consumer (``direct``) in front."""

    __slots__ = ("direct",)

    def __init__(self, protocol: Any, limit: int, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(protocol, limit, loop=loop)
        self.direct: Direct | None = None

    def feed_data(self, data: Any, size: int) -> None:
        direct = self.direct
        if direct is None or self._buffer or not direct(data):
            super().feed_data(data, size)


class _Paused:
    """A stand-in for the protocol a queue pauses and resumes (the probe's)."""
    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_SUPPORTED: bool | None = None


def _probe() -> str:
    """Why the synchronous path cannot be used with this aiohttp, or "" when it can."""
    if not aiohttp.__version__.startswith(TESTED_AIOHTTP):
        return f"aiohttp {aiohttp.__version__} is not {TESTED_AIOHTTP}x"
    if getattr(web_ws, "WebSocketDataQueue", None) is not WebSocketDataQueue or \
            getattr(web_ws, "WebSocketReader", None) is not WebSocketReader:
        return "aiohttp.web_ws no longer uses WebSocketDataQueue / WebSocketReader"
    params = list(inspect.signature(web_ws.WebSocketResponse._post_start).parameters)
    if params != ["self", "request", "protocol", "writer"]:
        return f"WebSocketResponse._post_start takes {params}"
    seen: list[Any] = []

    def take(m: Any) -> bool:
        seen.append(m)
        return bool(m[1] == "a")

    loop = asyncio.new_event_loop()
    try:
        q = DirectQueue(_Paused(), 2 ** 16, loop=loop)
        q.direct = take
        reader = WebSocketReader(q, 1024, compress=False, decode_text=True)
        mask = b"\x01\x02\x03\x04"
        frames = b"".join(b"\x81\x81" + mask + bytes([c ^ mask[0]]) for c in b"ab")  # two masked texts
        reader.feed_data(frames)
        queued = [m for m, _ in q._buffer]
    except Exception as exc:  # anything unexpected: the ordinary path
        return f"probe failed: {exc!r}"
    finally:
        loop.close()
    if [(m[0], m[1]) for m in seen] != [(WSMsgType.TEXT, "a"), (WSMsgType.TEXT, "b")]:
        return f"the reader did not offer its messages to DirectQueue.feed_data: {seen!r}"
    if [(m[0], m[1]) for m in queued] != [(WSMsgType.TEXT, "b")]:
        return f"a declined message did not reach aiohttp's queue: {queued!r}"
    return ""


def supported() -> bool:
    """True when this aiohttp's internals are the ones ``DirectQueue`` relies on (checked once, logged once)."""
    global _SUPPORTED
    if _SUPPORTED is None:
        why = _probe()
        _SUPPORTED = not why
        if why:
            log.warning("synchronous WebSocket dispatch off (every message through aiohttp's read loop): %s", why)
    return _SUPPORTED


def post_start_sha() -> str:
    """sha256 of this aiohttp's ``WebSocketResponse._post_start`` source (the test compares it)."""
    return hashlib.sha256(inspect.getsource(web_ws.WebSocketResponse._post_start).encode()).hexdigest()

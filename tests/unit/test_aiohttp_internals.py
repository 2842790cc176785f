"""The aiohttp internals the synchronous inbound dispatch relies on (stream_gateway/direct.py).

When one of these fails after an aiohttp upgrade, read the new ``WebSocketResponse._post_start`` and
``_websocket/reader_*.py``: if ``GatewaySocket._post_start`` (stream_gateway/lingering.py) still matches the
original with only the queue swapped, and every parsed message still goes through the queue's
``feed_data(msg, size)``, update the pins here and ``direct.TESTED_AIOHTTP``. Until then the gateway logs once
and takes the ordinary path for every message (``direct.supported()`` is False): correct, only slower.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web_ws
from aiohttp._websocket import reader as ws_reader
from aiohttp._websocket.models import WebSocketError

from stream_gateway import direct
from stream_gateway.direct import DirectQueue
from stream_gateway.lingering import GatewaySocket

# sha256 of aiohttp 3.14's WebSocketResponse._post_start (the method GatewaySocket._post_start copies)
POST_START_SHA = "5537cb3f2ecae6ed9f4d27d6d9255adb414e81efcc4d23ede6bacd762d56ed93"


def _taker(seen: list[Any]) -> Any:
    """A ``direct`` that takes every message, recording its data."""
    def take(m: Any) -> bool:
        seen.append(m[1])
        return True
    return take


def _frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """One masked client frame (payload < 126 bytes)."""
    mask = os.urandom(4)
    head = bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload)))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _Protocol:
    _reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False


@pytest.fixture
def make_reader() -> Any:
    """(take, max_msg) -> (a DirectQueue offering to ``take``, aiohttp's reader feeding it)."""
    loop = asyncio.new_event_loop()

    def make(take: Any, max_msg: int = 1024) -> tuple[DirectQueue, Any]:
        q = DirectQueue(_Protocol(), 2 ** 16, loop=loop)
        q.direct = take
        return q, ws_reader.WebSocketReader(q, max_msg, compress=False, decode_text=True)
    yield make
    loop.close()


def test_the_pinned_aiohttp_internals_are_there() -> None:
    assert aiohttp.__version__.startswith(direct.TESTED_AIOHTTP), aiohttp.__version__
    assert direct.supported(), "stream_gateway.direct's probe failed: see the warning it logged"
    assert direct.post_start_sha() == POST_START_SHA, (
        "aiohttp's WebSocketResponse._post_start changed: compare it with GatewaySocket._post_start "
        "(stream_gateway/lingering.py), then update POST_START_SHA")
    # GatewaySocket replaces exactly these; the rest of WebSocketResponse reads them
    assert web_ws.WebSocketResponse._post_start is not GatewaySocket._post_start
    for name in ("_reader", "_parser", "_writer", "_ws_protocol", "_loop", "_max_msg_size", "_compress",
                 "_decode_text", "_heartbeat"):
        assert hasattr(web_ws.WebSocketResponse, name) or name in web_ws.WebSocketResponse.__init__.__code__.co_names
    for name in ("_reset_heartbeat", "_on_data_received", "_close_transport"):
        assert callable(getattr(web_ws.WebSocketResponse, name)), name


def test_the_compiled_reader_calls_the_python_override(make_reader: Any) -> None:
    """The reader in use (compiled when available) offers every parsed message to ``feed_data``; what
    ``direct`` declines lands in aiohttp's own buffer, and so does everything after it, in order."""
    seen: list[Any] = []

    def take(m: Any) -> bool:
        seen.append((m[0], m[1]))
        return m[0] is WSMsgType.TEXT and m[1] == "mine"

    q, reader = make_reader(take)
    assert type(reader).__module__.endswith("reader_c") or os.environ.get("AIOHTTP_NO_EXTENSIONS")
    data = (_frame(b"mine") + _frame(b"yours") + _frame(b"\x01\x02", 0x2) + _frame(b"p", 0x9) + _frame(b"mine")
            + _frame(b"\x03\xe8", 0x8))
    assert reader.feed_data(data) == (False, b"")
    assert seen == [(WSMsgType.TEXT, "mine"), (WSMsgType.TEXT, "yours")]  # then the buffer is not empty
    queued = [(m[0], m[1]) for m, _ in q._buffer]
    assert queued == [(WSMsgType.TEXT, "yours"), (WSMsgType.BINARY, b"\x01\x02"), (WSMsgType.PING, b"p"),
                      (WSMsgType.TEXT, "mine"), (WSMsgType.CLOSE, 1000)]  # never past a queued message


def test_fragments_are_joined_before_they_are_offered(make_reader: Any) -> None:
    seen: list[Any] = []
    q, reader = make_reader(_taker(seen))
    reader.feed_data(_frame(b"ab", 0x1, fin=False) + _frame(b"c", 0x9) + _frame(b"cd", 0x0))
    assert seen == [b"c", "abcd"]  # the interleaved ping first, then the whole message


def test_limits_and_protocol_errors_never_reach_direct(make_reader: Any) -> None:
    """An oversize message (1009) or a bad frame is an exception on the queue, as before: the read loop
    gets it from ``ws.receive()`` and closes with its code."""
    seen: list[Any] = []
    q, reader = make_reader(_taker(seen), max_msg=16)
    assert reader.feed_data(_frame(b"x" * 40)) == (True, b"")
    assert seen == [] and isinstance(q.exception(), WebSocketError)
    assert q.exception().code == WSCloseCode.MESSAGE_TOO_BIG
    q, reader = make_reader(_taker(seen))
    assert reader.feed_data(bytes((0x83, 0x80)) + b"\0\0\0\0") == (True, b"")  # reserved opcode 3
    assert seen == [] and q.exception().code == WSCloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("name", ["feed_data", "feed_eof", "read", "is_eof", "exception"])
def test_the_queue_api(name: str) -> None:
    assert callable(getattr(ws_reader.WebSocketDataQueue, name))

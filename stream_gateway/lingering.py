"""A WebSocket response that closes an oversize-message connection without resetting it.

When a client sends a message larger than the limit, aiohttp sends the 1009 close frame and closes
the socket at once, while the client is usually still writing the rest of that message. Closing a
TCP socket with unread data makes the kernel answer with a reset: the client's next write fails and
a WebSocket client reports 1006 (abnormal closure) although the 1009 frame was on its way.

``GatewaySocket`` closes such a connection the way RFC 6455 (7.1.1) and HTTP servers' "lingering
close" do: after the close frame it shuts down the write side (FIN), then keeps reading and
discarding whatever the client still sends until the client closes (or ``LINGER_S`` passes), and
only then closes the socket. Only the oversize case lingers; every other close is aiohttp's own.
Before any close frame, ``before_close`` sends the connection's coalesced frames (stream_gateway/outbox.py).

This hooks ``WebSocketResponse._close_transport`` and ``_req``, aiohttp internals (3.10-3.14);
tests/integration/test_ws_defects.py::test_oversize_frames_always_close_with_1009 fails loudly if an upgrade
changes them.

``GatewaySocket`` also starts its frame reader with ``stream_gateway.direct.DirectQueue`` in place of aiohttp's
queue (``_post_start``), so the gateway can handle a message synchronously (``set_direct``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from aiohttp.http import WebSocketReader, WebSocketWriter
from aiohttp.web_request import BaseRequest

from .direct import Direct, DirectQueue, supported

__all__ = ["GatewaySocket", "LINGER_S"]

LINGER_S = 2.0  # longest wait for the client to stop sending and close after a 1009


class _Discard(asyncio.Protocol):
    """Reads and drops what the client still sends; resolves ``done`` when the socket is gone."""

    def __init__(self, previous: asyncio.BaseProtocol, done: asyncio.Future[None]) -> None:
        self.previous = previous
        self.done = done

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the client closed its side: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
        self.previous.connection_lost(exc)  # aiohttp's handler bookkeeping (connection registry)


class GatewaySocket(web.WebSocketResponse):
    """``web.WebSocketResponse`` with a lingering close after 1009 (message too big)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._too_big = False
        self.lingering: asyncio.Future[None] | None = None
        self._direct_queue: DirectQueue | None = None
        # called before every close (ours and aiohttp's own): the connection's queued frames go first
        # (stream_gateway/outbox.py)
        self.before_close: Callable[[], None] | None = None

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        if not supported():  # aiohttp's internals are not the ones DirectQueue relies on (logged once)
            super()._post_start(request, protocol, writer)
            return
        # aiohttp 3.14's WebSocketResponse._post_start with DirectQueue in place of WebSocketDataQueue
        # (tests/unit/test_aiohttp_internals.py compares the source of the original)
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        loop = self._loop
        assert loop is not None
        self._reader = self._direct_queue = DirectQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=loop)
        self._parser = WebSocketReader(self._reader, self._max_msg_size, compress=bool(self._compress),
                                       decode_text=self._decode_text)
        cb = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=cb)
        request.protocol.keep_alive(False)  # disable HTTP keepalive for WebSocket

    def set_direct(self, direct: Direct | None) -> bool:
        """Offer every parsed message to ``direct`` first (None: no longer; False: this socket takes the
        ordinary path only)."""
        if self._direct_queue is None:
            return False
        self._direct_queue.direct = direct
        return True

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            self._too_big = True
        if self.before_close is not None:
            self.before_close()
        return await super().close(code=code, message=message, drain=drain)

    def _close_transport(self) -> None:
        req = self._req
        transport = req.transport if req is not None else None
        if not self._too_big or transport is None or transport.is_closing() or self.lingering is not None:
            super()._close_transport()
            return
        loop = asyncio.get_running_loop()
        self.lingering = loop.create_future()
        transport.set_protocol(_Discard(transport.get_protocol(), self.lingering))
        if transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()  # after the queued 1009 frame: the client sees it, then our FIN
        with contextlib.suppress(RuntimeError):
            transport.resume_reading()  # aiohttp may have paused it while its queue was full
        loop.call_later(LINGER_S, _give_up, transport)

    async def wait_lingering(self) -> None:
        """After a lingering close: until the client has closed (at most ``LINGER_S``)."""
        if self.lingering is not None:
            await asyncio.shield(self.lingering)


def _give_up(transport: asyncio.Transport) -> None:
    if not transport.is_closing():
        transport.abort()

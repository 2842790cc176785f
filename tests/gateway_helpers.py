"""Test helpers for the WebSocket gateway and the HTTP API: real sockets, no mocks.

- ``WsClient``: an aiohttp WebSocket with a reader task that records every decoded message (with its
  arrival time) so tests wait for conditions (``wait``) instead of sleeping.
- ``recv_until``: the same for a bare aiohttp WebSocket.
- ``RawWs``: a hand-made WebSocket over a non-blocking socket that reads only when asked (the slow
  consumer).
- ``Api``: a tiny JSON client for the HTTP API, and ``setup_room`` to create a room with products.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgpack
import orjson

from commerce.identity import mint_host_token, mint_viewer_token

JSON = "livesale.v1.json"
MSGPACK = "livesale.v1.msgpack"

Pred = Callable[[dict[str, Any]], bool]

# message types that are replies/personal, not sequenced room events
_NOT_EVENTS = {"snapshot", "resumed", "hello", "tick", "clock", "pong", "buy_result", "pay_result",
               "release_result", "order_confirmed", "ok", "error"}


def now_ms() -> float:
    return time.time() * 1000


def is_event(m: dict[str, Any]) -> bool:
    """A sequenced room event (critical lane): carries seq/epoch/ts."""
    return m.get("type") not in _NOT_EVENTS and "seq" in m and "epoch" in m


def decode(msg: aiohttp.WSMessage) -> dict[str, Any]:
    if msg.type == aiohttp.WSMsgType.TEXT:
        return orjson.loads(msg.data)
    if msg.type == aiohttp.WSMsgType.BINARY:
        return msgpack.unpackb(msg.data, raw=False)
    raise AssertionError(f"not a data frame: {msg.type} {msg.data!r}")


async def recv_until(ws: aiohttp.ClientWebSocketResponse, pred: Pred, timeout: float = 5.0,
                     seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Receive messages until one satisfies ``pred``; every message read is appended to ``seen``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError("no matching message within %.1f s (seen %r)" % (timeout, (seen or [])[-5:]))
        msg = await asyncio.wait_for(ws.receive(), left)
        if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
            continue
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise AssertionError(f"socket closed while waiting: {msg.type} {msg.data!r} code={ws.close_code}")
        m = decode(msg)
        if seen is not None:
            seen.append(m)
        if pred(m):
            return m


class WsClient:
    """A WebSocket client that records every message; waits are condition-based with timeouts."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.msgs: list[dict[str, Any]] = []
        self.frame_kinds: list[aiohttp.WSMsgType] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.pings = 0
        self._changed = asyncio.Event()
        self._rid = 0
        self._rid_prefix = os.urandom(3).hex()  # rids unique across clients unless a test picks them
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, session_or_client: Any, url: str = "/ws", protocol: str | None = JSON,
                      **kw: Any) -> WsClient:
        protocols = (protocol,) if protocol else ()
        ws = await session_or_client.ws_connect(url, protocols=protocols, **kw)
        return cls(ws, protocol == MSGPACK)

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    m = decode(msg)
                    m["_t"] = now_ms()
                    self.frame_kinds.append(msg.type)
                    self.msgs.append(m)
                elif msg.type == aiohttp.WSMsgType.PING:
                    self.pings += 1
                elif msg.type == aiohttp.WSMsgType.PONG:
                    pass
                else:
                    if msg.type == aiohttp.WSMsgType.CLOSE:
                        self.close_code = msg.data
                    else:
                        self.close_code = self.ws.close_code
                    break
                self._changed.set()
        except Exception:
            self.close_code = self.ws.close_code
        finally:
            if self.close_code is None:
                self.close_code = self.ws.close_code
            self.closed.set()
            self._changed.set()

    # -- sending ---------------------------------------------------------------------------------

    async def send(self, obj: Any) -> None:
        if self.binary:
            await self.ws.send_bytes(msgpack.packb(obj, use_bin_type=True))
        else:
            await self.ws.send_str(orjson.dumps(obj).decode())

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(data)

    def next_rid(self, prefix: str = "r") -> str:
        self._rid += 1
        return f"{prefix}-{self._rid_prefix}-{self._rid}"

    async def request(self, obj: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send with a fresh rid (unless given) and wait for the reply that echoes it."""
        obj = dict(obj)
        obj.setdefault("rid", self.next_rid(obj.get("type", "r")))
        start = len(self.msgs)
        await self.send(obj)
        return await self.wait(lambda m: m.get("rid") == obj["rid"], timeout, start=start)

    async def join(self, room: str, token: str | None = None, resume: dict[str, Any] | None = None,
                   timeout: float = 5.0) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "join", "room": room}
        if token is not None:
            msg["token"] = token
        if resume is not None:
            msg["resume"] = resume
        start = len(self.msgs)
        await self.send(msg)
        return await self.wait(lambda m: m["type"] in ("snapshot", "resumed", "error"), timeout, start=start)

    # -- waiting ---------------------------------------------------------------------------------

    async def wait(self, pred: Pred, timeout: float = 5.0, start: int = 0) -> dict[str, Any]:
        """The first recorded message at index >= start that satisfies ``pred`` (waiting if needed)."""
        idx = await self.wait_index(pred, timeout, start)
        return self.msgs[idx]

    async def wait_index(self, pred: Pred, timeout: float = 5.0, start: int = 0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        i = start
        while True:
            while i < len(self.msgs):
                if pred(self.msgs[i]):
                    return i
                i += 1
            if self.closed.is_set():
                raise AssertionError(f"closed ({self.close_code}) before a matching message; last: {self.msgs[-3:]}")
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no matching message within {timeout} s; last: {self.msgs[-3:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"the server did not close the socket within {timeout} s") from None
        return self.close_code

    def events(self, start: int = 0) -> list[dict[str, Any]]:
        return [m for m in self.msgs[start:] if is_event(m)]

    def of_type(self, t: str, start: int = 0) -> list[dict[str, Any]]:
        return [m for m in self.msgs[start:] if m.get("type") == t]

    async def close(self) -> None:
        if not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(), 3.0)
            except Exception:
                pass
        self._task.cancel()
        try:
            await self._task
        except BaseException:
            pass


# -- HTTP API ----------------------------------------------------------------------------------------

class Api:
    """JSON over HTTP against an aiohttp TestClient (relative paths) or a ClientSession + base url."""

    def __init__(self, client: Any, base: str = "") -> None:
        self.client = client
        self.base = base

    async def call(self, method: str, path: str, token: str | None = None, json: Any = None,
                   data: bytes | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kw: dict[str, Any] = {"headers": headers}
        if data is not None:
            kw["data"] = data
            headers["Content-Type"] = "application/json"
        elif json is not None:
            kw["json"] = json
        async with self.client.request(method, self.base + path, **kw) as r:
            raw = await r.read()
            body = orjson.loads(raw) if raw and r.content_type == "application/json" else raw
            return r.status, body

    async def ok(self, method: str, path: str, token: str | None = None, json: Any = None,
                 status: int | tuple[int, ...] = (200, 201)) -> Any:
        st, body = await self.call(method, path, token, json)
        allowed = (status,) if isinstance(status, int) else status
        assert st in allowed, f"{method} {path} -> {st} {body!r}"
        return body


async def setup_room(api: Api, host_token: str, room_id: str, products: int = 2,
                     unit_price: int = 1999) -> list[dict[str, Any]]:
    await api.ok("POST", "/api/rooms", host_token, {"room_id": room_id, "title": f"Room {room_id}"}, 201)
    out = []
    for i in range(products):
        out.append(await api.ok("POST", f"/api/rooms/{room_id}/products", host_token,
                                {"product_id": f"p{i}", "sku": f"{room_id}-sku{i}", "title": f"Item {i}",
                                 "unit_price": unit_price + i, "currency": "EUR",
                                 "description": "desc", "image_url": "https://example.com/i.png"}, 201))
    return out


def host_token(secret: str, host: str = "h1", rooms: tuple[str, ...] = ("*",)) -> str:
    return mint_host_token(secret, host, rooms)


def viewer(secret: str, name: str) -> tuple[str, str]:
    return mint_viewer_token(secret, name)


async def redis_now_ms(redis: Any) -> float:
    sec, usec = await redis.time()
    return int(sec) * 1000 + int(usec) / 1000


async def clock_offset_ms(redis: Any) -> float:
    """Redis TIME minus local wall clock (best of 5 by round trip)."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        t0 = now_ms()
        r = await redis_now_ms(redis)
        t1 = now_ms()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, r - (t0 + t1) / 2)
    assert best is not None
    return best[1]


# -- a raw WebSocket client that reads only when asked ------------------------------------------------

class RawWs:
    """RFC 6455 by hand over a non-blocking socket; nothing is read unless a method reads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    async def connect(cls, host: str, port: int, rcvbuf: int = 4096, protocol: str = JSON) -> RawWs:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: small window
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n")
        await loop.sock_sendall(sock, req.encode())
        self = cls(sock)
        while b"\r\n\r\n" not in self.buf:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return self

    async def send_frame(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, head + mask + masked)

    async def send_json(self, obj: Any) -> None:
        await self.send_frame(orjson.dumps(obj))

    async def _fill(self, n: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        while len(self.buf) < n:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        await self._fill(2, timeout)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            await self._fill(4, timeout)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            await self._fill(10, timeout)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        await self._fill(off + n, timeout)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return b0 & 0x0F, payload

    async def read_json_until(self, pred: Pred, timeout: float = 5.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            op, payload = await self.read_frame(max(0.01, deadline - loop.time()))
            if op == 0x1:
                m = orjson.loads(payload)
                if pred(m):
                    return m
            elif op == 0x8:
                raise ConnectionError(f"closed by server: {payload[:2]!r}")

    def close(self) -> None:
        self.sock.close()

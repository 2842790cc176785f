"""A lean asyncio WebSocket client for load generation, plus /proc helpers.

One ``asyncio.Protocol`` per connection parses RFC 6455 frame headers itself and hands complete
text/binary payloads to ``on_text(payload, now_ms)`` as bytes: nothing is decoded unless the
subclass asks for it. Client frames are masked with an all-zero key (legal; the payload bytes stay
as they are, so no XOR pass is spent on them). Pings are answered with pongs, so the server's
heartbeat never closes an idle load connection.

This module talks to servers only over TCP/HTTP/WebSocket: it imports nothing from the server.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
import struct
import time
from array import array
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "WSProto", "connect", "connect_many", "Histogram", "frame", "proc_cpu_s", "proc_rss_kib",
    "tree_pids", "core_busy_s", "listening_pid", "pin_to", "int_after", "now_ms", "http_json",
]

_MASK0 = b"\x00\x00\x00\x00"
_PACK_H = struct.Struct("!H").pack
_PACK_Q = struct.Struct("!Q").pack
_UNPACK_H = struct.Struct("!H").unpack_from
_UNPACK_Q = struct.Struct("!Q").unpack_from


def now_ms() -> float:
    return time.time() * 1000.0


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked (all-zero key) client frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _PACK_H(n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _PACK_Q(n)
    return head + _MASK0 + payload


def int_after(buf: bytes, key: bytes, start: int = 0) -> int | None:
    """The integer that follows ``key`` (e.g. b'"seq":') in a JSON byte string, by a bytes search."""
    i = buf.find(key, start)
    if i < 0:
        return None
    i += len(key)
    j = i
    n = len(buf)
    while j < n and 47 < buf[j] < 58:
        j += 1
    return int(buf[i:j]) if j > i else None


class WSProto(asyncio.Protocol):
    """Client side of one WebSocket. Subclasses override ``on_text`` (and maybe ``on_open``)."""

    __slots__ = ("transport", "buf", "opened", "closed", "close_code", "_req", "_hs", "_frag")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.opened: asyncio.Future = asyncio.get_event_loop().create_future()
        self.closed = False
        self.close_code: int | None = None
        self._req = b""
        self._hs = True
        self._frag: list[bytes] | None = None

    # -- overridables -----------------------------------------------------------------------
    def on_open(self) -> None:
        pass

    def on_text(self, payload: bytes, now: float) -> None:
        pass

    def on_close(self) -> None:
        pass

    # -- sending ----------------------------------------------------------------------------
    def send(self, payload: bytes) -> None:
        t = self.transport
        if t is not None and not self.closed:
            t.write(frame(payload))

    def send_raw(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.closed:
            t.write(data)

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame(_PACK_H(code), 0x8))
            self.transport.close()

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(self._req)

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        was_closed = self.closed
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during handshake: {exc!r}"))
        if not was_closed:
            self.on_close()

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        if self._hs:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            self._hs = False
            if not head.startswith(b"HTTP/1.1 101"):
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                self.transport.close()
                return
            self.opened.set_result(self)
            self.on_open()
            if not self.buf:
                return
            data = b""
        buf = self.buf + data if self.buf else data
        now = time.time() * 1000.0
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = _UNPACK_H(buf, pos + 2)[0]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = _UNPACK_Q(buf, pos + 2)[0]
                hl = 10
            end = pos + hl + ln
            if end > n:
                break
            op = b0 & 0x0F
            payload = buf[pos + hl:end]
            pos = end
            if op == 1 or op == 2:
                if b0 & 0x80:
                    self.on_text(payload, now)
                else:
                    self._frag = [payload]
            elif op == 0:
                if self._frag is not None:
                    self._frag.append(payload)
                    if b0 & 0x80:
                        whole = b"".join(self._frag)
                        self._frag = None
                        self.on_text(whole, now)
            elif op == 9:
                self.transport.write(frame(payload, 0xA))
            elif op == 8:
                self.close_code = _UNPACK_H(payload)[0] if len(payload) >= 2 else 1005
                if not self.closed:
                    self.transport.write(frame(payload[:2], 0x8))
                    self.transport.close()
                    self.closed = True
                    self.on_close()
                self.buf = b""
                return
        self.buf = buf[pos:] if pos < n else b""


def _request(host: str, port: int, path: str, subprotocol: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def connect(factory: Callable[[], WSProto], host: str, port: int, path: str = "/ws",
                  src: str | None = None, subprotocol: str | None = None, timeout: float = 20.0) -> WSProto:
    loop = asyncio.get_running_loop()
    proto = factory()
    proto._req = _request(host, port, path, subprotocol)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    # no Nagle: a small frame (click, announce) must not wait for the ACK of the previous one
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if src:
            # IP_BIND_ADDRESS_NO_PORT (24): choose the source port at connect(), per destination
            try:
                sock.setsockopt(socket.IPPROTO_IP, 24, 1)
            except OSError:
                pass
            sock.bind((src, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        await loop.create_connection(lambda: proto, sock=sock)
    except BaseException:
        sock.close()
        raise
    await asyncio.wait_for(proto.opened, timeout)
    return proto


async def connect_many(n: int, factory: Callable[[], WSProto], host: str, port: int, path: str = "/ws",
                       srcs: Iterable[str] | None = None, subprotocol: str | None = None,
                       concurrency: int = 200, retries: int = 5,
                       progress: Callable[[int], None] | None = None) -> list[WSProto]:
    """Open ``n`` connections, ``concurrency`` at a time, retrying refused/timed-out ones."""
    src_list = list(srcs) if srcs else [None]
    out: list[WSProto] = []
    sem = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with sem:
            for attempt in range(retries + 1):
                try:
                    out.append(await connect(factory, host, port, path, src_list[i % len(src_list)], subprotocol))
                    if progress and len(out) % 1000 == 0:
                        progress(len(out))
                    return
                except (TimeoutError, OSError, ConnectionError):
                    if attempt == retries:
                        failures += 1
                        return
                    await asyncio.sleep(0.2 * (attempt + 1) + random.random() * 0.2)

    await asyncio.gather(*(one(i) for i in range(n)))
    if failures:
        raise ConnectionError(f"{failures} of {n} connections failed")
    return out


class Histogram:
    """Latency histogram with 0.1 ms buckets up to 120 s (cheap to record, merge and ship)."""

    SCALE = 10
    CAP = 120_000 * SCALE

    def __init__(self, counts: array | None = None) -> None:
        self.counts = counts if counts is not None else array("Q", bytes(8 * (self.CAP + 1)))
        self.n = 0
        self.maxv = 0.0

    def add(self, ms: float) -> None:
        i = int(ms * 10.0)
        if i < 0:
            i = 0
        elif i > 1_200_000:
            i = 1_200_000
        self.counts[i] += 1
        self.n += 1
        if ms > self.maxv:
            self.maxv = ms

    def merge(self, other: Histogram) -> None:
        nz = [(i, c) for i, c in enumerate(other.counts) if c]
        for i, c in nz:
            self.counts[i] += c
        self.n += other.n
        self.maxv = max(self.maxv, other.maxv)

    def sparse(self) -> dict:
        return {"b": [(i, c) for i, c in enumerate(self.counts) if c], "n": self.n, "max": self.maxv}

    @classmethod
    def from_sparse(cls, d: dict) -> Histogram:
        h = cls()
        for i, c in d["b"]:
            h.counts[i] += c
        h.n = d["n"]
        h.maxv = d["max"]
        return h

    def pct(self, p: float) -> float:
        if not self.n:
            return float("nan")
        target = p / 100.0 * self.n
        acc = 0
        for i, c in enumerate(self.counts):
            if c:
                acc += c
                if acc >= target:
                    return i / self.SCALE
        return self.maxv

    def summary(self) -> dict:
        return {"n": self.n, "p50": self.pct(50), "p99": self.pct(99), "max": round(self.maxv, 1)}


# -- /proc helpers ------------------------------------------------------------------------------

_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TCK


def core_busy_s() -> dict[int, float]:
    """Busy (non-idle, non-iowait) seconds per core since boot, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                v = [int(x) for x in parts[1:]]
                out[int(parts[0][3:])] = (sum(v[:8]) - v[3] - v[4]) / _TCK
    return out


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_pids(pid: int) -> list[int]:
    """The process and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def listening_pid(port: int, candidates: Iterable[int] | None = None) -> int | None:
    """The pid owning the TCP socket listening on 127.0.0.1/0.0.0.0:``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    pids = candidates if candidates is not None else [int(d) for d in os.listdir("/proc") if d.isdigit()]
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return pid
        except OSError:
            continue
    return None


def pin_to(cores: set[int], pid: int = 0) -> bool:
    try:
        os.sched_setaffinity(pid, cores)
        return True
    except (AttributeError, OSError):
        return False


async def http_json(method: str, url: str, body: dict | None = None, token: str | None = None,
                    timeout: float = 30.0) -> tuple[int, dict]:
    """One HTTP/1.1 request with a JSON body over a fresh connection (no client library needed)."""
    import orjson
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname, u.port or 80
    path = u.path + (f"?{u.query}" if u.query else "")
    data = orjson.dumps(body) if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            f"Content-Length: {len(data)}"]
    if body is not None:
        head.append("Content-Type: application/json")
    if token:
        head.append(f"Authorization: Bearer {token}")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    status = int(status_line.split()[1])
    headers, _, payload = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in headers.lower():
        out, p = b"", payload
        while p:
            size_s, _, p = p.partition(b"\r\n")
            size = int(size_s.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out += p[:size]
            p = p[size + 2:]
        payload = out
    try:
        return status, orjson.loads(payload) if payload.strip() else {}
    except orjson.JSONDecodeError:
        return status, {"raw": payload.decode(errors="replace")}


def run_and_report(run: Any, cfg: dict, json_path: str | None) -> dict:
    """Run a generator's ``run(cfg)`` on uvloop (when installed), print its JSON result, save it."""
    import asyncio

    import orjson

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    res = asyncio.run(run(cfg))
    out = orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    print(out)
    if json_path:
        with open(json_path, "w") as f:
            f.write(out)
    return res

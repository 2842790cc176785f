"""The floor of CPU per buy click: what one click costs a Python gateway process that does nothing else.

    python -m loadtest.floor                      # 8,000 conns, 20,000 clicks/s, 10 s per server kind
    python -m loadtest.floor --quick              # 1,000 conns, 2,000 clicks/s, 3 s (under a minute)
    python -m loadtest.floor --kinds raw --conns 4000 --rate 10000 --json floor.json

A flash-sale burst as the gateway sees it: every buyer's click arrives alone on its socket (one segment,
one recv()), and its answer leaves alone (one send()). This benchmark keeps exactly that I/O and drops
everything else, so the server CPU it measures per click is the least any Python process on uvloop can
spend; the part of it that is kernel time (stime) no Python change can remove.

Loopback caveat: the TCP receive processing of a segment runs on the sending core, inside its send()
(softirq in process context; without CONFIG_IRQ_TIME_ACCOUNTING it is charged to the sender's stime). So
the server's stime holds the client's receive of each answer, and the client's stime the server's receive
of each click: about even trades (one segment of each per click), and a real NIC would put the click's
receive on the server's core instead. Core busy shares (/proc/stat) show all of it whoever is charged.

Servers (one subprocess per kind, ``taskset -c 0``, uvloop, 127.0.0.1 on a free port), one after the other:

- ``raw``: an ``asyncio.Protocol``. ``data_received`` counts complete click frames by their fixed size
  (``CLICK_LEN``, the remainder kept) and calls ``transport.write(ANSWER)`` once per click: a
  precomputed server text frame. One callback + one write per click: the floor.
- ``aiohttp``: ``web.WebSocketResponse(compress=False)`` after a real HTTP upgrade, ``await ws.receive()``
  / ``await ws.send_str(ANSWER_TEXT)`` in a loop: aiohttp's ordinary per-message path, no application.
- ``parse``: ``raw`` plus what every real click needs: unmask the payload, ``orjson.loads`` it, build the
  answer dict with the request's ``rid``, ``orjson.dumps`` it and frame it.

The ``raw`` and ``parse`` servers answer the client's upgrade request with a canned ``101`` (no
Sec-WebSocket-Accept), so that one client serves all kinds; that happens before any measurement.

Client: ``procs`` processes (spawned, pinned to core 1, uvloop), each opening its share of ``conns``
connections from its own source address 127.0.0.(2+i) (lean.WSProto's handshake, then fixed-size
counting of answer bytes). Each sends its share of ``rate`` clicks/s on a schedule (every ``TICK`` s the
clicks that are due, round-robin over its connections, one ``transport.write`` per click, a masked
client text frame of ``CLICK_LEN`` bytes) and keeps one send timestamp per outstanding click per
connection: the answer's arrival gives the click -> answer latency (every click is sampled).

Phases per kind: connect all; a warm-up of ``warm`` s at the rate (not measured); then the measured
``seconds``. The server's utime and stime (/proc/<pid>/stat fields 14 and 15, clock ticks: 10 ms
resolution at 100 Hz) are read while it is idle just before the first click and after every client has
its last answer (or gave up after ``drain_s``): CPU per click = (utime + stime) / answers, nothing else
ran in between. ``sched_us_per_click`` is the same from /proc/<pid>/task/*/schedstat (ns precision, no
user/kernel split). Core busy shares come from /proc/stat over the sending window; core 0 busy above the
server's own CPU share is kernel work not charged to the process (softirqs, timers: delayed ACKs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from . import lean
from .serverproc import ROOT, _taskset, free_port
from .storm import WorkerPool, run_worker, split

__all__ = ["KINDS", "plan", "run", "run_kind", "table", "main", "cpu_times"]

KINDS = ("raw", "aiohttp", "parse")
SERVER_CORES = {0}
CLIENT_CORES = [1]
HOST = "127.0.0.1"
TICK = 0.002                        # s between a client process's sends of the clicks that are due
LEAD = 0.3                          # s between the idle CPU reading and the first click
_TCK = os.sysconf("SC_CLK_TCK")
Log = Callable[[str], None]

# -- the frames ---------------------------------------------------------------------------------------------

CLICK_MASK = b"\x5a\xa5\x3c\xc3"    # a real (non-zero) mask key: servers that unmask pay for it
CLICK_BODY = orjson.dumps({"type": "buy", "rid": "r000001", "sale": "s-7f3a9c2e", "qty": 1})
ANSWER_DICT = {"type": "buy_result", "rid": "r000001", "code": "RESERVED", "hold": "h-5d2c9a7e41b04f38",
               "expires_at": 1764190000000}
ANSWER_BODY = orjson.dumps(ANSWER_DICT)
ANSWER_TEXT = ANSWER_BODY.decode()


def _unmask(key: bytes, payload: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key`` (RFC 6455 5.3), as one big-int operation."""
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def click_frame(body: bytes = CLICK_BODY, key: bytes = CLICK_MASK) -> bytes:
    """A masked client text frame (payload < 126 bytes)."""
    return bytes((0x81, 0x80 | len(body))) + key + _unmask(key, body)


def answer_frame(body: bytes = ANSWER_BODY) -> bytes:
    """An unmasked server text frame (payload < 126 bytes), as aiohttp's send_str writes it."""
    return bytes((0x81, len(body))) + body


CLICK = click_frame()
ANSWER = answer_frame()
CLICK_LEN, ANSWER_LEN = len(CLICK), len(ANSWER)
_HANDSHAKE_END = b"\r\n\r\n"
_SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

# -- the servers (run in the subprocess) ------------------------------------------------------------------


class RawServer(asyncio.Protocol):
    """One callback + one write per click: counts whole click frames, answers each with ``ANSWER``."""

    __slots__ = ("transport", "rem", "head")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.rem = 0
        self.head: bytes | None = b""    # the upgrade request until its end; None after

    def connection_made(self, transport: Any) -> None:  # uvloop's TCPTransport: not an asyncio.Transport
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as aiohttp does

    def _handshake(self, data: bytes) -> bytes | None:
        """Buffer the upgrade request; once whole, answer 101 and return what followed it."""
        assert self.head is not None and self.transport is not None
        self.head += data
        end = self.head.find(_HANDSHAKE_END)
        if end < 0:
            return None
        rest, self.head = self.head[end + 4:], None
        self.transport.write(_SWITCH)
        return rest

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            rest = self._handshake(data)
            if not rest:
                return
            data = rest
        k, self.rem = divmod(self.rem + len(data), CLICK_LEN)
        write = self.transport.write  # type: ignore[union-attr]
        for _ in range(k):
            write(ANSWER)


class ParseServer(RawServer):
    """``raw`` plus unmask, ``orjson.loads`` of the click, ``orjson.dumps`` of the answer, framing."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        super().__init__()
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            rest = self._handshake(data)
            if not rest:
                return
            data = rest
        buf = self.buf + data if self.buf else data
        n, pos = len(buf), 0
        write = self.transport.write  # type: ignore[union-attr]
        while n - pos >= CLICK_LEN:  # header (2) + mask key (4) + payload
            msg = orjson.loads(_unmask(buf[pos + 2:pos + 6], buf[pos + 6:pos + CLICK_LEN]))
            body = orjson.dumps({"type": "buy_result", "rid": msg["rid"], "code": "RESERVED",
                                 "hold": ANSWER_DICT["hold"], "expires_at": ANSWER_DICT["expires_at"]})
            write(bytes((0x81, len(body))) + body)
            pos += CLICK_LEN
        self.buf = buf[pos:]


async def _aiohttp_ws(request: Any) -> Any:
    from aiohttp import WSMsgType, web

    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(ANSWER_TEXT)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    return ws


async def _serve(kind: str, port: int) -> None:
    """Listen on HOST:port, say ``ready`` on stdout, serve until killed."""
    if kind == "aiohttp":
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/ws", _aiohttp_ws)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=4096).start()
    else:
        factory = RawServer if kind == "raw" else ParseServer
        await asyncio.get_running_loop().create_server(factory, HOST, port, backlog=4096)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def serve(kind: str, port: int) -> None:
    import uvloop

    uvloop.run(_serve(kind, port))


class Server:
    """The server subprocess of one kind: ``taskset -c 0 python -m loadtest.floor --serve KIND``."""

    def __init__(self, kind: str) -> None:
        self.kind, self.port = kind, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Server:
        cmd = _taskset(SERVER_CORES) + [sys.executable, "-m", "loadtest.floor", "--serve", self.kind,
                                        "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.proc.returncode}")
            if select.select([self.proc.stdout], [], [], 0.1)[0] and self.proc.stdout.readline().strip() == b"ready":
                return self
        raise RuntimeError(f"{self.kind} server not ready after {timeout} s")

    @property
    def pid(self) -> int:
        """The listening process (taskset execs it: the same pid, checked)."""
        assert self.proc is not None
        return lean.listening_pid(self.port, lean.tree_pids(self.proc.pid)) or self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# -- /proc --------------------------------------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds: /proc/<pid>/stat fields 14 and 15."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TCK, int(fields[12]) / _TCK


def sched_ns(pid: int) -> int | None:
    """Time on CPU of all the process's threads in ns (/proc/<pid>/task/*/schedstat), None if unavailable."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


# -- the client (in the worker processes) -------------------------------------------------------------------


class Tally:
    """A client process's answers in the current phase."""

    __slots__ = ("answers", "last", "lat")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.answers = 0
        self.last = 0.0
        self.lat = array("d")            # click -> answer, ms


class Clicker(lean.WSProto):
    """One buyer's socket: ``click()`` writes one click frame; answers are counted by their fixed size."""

    __slots__ = ("tally", "sent_at", "rem")

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally
        self.sent_at: deque[float] = deque()
        self.rem = 0

    def click(self) -> None:
        t = self.transport
        if t is not None and not self.closed:
            self.sent_at.append(time.time())
            t.write(CLICK)

    def data_received(self, data: bytes) -> None:
        if self._hs:
            super().data_received(data)  # the 101; any frame behind it reaches on_text
            return
        k, self.rem = divmod(self.rem + len(data), ANSWER_LEN)
        if k:
            self._answered(k, time.time())

    def on_text(self, payload: bytes, now: float) -> None:
        self._answered(1, now / 1000.0)

    def _answered(self, k: int, now: float) -> None:
        t, sent_at = self.tally, self.sent_at
        for _ in range(min(k, len(sent_at))):
            t.lat.append((now - sent_at.popleft()) * 1000.0)
        t.answers += k
        t.last = now


async def _clicks(conns: list[Clicker], tally: Tally, start: float, count: int, seconds: float,
                  drain_s: float) -> dict[str, Any]:
    """Send ``count`` clicks evenly over ``seconds`` from wall time ``start``, then wait for the answers."""
    tally.reset()
    for c in conns:
        c.sent_at.clear()
    cpu0 = lean.proc_cpu_s(os.getpid())
    await asyncio.sleep(max(0.0, start - time.time()))
    rate = count / seconds
    sent, i, n = 0, 0, len(conns)
    first = time.time()
    while sent < count:
        due = min(count, int((time.time() - start) * rate) + 1)
        while sent < due:
            conns[i].click()
            i = i + 1 if i + 1 < n else 0
            sent += 1
        if sent < count:
            await asyncio.sleep(TICK)
    deadline = time.time() + drain_s
    while tally.answers < sent and time.time() < deadline:
        await asyncio.sleep(0.005)
    return {"sent": sent, "answers": tally.answers, "first": first, "last": tally.last, "lat": tally.lat,
            "stray_bytes": sum(c.rem for c in conns), "closed": sum(1 for c in conns if c.closed),
            "client_cpu_s": lean.proc_cpu_s(os.getpid()) - cpu0}


async def _worker_main(idx: int, cfg: dict[str, Any], pipe: Any) -> None:
    loop = asyncio.get_running_loop()
    tally = Tally()
    conns: list[Clicker] = []
    try:
        opened = await lean.connect_many(cfg["n"], lambda: Clicker(tally), HOST, cfg["port"], "/ws",
                                         [f"127.0.0.{2 + idx % 250}"], concurrency=100)
        conns = [c for c in opened if isinstance(c, Clicker)]
        pipe.send({"ready": len(conns)})
    except Exception as exc:
        pipe.send({"ready": 0, "error": repr(exc)})
    while True:
        cmd = await loop.run_in_executor(None, pipe.recv)
        if isinstance(cmd, dict) and cmd.get("cmd") == "clicks":
            pipe.send(await _clicks(conns, tally, cmd["start"], cmd["count"], cmd["seconds"], cmd["drain_s"]))
        elif cmd == "stop":
            for c in conns:
                c.close()
            await asyncio.sleep(0.1)
            pipe.send("bye")
            return


def _worker(idx: int, cfg: dict[str, Any], pipe: Any) -> None:
    run_worker(_worker_main, idx, cfg, pipe)


def _shutdown(pool: WorkerPool, timeout: float = 5.0) -> None:
    """Ask the client processes to stop, join them within ``timeout``, terminate the rest."""
    for p in pool.pipes:
        with contextlib.suppress(BrokenPipeError, OSError):
            p.send("stop")
    deadline = time.monotonic() + timeout
    for w in pool.workers:
        w.join(max(0.1, deadline - time.monotonic()))
        if w.is_alive():
            w.terminate()
            w.join(2)


# -- the controller -----------------------------------------------------------------------------------------


def plan(quick: bool = False, conns: int | None = None, rate: float | None = None, seconds: float | None = None,
         kinds: list[str] | None = None, procs: int | None = None, warm: float | None = None,
         drain_s: float = 5.0) -> dict[str, Any]:
    n = conns or (1000 if quick else 8000)
    return {"conns": n, "rate": rate or (2000.0 if quick else 20000.0), "seconds": seconds or (3.0 if quick else 10.0),
            "warm": 1.0 if warm is None else warm, "kinds": list(kinds or KINDS),
            "procs": procs or min(4, max(2, math.ceil(n / 2000))), "drain_s": drain_s, "quick": quick}


def _pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100.0 * len(sorted_vals)))]


async def _core_shares(start: float, seconds: float) -> dict[int, float]:
    """Each core's busy share over [start, start + seconds] (/proc/stat)."""
    await asyncio.sleep(max(0.0, start - time.time()))
    b0, t0 = lean.core_busy_s(), time.time()
    await asyncio.sleep(seconds)
    b1, t1 = lean.core_busy_s(), time.time()
    return {c: round((b1[c] - b0.get(c, 0.0)) / (t1 - t0), 3) for c in b1}


async def _phase(pool: WorkerPool, cfg: dict[str, Any], seconds: float,
                 ) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """All client processes click ``cfg['rate']`` x ``seconds`` in total from the same instant, ``LEAD`` s
    from now; their stats, and the cores' busy shares over the sending window."""
    start = time.time() + LEAD
    counts = split(int(cfg["rate"] * seconds), len(pool.pipes))
    for p, count in zip(pool.pipes, counts, strict=True):
        p.send({"cmd": "clicks", "start": start, "count": count, "seconds": seconds, "drain_s": cfg["drain_s"]})
    shares = asyncio.create_task(_core_shares(start, seconds))
    try:
        replies = [await pool.recv(p, seconds + cfg["drain_s"] + 60) for p in pool.pipes]
    finally:
        if not shares.done():
            shares.cancel()
    return replies, await shares


async def run_kind(kind: str, cfg: dict[str, Any], log: Log = print) -> dict[str, Any]:
    """Start the ``kind`` server, connect, warm up, measure; the server and clients are gone on return."""
    server = Server(kind)
    pool = WorkerPool(_worker, [])
    try:
        server.start()
        pid = server.pid
        pool.cfgs = [{"n": n, "port": server.port, "client_cores": CLIENT_CORES}
                     for n in split(cfg["conns"], cfg["procs"])]
        ready = await pool.start(timeout=120)
        if sum(r.get("ready", 0) for r in ready) != cfg["conns"]:
            raise RuntimeError(f"{kind}: connections not opened: {ready}")
        log(f"{kind}: server pid {pid} on :{server.port}, {cfg['conns']} connections open; warm-up {cfg['warm']} s")
        warm = (await _phase(pool, cfg, cfg["warm"]))[0] if cfg["warm"] > 0 else []
        cpu0, ns0 = cpu_times(pid), sched_ns(pid)       # the server is idle: the clicks start LEAD s later
        log(f"{kind}: measuring {cfg['rate']:,.0f} clicks/s x {cfg['seconds']} s")
        stats, busy = await _phase(pool, cfg, cfg["seconds"])
        cpu1, ns1 = cpu_times(pid), sched_ns(pid)       # every client has its last answer (or gave up)
        return _summary(kind, cfg, stats, warm, cpu0, cpu1, ns0, ns1, busy)
    finally:
        _shutdown(pool)
        server.stop()


def _summary(kind: str, cfg: dict[str, Any], stats: list[dict[str, Any]], warm: list[dict[str, Any]],
             cpu0: tuple[float, float], cpu1: tuple[float, float], ns0: int | None, ns1: int | None,
             busy: dict[int, float]) -> dict[str, Any]:
    sent = sum(s["sent"] for s in stats)
    answers = sum(s["answers"] for s in stats)
    first = min(s["first"] for s in stats)
    last = max((s["last"] for s in stats if s["answers"]), default=first)
    lat = sorted(v for s in stats for v in s["lat"])
    utime, stime = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    per = 1e6 / answers if answers else float("nan")

    return {
        "kind": kind, "conns": cfg["conns"], "procs": cfg["procs"], "offered_per_s": cfg["rate"],
        "seconds": cfg["seconds"], "sent": sent, "answers": answers, "missing": sent - answers,
        "stray_bytes": sum(s["stray_bytes"] for s in stats), "closed": sum(s["closed"] for s in stats),
        "window_s": round(last - first, 3),
        "answered_per_s": round(answers / (last - first), 1) if last > first else float("nan"),
        "server_utime_s": round(utime, 3), "server_stime_s": round(stime, 3),
        "cpu_us_per_click": round((utime + stime) * per, 1), "kernel_us_per_click": round(stime * per, 1),
        "user_us_per_click": round(utime * per, 1),
        "sched_us_per_click": round((ns1 - ns0) / 1000 / answers, 1) if answers and ns0 is not None
        and ns1 is not None else None,
        "p50_ms": round(_pct(lat, 50), 3), "p99_ms": round(_pct(lat, 99), 3),
        "max_ms": round(lat[-1], 3) if lat else float("nan"),
        "core0_busy": busy.get(0), "core1_busy": busy.get(1),
        "client_cpu_us_per_click": round(sum(s["client_cpu_s"] for s in stats) * per, 1),
        "warmup": {"sent": sum(s["sent"] for s in warm), "answers": sum(s["answers"] for s in warm)},
    }


async def run(cfg: dict[str, Any], log: Log = print) -> dict[str, Any]:
    """Measure every kind in ``cfg['kinds']``, one after the other."""
    results = [await run_kind(kind, cfg, log) for kind in cfg["kinds"]]
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version(), "kernel": platform.release()}
    return {"config": cfg, "machine": machine, "results": results}


def _f(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{nd}f}"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def table(results: list[dict[str, Any]]) -> list[str]:
    """The markdown table of a run's results."""
    out = ["| server | conns | offered/s | answered/s | CPU µs/click | of which kernel (stime) | user "
           "| p50 ms | p99 ms | core0 busy | core1 busy |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        out.append(f"| {r['kind']} | {r['conns']:,} | {_f(r['offered_per_s'], 0)} | {_f(r['answered_per_s'], 0)} "
                   f"| {_f(r['cpu_us_per_click'])} | {_f(r['kernel_us_per_click'])} | {_f(r['user_us_per_click'])} "
                   f"| {_f(r['p50_ms'], 2)} | {_f(r['p99_ms'], 2)} | {_share(r['core0_busy'])} "
                   f"| {_share(r['core1_busy'])} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.floor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int)
    ap.add_argument("--rate", type=float, help="clicks/s in total")
    ap.add_argument("--seconds", type=float, help="measured seconds per server kind")
    ap.add_argument("--warm", type=float, help="warm-up seconds at the rate (default 1)")
    ap.add_argument("--procs", type=int, help="client processes (default 2-4)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, of " + ",".join(KINDS))
    ap.add_argument("--quick", action="store_true", help="1,000 conns, 2,000 clicks/s, 3 s")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve(a.serve, a.port)
        return 0
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    if bad := [k for k in kinds if k not in KINDS]:
        ap.error(f"unknown kinds {bad}")
    cfg = plan(a.quick, a.conns, a.rate, a.seconds, kinds, a.procs, a.warm)
    res = asyncio.run(run(cfg))
    if a.json:
        with open(a.json, "wb") as f:
            f.write(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    print("\n".join(table(res["results"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

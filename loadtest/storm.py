"""Reconnect storm: N viewers on two gateway processes drop at the same instant and reconnect with resume.

    python -m loadtest.storm                     # 10,000 viewers, 5 events/s
    python -m loadtest.storm --quick             # 1,000 viewers (the smoke version)
    python -m loadtest.storm --viewers 4000 --rate 10
    make bench ARGS="--only storm"               # the same through the bench (writes only its section)

Servers (loadtest/signals.py ``Cluster``): a private Valkey, two ``livesale serve`` processes on it and
one ``livesale settle``, all pinned to core 0. A host WebSocket on gateway 0 sends ``announce`` at
``rate``/s for the whole run (the events carry the server's ``ts``, stamped when published). Client
processes on core 1 (lean raw clients), each from its own source address 127.0.0.(2+i), open their
share of the viewers against gateway i % 2 (half on each) and ``join`` anonymously; every viewer keeps
the ``epoch`` and the last ``seq`` it processed.

Once every viewer has joined and received an event, the controller names one wall-clock instant; at it
every client process aborts all its sockets (SO_LINGER 0: the gateways get a reset, as from a network
blip, no close frame), then each viewer waits its own random 0-``jitter_ms`` and reconnects to the same
gateway with ``join {room, resume: {epoch, seq}}``. A failed connect is retried after 0.5-1 s x the
attempt (8 attempts).

Measured, per viewer and summed: the answer's type (``resumed``: replayed from the gateway's ring,
``snapshot``: full state), the time from the drop until that answer (the last one = "all back"), the
missed events replayed after ``resumed`` (checked gap-free against the seq held before the drop) and
their delay (``ts`` -> received, so it spans the outage), the first live event after the answer (``ts``
-> received: p50/p99/max), seq gaps and duplicates, connect retries and failures, ``error`` frames and
close codes; per gateway: alive at the end (process running, ``/healthz`` 200), its connections before and
after, its ``/healthz`` counters (``resyncs``, ``slow_closed``: the gateway counts neither resumes nor
snapshots itself), its CPU share and peak RSS from the drop until all were back (sampled every 0.1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import multiprocessing as mp
import os
import random
import secrets
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from . import doc_sections, fanout, lean
from .serverproc import setup_room

SERVER_CORES = {0}
CLIENT_CORES = [1]
PER_PROC = 2500          # viewers per client process (fd limit 20,000; a proc's sockets share one source address)
CONNECT_RETRIES = 8
START, END = "<!-- bench:storm:start -->", "<!-- bench:storm:end -->"
_LINGER0 = struct.pack("ii", 1, 0)


def plan(quick: bool, viewers: int | None = None, rate: float | None = None) -> dict[str, Any]:
    """The run's parameters. 5 events/s by default: 10,000 viewers x 10/s would put 100,000 frames/s
    through the one client core, whose own lag would then be what the latencies measure."""
    n = viewers or (1000 if quick else 10_000)
    return {"viewers": n, "rate": rate or 5.0, "procs": 2 * max(1, math.ceil(n / (2 * PER_PROC))),
            "warm_s": 2.0 if quick else 5.0, "jitter_ms": 200, "back_timeout_s": 60.0 if quick else 120.0,
            "after_s": 2.0 if quick else 3.0, "quick": quick}


# -- client processes (shared with loadtest/slow.py) ----------------------------------------------------

class WorkerPool:
    """Client processes (spawned) driven over pipes: each gets its own cfg and answers commands."""

    def __init__(self, target: Callable[[int, dict, Any], None], cfgs: list[dict]) -> None:
        self.target, self.cfgs = target, cfgs
        self.workers: list[Any] = []
        self.pipes: list[Any] = []

    async def recv(self, pipe: Any, timeout: float = 300) -> Any:
        def within() -> Any:
            if not pipe.poll(timeout):
                raise TimeoutError(f"no answer from a client process in {timeout} s")
            try:
                return pipe.recv()
            except EOFError:
                raise RuntimeError("a client process exited without answering (its traceback is on stderr)") from None
        return await asyncio.get_running_loop().run_in_executor(None, within)

    async def all(self, msg: Any, timeout: float = 300) -> list[Any]:
        for p in self.pipes:
            p.send(msg)
        return [await self.recv(p, timeout) for p in self.pipes]

    async def start(self, timeout: float = 300) -> list[dict]:
        """Spawn the processes; their first message (ready) each."""
        ctx = mp.get_context("spawn")
        for i, cfg in enumerate(self.cfgs):
            a, b = ctx.Pipe()
            p = ctx.Process(target=self.target, args=(i, cfg, b), daemon=True)
            p.start()
            b.close()
            self.workers.append(p)
            self.pipes.append(a)
        return [await self.recv(p, timeout) for p in self.pipes]

    async def stop(self) -> None:
        for p in self.pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                p.send("stop")
        for p in self.pipes:
            with contextlib.suppress(Exception):
                await self.recv(p, 10)
        for w in self.workers:
            w.join(5)
            if w.is_alive():
                w.terminate()


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def run_worker(main: Callable[[int, dict, Any], Any], idx: int, cfg: dict, pipe: Any) -> None:
    """A client process's entry: pinned, uvloop, ``asyncio.run(main(idx, cfg, pipe))``."""
    if cfg.get("client_cores"):
        lean.pin_to(set(cfg["client_cores"]))
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(main(idx, cfg, pipe))


class ProcSampler:
    """CPU seconds and RSS of some processes, and each core's busy seconds, every ``every`` s in the
    background until stopped."""

    def __init__(self, pids: dict[str, int], every: float = 0.1) -> None:
        self.pids, self.every = pids, every
        self.samples: list[tuple[float, dict[str, tuple[float, int]]]] = []
        self.cores: list[tuple[float, dict[int, float]]] = []
        self._task: asyncio.Task | None = None

    def _sample(self) -> None:
        row = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                row[name] = (lean.proc_cpu_s(pid), lean.proc_rss_kib(pid))
        now = time.time()
        self.samples.append((now, row))
        self.cores.append((now, lean.core_busy_s()))

    def busy(self, t0: float, t1: float) -> dict[int, float]:
        """Each core's busy share over about [t0, t1] (the samples nearest inside)."""
        pts = [c for c in self.cores if t0 <= c[0] <= t1]
        if len(pts) < 2:
            return {}
        (ta, a), (tb, b) = pts[0], pts[-1]
        return {c: round((b[c] - a.get(c, 0)) / max(1e-6, tb - ta), 2) for c in b}

    async def _loop(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        self._sample()

    def window(self, t0: float, t1: float) -> dict[str, dict[str, Any]]:
        """Per process over [t0, t1] (wall): CPU share of one core, RSS at the start and its peak."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        before = [s for s in self.samples if s[0] < t0]
        rows = ([before[-1]] if before else []) + inside
        out: dict[str, dict[str, Any]] = {}
        for name in self.pids:
            pts = [(t, r[name]) for t, r in rows if name in r]
            if len(pts) < 2:
                out[name] = {}
                continue
            (ta, (ca, ra)), (tb, (cb, _)) = pts[0], pts[-1]
            out[name] = {"cpu_util": round((cb - ca) / max(1e-6, tb - ta), 2), "cpu_s": round(cb - ca, 2),
                         "rss_start_kib": ra, "rss_peak_kib": max(r for _, (_, r) in pts)}
        return out


# -- the storm's viewers ----------------------------------------------------------------------------------

class Slot:
    """One viewer across its connections: what it has seen and how its reconnect went."""

    __slots__ = ("conn", "epoch", "seq", "seen", "dropped_seq", "rejoined", "kind", "answer_seq", "back_ms",
                 "reconnect_ms", "first_ms", "replayed", "attempts", "lost")

    def __init__(self) -> None:
        self.conn: Viewer | None = None
        self.epoch: str | None = None
        self.seq = -1
        self.seen = 0            # events received since the controller armed the workers
        self.dropped_seq = -1
        self.rejoined = False    # the join after the drop was sent
        self.kind = ""           # "resumed" | "snapshot": the answer to that join
        self.answer_seq = -1     # to_seq (resumed) or the snapshot's seq
        self.back_ms: float | None = None       # drop instant -> the answer
        self.reconnect_ms: float | None = None  # the (re)connect attempt after the jitter -> the answer
        self.first_ms: float | None = None      # the first live event's ts -> received
        self.replayed = 0
        self.attempts = 0
        self.lost = 0            # connections closed by the server before this viewer was back


class StormState:
    def __init__(self, room: str) -> None:
        self.room = room
        self.slots: list[Slot] = []
        self.armed = False
        self.drop_at = 0.0           # the named instant (wall, s)
        self.drop_span: tuple[float, float] = (0.0, 0.0)
        self.first = lean.Histogram()
        self.replay = lean.Histogram()
        self.back = lean.Histogram()
        self.gaps = self.dups = self.unasked = self.epoch_changes = self.closed = 0
        self.close_codes: dict[int, int] = {}
        self.connect_errors: dict[str, int] = {}
        self.failed = 0
        self.errors: list[str] = []
        self.tasks: set[asyncio.Task] = set()
        self.host, self.port, self.src = "", 0, ""


class Viewer(lean.WSProto):
    __slots__ = ("st", "slot", "answered", "t_open")

    def __init__(self, st: StormState, slot: Slot, t_open: float = 0.0) -> None:
        super().__init__()
        self.st, self.slot = st, slot
        self.answered = False
        self.t_open = t_open  # when this connect attempt began (wall ms)

    def on_open(self) -> None:
        s = self.slot
        msg: dict[str, Any] = {"type": "join", "room": self.st.room}
        if s.epoch is not None and s.rejoined:
            msg["resume"] = {"epoch": s.epoch, "seq": s.seq}
        self.send(orjson.dumps(msg))

    def on_close(self) -> None:  # the server closed it (our own drop sets ``closed`` first: not counted)
        if self.opened.done() and self.opened.exception() is not None:
            return  # the handshake failed: reconnect() retries it
        st = self.st
        st.closed += 1
        code = self.close_code if self.close_code is not None else 1006
        st.close_codes[code] = st.close_codes.get(code, 0) + 1
        if self.slot.rejoined and not self.slot.kind:
            self.slot.lost += 1
            if self.slot.lost <= 3:
                _spawn(st, reconnect(st, self.slot, 0.5))

    def on_text(self, p: bytes, now: float) -> None:
        if p.startswith(b'{"type":"tick"'):
            return
        s, st = self.slot, self.st
        if p.startswith(b'{"seq":'):  # a sequenced room event
            seq = lean.int_after(p, b'"seq":', 0)
            if seq is None:
                return
            if seq != s.seq + 1:
                if seq <= s.seq:
                    st.dups += 1
                    return
                st.gaps += seq - s.seq - 1
            s.seq = seq
            if st.armed:
                s.seen += 1
            if s.kind:
                ts = lean.int_after(p, b'"ts":', 0) or 0
                if seq <= s.answer_seq:
                    s.replayed += 1
                    st.replay.add(now - ts)
                elif s.first_ms is None:
                    s.first_ms = now - ts
                    st.first.add(s.first_ms)
            return
        m = orjson.loads(p)
        t = m.get("type")
        if t == "snapshot":
            if s.epoch is not None and m["epoch"] != s.epoch:
                st.epoch_changes += 1
            s.epoch, s.seq = m["epoch"], int(m["seq"])
            if not self.answered:
                self._answered("snapshot", s.seq, now)
            else:
                st.unasked += 1
        elif t == "resumed":
            if not self.answered:
                self._answered("resumed", int(m["to_seq"]), now)
        elif t == "error" and len(st.errors) < 10:
            st.errors.append(p[:200].decode(errors="replace"))

    def _answered(self, kind: str, seq: int, now: float) -> None:
        self.answered = True
        s, st = self.slot, self.st
        if not s.rejoined:
            return  # the first join (before the storm)
        s.kind, s.answer_seq = kind, seq
        s.back_ms = now - st.drop_at * 1000.0
        s.reconnect_ms = now - self.t_open
        st.back.add(s.back_ms)


def _spawn(st: StormState, coro: Any) -> None:
    t = asyncio.create_task(coro)
    st.tasks.add(t)
    t.add_done_callback(st.tasks.discard)


def drop(conn: Viewer) -> None:
    """Abort the socket with a reset (SO_LINGER 0), as a network blip would look to the server."""
    conn.closed = True  # our own close: on_close is not called
    t = conn.transport
    if t is None:
        return
    sock = t.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
    t.abort()


async def reconnect(st: StormState, slot: Slot, delay: float) -> None:
    await asyncio.sleep(delay)
    for attempt in range(CONNECT_RETRIES):
        slot.attempts += 1
        try:
            make = functools.partial(Viewer, st, slot, time.time() * 1000.0)
            conn = await lean.connect(make, st.host, st.port, "/ws", st.src, timeout=30)
            assert isinstance(conn, Viewer)
            slot.conn = conn
            return
        except (TimeoutError, OSError, ConnectionError) as exc:
            name = type(exc).__name__
            st.connect_errors[name] = st.connect_errors.get(name, 0) + 1
            await asyncio.sleep(0.5 * (attempt + 1) * (1 + random.random()))
    st.failed += 1


async def _storm(st: StormState, at: float, jitter_ms: float, seed: str) -> None:
    rnd = random.Random(seed)
    await asyncio.sleep(max(0.0, at - time.time()))
    t0 = time.time()
    for s in st.slots:
        s.dropped_seq = s.seq
        s.rejoined = True
        if s.conn is not None:
            drop(s.conn)
    st.drop_span = (t0, time.time())
    for s in st.slots:
        _spawn(st, reconnect(st, s, rnd.random() * jitter_ms / 1000.0))


async def _worker_main(idx: int, cfg: dict, pipe: Any) -> None:
    loop = asyncio.get_running_loop()
    st = StormState(cfg["room"])
    u = urlsplit(cfg["url"])
    st.host, st.port, st.src = u.hostname or "127.0.0.1", u.port or 80, f"127.0.0.{2 + idx % 250}"
    cpu0 = lean.proc_cpu_s(os.getpid())
    st.slots = [Slot() for _ in range(cfg["n"])]
    it = iter(st.slots)
    try:
        def make() -> Viewer:
            s = next(it)
            s.conn = Viewer(st, s)
            return s.conn
        await lean.connect_many(cfg["n"], make, st.host, st.port, "/ws", [st.src], concurrency=100)
        end = time.monotonic() + 60
        while sum(1 for s in st.slots if s.epoch is not None) < cfg["n"] and time.monotonic() < end:
            await asyncio.sleep(0.05)
        pipe.send({"ready": cfg["n"], "joined": sum(1 for s in st.slots if s.epoch is not None),
                   "errors": st.errors[:3]})
    except Exception as exc:
        pipe.send({"ready": 0, "joined": 0, "error": repr(exc), "errors": st.errors[:3]})
    while True:
        cmd = await loop.run_in_executor(None, pipe.recv)
        if cmd == "arm":
            st.armed = True
            pipe.send("armed")
        elif cmd == "peek":
            pipe.send({"receiving": sum(1 for s in st.slots if s.seen), "back": sum(1 for s in st.slots if s.kind),
                       "first": sum(1 for s in st.slots if s.first_ms is not None), "failed": st.failed})
        elif isinstance(cmd, dict) and cmd.get("cmd") == "drop":
            st.drop_at = cmd["at"]
            _spawn(st, _storm(st, cmd["at"], cmd["jitter_ms"], f"{cfg['room']}-{idx}"))
            pipe.send("ok")
        elif cmd == "stats":
            pipe.send(_stats(st, lean.proc_cpu_s(os.getpid()) - cpu0))
        elif cmd == "stop":
            for t in list(st.tasks):
                t.cancel()
            await asyncio.gather(*st.tasks, return_exceptions=True)
            for s in st.slots:
                if s.conn is not None:
                    s.conn.close()
            await asyncio.sleep(0.2)
            pipe.send("bye")
            return


def _stats(st: StormState, cpu_s: float) -> dict[str, Any]:
    ss = st.slots
    missed = [s.answer_seq - s.dropped_seq for s in ss if s.kind == "resumed"]
    return {
        "viewers": len(ss), "back": sum(1 for s in ss if s.kind),
        "resumed": sum(1 for s in ss if s.kind == "resumed"), "snapshot": sum(1 for s in ss if s.kind == "snapshot"),
        "first_seen": sum(1 for s in ss if s.first_ms is not None),
        "replayed": sum(s.replayed for s in ss if s.kind == "resumed"), "missed": sum(missed),
        "missed_max": max(missed, default=0),
        "resume_from_ok": sum(1 for s in ss if s.kind == "resumed" and s.answer_seq >= s.dropped_seq),
        "attempts": sum(s.attempts for s in ss), "multi_attempt": sum(1 for s in ss if s.attempts > 1),
        "lost": sum(s.lost for s in ss), "failed": st.failed, "connect_errors": st.connect_errors,
        "reconnect_ms_max": max((s.reconnect_ms for s in ss if s.reconnect_ms is not None), default=None),
        "first": st.first.sparse(), "replay": st.replay.sparse(), "back_hist": st.back.sparse(),
        "gaps": st.gaps, "dups": st.dups, "unasked_snapshots": st.unasked, "epoch_changes": st.epoch_changes,
        "closed_by_server": st.closed, "close_codes": st.close_codes, "errors": st.errors[:5],
        "drop_span": [st.drop_span[0] - st.drop_at, st.drop_span[1] - st.drop_at], "cpu_s": cpu_s,
    }


def _worker(idx: int, cfg: dict, pipe: Any) -> None:
    run_worker(_worker_main, idx, cfg, pipe)


# -- the host ----------------------------------------------------------------------------------------------

class Announcer:
    """The host's WebSocket: ``announce`` at ``rate``/s on a fixed schedule until stopped."""

    def __init__(self, url: str, room: str, token: str, rate: float, text_len: int = 0) -> None:
        self.url, self.room, self.token, self.rate = url, room, token, rate
        self.text_len = text_len  # pad the text to this many characters (0: fanout.ann_text's ~72)
        self.host: fanout.Host | None = None
        self.sent = 0
        self.late = lean.Histogram()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        u = urlsplit(self.url)
        assert u.hostname and u.port
        host = await lean.connect(lambda: fanout.Host(self.room, self.token), u.hostname, u.port, "/ws")
        assert isinstance(host, fanout.Host)
        self.host = host
        await asyncio.wait_for(host.joined, 10)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        assert self.host is not None
        t0, w0 = time.monotonic(), time.time() * 1000
        while True:
            delay = t0 + self.sent / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sched = w0 + self.sent * 1000 / self.rate
            self.late.add(time.time() * 1000 - sched)
            text = fanout.ann_text(sched)
            text += "x" * (self.text_len - len(text))
            self.host.send(orjson.dumps({"type": "announce", "rid": f"a{self.sent}", "text": text}))
            self.sent += 1

    async def stop(self) -> dict[str, Any]:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        h = self.host
        if h is None:
            return {"sent": 0}
        end = time.monotonic() + 10
        while h.oks < self.sent and time.monotonic() < end and not h.closed:
            await asyncio.sleep(0.05)
        h.close()
        return {"sent": self.sent, "ok": h.oks, "late_ms": self.late.summary(), "errors": h.errors[:3]}


# -- controller ----------------------------------------------------------------------------------------------

async def _health(url: str) -> dict[str, Any]:
    try:
        status, body = await lean.http_json("GET", url + "/healthz", timeout=10)
    except Exception as exc:
        return {"status": 0, "error": repr(exc)}
    return {"status": status, "connections": body.get("connections"), "stats": body.get("stats") or {}}


def _merge_hist(stats: list[dict], key: str) -> lean.Histogram:
    h = lean.Histogram()
    for s in stats:
        h.merge(lean.Histogram.from_sparse(s[key]))
    return h


def _sum_dicts(ds: list[dict]) -> dict:
    out: dict = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


async def run(cfg: dict, log: Callable[[str], None] = print) -> dict[str, Any]:
    """cfg: viewers, rate, procs, warm_s, jitter_ms, back_timeout_s, after_s, quick, client_cores?,
    server_cores?"""
    from .signals import Cluster  # two gateways + settle on a private Valkey

    cfg = dict(cfg)
    cfg.setdefault("client_cores", CLIENT_CORES)
    room = f"storm-{secrets.token_hex(3)}"
    res: dict[str, Any] = {k: cfg[k] for k in ("viewers", "rate", "procs", "jitter_ms", "quick")}
    res.update(gateways=2, room=room, loadavg_before=round(os.getloadavg()[0], 2))
    loop = asyncio.get_running_loop()
    cl = Cluster(set(cfg.get("server_cores") or SERVER_CORES))
    pool: WorkerPool | None = None
    host: Announcer | None = None
    sampler: ProcSampler | None = None
    try:
        await loop.run_in_executor(None, cl.start)
        urls = [g.url for g in cl.gws]
        tok = await loop.run_in_executor(None, cl.gws[0].host_token)
        await setup_room(urls[0], tok, room=room)
        shares = split(cfg["viewers"], cfg["procs"])
        pool = WorkerPool(_worker, [dict(room=room, n=shares[i], url=urls[i % 2], client_cores=cfg["client_cores"])
                                    for i in range(cfg["procs"])])
        t = time.monotonic()
        ready = await pool.start()
        errs = [r.get("error") for r in ready if r.get("error")] + [e for r in ready for e in r["errors"]]
        res.update(joined=sum(r["joined"] for r in ready), connect_s=round(time.monotonic() - t, 1))
        log(f"[storm] {res['joined']:,} of {cfg['viewers']:,} viewers joined over 2 gateways in {res['connect_s']} s"
            + (f"; errors {errs[:3]}" if errs else ""))
        if res["joined"] < cfg["viewers"]:
            raise RuntimeError(f"only {res['joined']} of {cfg['viewers']} viewers joined: {errs[:3]}")
        host = Announcer(urls[0], room, tok, cfg["rate"])
        await host.start()
        pids = {f"gw{i}": g.pid() for i, g in enumerate(cl.gws)}
        if cl.vk.proc is not None:
            pids["valkey"] = cl.vk.proc.pid
        if cl.sink is not None:
            pids["settle"] = cl.sink.pid()
        pids |= {f"client{i}": w.pid for i, w in enumerate(pool.workers)} | {"controller": os.getpid()}
        sampler = ProcSampler(pids)
        await pool.all("arm", 30)
        t_warm = time.time()
        sampler.start()
        await asyncio.sleep(cfg["warm_s"])
        peek = await pool.all("peek", 30)
        res["receiving_before"] = sum(p["receiving"] for p in peek)
        log(f"[storm] {res['receiving_before']:,} viewers receiving {cfg['rate']:g} events/s")
        res["health_before"] = [await _health(u) for u in urls]
        res["loadavg_at_drop"] = round(os.getloadavg()[0], 2)
        at = time.time() + 0.5
        await pool.all({"cmd": "drop", "at": at, "jitter_ms": cfg["jitter_ms"]}, 30)
        log(f"[storm] all {cfg['viewers']:,} sockets drop at once; reconnect with resume after 0-{cfg['jitter_ms']} ms")
        end = at + cfg["back_timeout_s"]
        back = 0
        while time.time() < end:
            await asyncio.sleep(0.1)
            peek = await pool.all("peek", 30)
            back = sum(p["back"] for p in peek)
            if back + sum(p["failed"] for p in peek) >= cfg["viewers"] and time.time() > at:
                break
        t_back = time.time()
        log(f"[storm] {back:,} of {cfg['viewers']:,} back after {t_back - at:.2f} s (controller's view)")
        end = time.time() + cfg["after_s"] + 10
        while time.time() < end:  # every viewer's first live event (at least after_s)
            peek = await pool.all("peek", 30)
            if time.time() > t_back + cfg["after_s"] and sum(p["first"] for p in peek) >= back:
                break
            await asyncio.sleep(0.2)
        await sampler.stop()
        res["health_after"] = [await _health(u) for u in urls]
        res["host"] = await host.stop()
        host = None
        stats = await pool.all("stats", 60)
        res.update(_summary(stats, cfg["viewers"], at, t_back))
        t_end = at + (res["all_back_s"] or t_back - at)  # the storm: the drop until the last answer (client clocks)
        res["core_busy"] = sampler.busy(at, t_end)
        win = sampler.window(at, t_end)
        base = sampler.window(t_warm + 0.5, at - 0.1)  # the warm window: live fan-out only
        res["gateway"] = []
        for i, g in enumerate(cl.gws):
            hb, ha = res["health_before"][i], res["health_after"][i]
            sb, sa = hb.get("stats") or {}, ha.get("stats") or {}
            res["gateway"].append({
                "alive": g.proc is not None and g.proc.poll() is None and ha.get("status") == 200,
                "connections_before": hb.get("connections"), "connections_after": ha.get("connections"),
                "resyncs": sa.get("resyncs", 0) - sb.get("resyncs", 0),
                "slow_closed": sa.get("slow_closed", 0) - sb.get("slow_closed", 0), **win.get(f"gw{i}", {})})
        res["valkey"] = win.get("valkey", {})
        ours = sum(w.get("cpu_util", 0) for k, w in win.items() if k.startswith(("gw", "valkey", "settle")))
        clients = sum(w.get("cpu_util", 0) for k, w in win.items() if k.startswith(("client", "controller")))
        gw_cpu = sum(g.get("cpu_s", 0) for g in res["gateway"])
        gw_base = sum(base.get(f"gw{i}", {}).get("cpu_util", 0) for i in range(len(cl.gws)))
        res["storm_cpu"] = {"servers": round(ours, 2), "clients": round(clients, 2), "window_s": round(t_end - at, 2),
                            "gateways_cpu_s": round(gw_cpu, 2), "gateways_base_util": round(gw_base, 2),
                            "core_busy_before": sampler.busy(t_warm + 0.5, at - 0.1)}
        marginal = gw_cpu - gw_base * (t_end - at)
        res["gateway_ms_per_reconnect"] = round(marginal * 1000 / max(1, res["back"]), 3)
        res["all_alive"] = all(g["alive"] for g in res["gateway"])
        log(f"[storm] {res['back']:,} back ({res['resumed']:,} resumed, {res['snapshot']:,} snapshots) in "
            f"{res['all_back_s']} s; first live event p50 {res['first_p50_ms']} / p99 {res['first_p99_ms']} ms; "
            f"gateways alive: {[g['alive'] for g in res['gateway']]}; "
            f"CPU {[g.get('cpu_util') for g in res['gateway']]}")
    except Exception as exc:
        res["error"] = repr(exc)
        log(f"[storm] FAILED: {exc!r}")
        with contextlib.suppress(Exception):
            res["server_log_tail"] = [g.tail(600) for g in cl.gws]
    finally:
        if host is not None:
            with contextlib.suppress(Exception):
                await host.stop()
        if sampler is not None:
            await sampler.stop()
        if pool is not None:
            await pool.stop()
        await loop.run_in_executor(None, cl.stop)
    res["notes"] = notes()
    return res


def _summary(stats: list[dict], n: int, at: float, t_back: float) -> dict[str, Any]:
    first, replay, back = (_merge_hist(stats, k) for k in ("first", "replay", "back_hist"))
    tot = {k: sum(s[k] for s in stats) for k in ("back", "resumed", "snapshot", "first_seen", "replayed", "missed",
                                                "resume_from_ok", "attempts", "multi_attempt", "lost", "failed",
                                                "gaps", "dups", "unasked_snapshots", "epoch_changes",
                                                "closed_by_server")}
    spans = [s["drop_span"] for s in stats]
    rc = [s["reconnect_ms_max"] for s in stats if s["reconnect_ms_max"] is not None]
    return {
        "reconnects": n, **tot, "all_back": tot["back"] == n,
        "kinds_add_up": tot["resumed"] + tot["snapshot"] == tot["back"],
        "all_back_s": round(back.maxv / 1000, 2) if back.n else None,
        "back_p50_s": round(back.pct(50) / 1000, 2) if back.n else None,
        "back_p99_s": round(back.pct(99) / 1000, 2) if back.n else None,
        "controller_back_s": round(t_back - at, 2), "reconnect_max_s": round(max(rc) / 1000, 2) if rc else None,
        "first_p50_ms": first.pct(50) if first.n else None, "first_p99_ms": first.pct(99) if first.n else None,
        "first_max_ms": round(first.maxv, 1) if first.n else None,
        "replay_p50_ms": replay.pct(50) if replay.n else None, "replay_p99_ms": replay.pct(99) if replay.n else None,
        "replay_max_ms": round(replay.maxv, 1) if replay.n else None,
        "missed_max": max((s["missed_max"] for s in stats), default=0),
        "replay_complete": tot["replayed"] == tot["missed"],
        "drop_span_ms": [round(min(x[0] for x in spans) * 1000, 1), round(max(x[1] for x in spans) * 1000, 1)],
        "connect_errors": _sum_dicts([s["connect_errors"] for s in stats]),
        "close_codes": _sum_dicts([s["close_codes"] for s in stats]),
        "errors": [e for s in stats for e in s["errors"]][:5],
        "client_cpu_s": round(sum(s["cpu_s"] for s in stats), 2),
    }


# -- docs/BENCHMARKS.md section ------------------------------------------------------------------------------

def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def _cores(cb: dict) -> str:
    return f"{_f(cb.get('0', cb.get(0)), 2)} / {_f(cb.get('1', cb.get(1)), 2)}"


def _codes(d: dict) -> str:
    return ", ".join(f"{k}: {_f(v)}" for k, v in sorted(d.items(), key=lambda kv: str(kv[0]))) or "none"


def section(r: dict, machine: dict, command: str) -> list[str]:
    """The "Reconnect storm" section (with its markers) for docs/BENCHMARKS.md and the console."""
    L: list[str] = [START, f"## Reconnect storm: {r.get('viewers', 0):,} viewers on two gateway processes drop "
                           f"at once and resume ({machine['date']})", ""]
    a = L.append
    if "back" not in r:
        a(f"`{command}`: **failed**: {str(r.get('error'))[:300]}")
        a("")
        a(END)
        return L
    a(f"`{command}`" + (" (**quick smoke run: small counts**)" if r.get("quick") else "")
      + f" on commit {machine.get('checkout') or machine.get('git')}. Machine: {machine['cpu']}, {machine['cores']} "
      f"cores, Python {machine['python']}, kernel {machine['kernel']}; load average {_f(r.get('loadavg_before'), 2)} "
      f"before the run, {_f(r.get('loadavg_at_drop'), 2)} at the drop (the machine is shared). Two `livesale serve` "
      "processes and one `livesale settle` on a private Valkey, all pinned to core 0; "
      f"{r['procs']} client processes on core 1 (lean raw clients, half of the viewers on each gateway, source "
      f"addresses 127.0.0.x). A host on gateway 0 announces {r['rate']:g} events/s throughout (the event's `ts` is "
      "stamped when it is published). Once every viewer had joined and received events, every client process "
      "aborted all its sockets at one named instant (SO_LINGER 0: a reset, no close frame), and each viewer "
      f"reconnected to its gateway after its own random 0-{r['jitter_ms']} ms with `join` + "
      "`resume: {epoch, seq}` (the last seq it processed).")
    a("")
    a("| viewers | back | `resumed` / `snapshot` | all back after | back p50 / p99 | first live event after the "
      "answer: p50 / p99 / max | missed events replayed (of missed) | replayed event ts → received p99 / max | "
      "seq gaps / duplicates | connect attempts (retries) | closed by a gateway |")
    a("|---|---|---|---|---|---|---|---|---|---|---|")
    a(f"| {_f(r['viewers'])} | {_f(r['back'])} | {_f(r['resumed'])} / {_f(r['snapshot'])} | "
      f"{_f(r['all_back_s'], 2)} s | {_f(r['back_p50_s'], 2)} / {_f(r['back_p99_s'], 2)} s | "
      f"{_f(r['first_p50_ms'])} / {_f(r['first_p99_ms'])} / {_f(r['first_max_ms'])} ms | "
      f"{_f(r['replayed'])} ({_f(r['missed'])}) | {_f(r['replay_p99_ms'])} / {_f(r['replay_max_ms'])} ms | "
      f"{_f(r['gaps'])} / {_f(r['dups'])} | {_f(r['attempts'])} ({_f(r['attempts'] - r['back'])}) | "
      f"{_f(r['closed_by_server'])} |")
    a("")
    a("| gateway | alive at the end | connections before → after | CPU share of a core, drop → all back | "
      "RSS at the drop → peak MiB | `resyncs` / `slow_closed` during the run (see below) |")
    a("|---|---|---|---|---|---|")
    for i, g in enumerate(r.get("gateway") or []):
        a(f"| {i} | {_f(g['alive'])} | {_f(g['connections_before'])} → {_f(g['connections_after'])} | "
          f"{_f(g.get('cpu_util'), 2)} | {_f((g.get('rss_start_kib') or 0) / 1024)} → "
          f"{_f((g.get('rss_peak_kib') or 0) / 1024)} | {_f(g['resyncs'])} / {_f(g['slow_closed'])} |")
    cb = r.get("core_busy", {})
    sc = r.get("storm_cpu") or {}
    a("")
    a(f"Gateway CPU from the drop until all were back ({_f(sc.get('window_s'), 2)} s): "
      f"{_f(sc.get('gateways_cpu_s'), 2)} s for {_f(r['back'])} reconnects; less the live fan-out's share measured "
      f"before the drop ({_f(sc.get('gateways_base_util'), 2)} of a core for both), "
      f"**{_f(r.get('gateway_ms_per_reconnect'), 2)} ms per reconnect** (the old socket's teardown, the handshake, "
      "`join` and the replay). Core 0 / core 1 busy over that window: "
      f"{_f(cb.get('0', cb.get(0)), 2)} / {_f(cb.get('1', cb.get(1)), 2)}, of which our servers (gateways, "
      f"Valkey, settle) {_f(sc.get('servers'), 2)} and our clients {_f(sc.get('clients'), 2)}: the rest is "
      "other work on the machine (before the drop, with the live fan-out only: "
      f"{_cores(sc.get('core_busy_before') or {})}). "
      f"The drop itself took {_f(r['drop_span_ms'][0])} to {_f(r['drop_span_ms'][1])} ms after the named instant "
      f"across the client processes. Connect errors: {_codes(r['connect_errors'])}; close codes from the gateways: "
      f"{_codes(r['close_codes'])}; `error` frames: {len(r.get('errors') or [])}; host: {_f(r['host'].get('sent'))} "
      f"announces sent, {_f(r['host'].get('ok'))} acknowledged.")
    a("")
    a("How to read it:")
    a("")
    a("- *Back*: the viewer got the answer to its `join` with `resume`: `resumed` (the gateway replayed the "
      "missed events from its ring, `LIVESALE_REPLAY_BUFFER`) or `snapshot` (full state; `recovered: false`), "
      "counted by the message type each client received (the gateways count neither). A `snapshot` answers a "
      "resume only when the gap is no longer in the ring (1,024 events by default: at "
      f"{r['rate']:g} events/s an outage of ~{1024 / r['rate'] / 60:.1f} min) or the epoch changed. "
      "*All back after*: from the named drop instant to the last answer, client clocks (one host). *Back p50 / "
      "p99* over all viewers; the jitter alone spreads them over 0.2 s.")
    a("- *First live event*: the first sequenced event with a seq above the answer's (`to_seq` or the "
      "snapshot's `seq`), `ts` → received: how fresh the stream is right after the storm. *Replayed*: the events "
      "published between a viewer's last seq and its answer, checked gap-free; their `ts` → received spans the "
      "outage, so it is the data's age on arrival, not a delivery latency.")
    a("- *Gateway CPU / RSS*: /proc of each gateway process sampled every 0.1 s from the drop until all were back "
      "(both gateways share core 0 with the Valkey and the settle process, so their shares add up to at most 1). "
      "*Alive*: the process still runs and `/healthz` answers 200 after the storm; *connections* from `/healthz` "
      "(gateway 0 also holds the host's). `slow_closed` is the gateway's counter of connections it took out "
      "of a room because a write found them dead: besides slow consumers it counts the dropped sockets that "
      "an event reached before the gateway noticed the reset.")
    for n in r.get("notes") or []:
        a(f"- {n}")
    if L[-1] != "":
        a("")
    a(END)
    return L


def notes(path: Path | None = None) -> list[str]:
    """The bullets of loadtest/bench_notes.md about this step (starting with "Reconnect storm")."""
    return doc_sections.notes_about("Reconnect storm", path)


def splice(doc: str, sec: list[str]) -> str:
    """``doc`` with its storm section replaced by ``sec`` (loadtest/doc_sections.py)."""
    return doc_sections.splice(doc, sec, START, END)


def old_section(doc: str) -> list[str]:
    return doc_sections.old_section(doc, START, END)


def ok(r: dict) -> bool:
    """Every viewer back, the answers' kinds add up, the replays complete, no gateway fell over."""
    return bool(r.get("all_back") and r.get("kinds_add_up") and r.get("replay_complete") and r.get("all_alive"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=0, help="default 10,000 (--quick: 1,000)")
    ap.add_argument("--rate", type=float, default=0, help="host announces per second (default 5)")
    ap.add_argument("--jitter-ms", type=int, default=200, help="each viewer's random reconnect delay, up to this")
    ap.add_argument("--quick", action="store_true", help="1,000 viewers")
    ap.add_argument("--json", default="", help="also write the result here")
    a = ap.parse_args(argv)
    if a.viewers and not 2 <= a.viewers <= 40_000:
        ap.error("--viewers: 2 to 40,000")
    if a.rate and not 0.5 <= a.rate <= 50:
        ap.error("--rate: 0.5 to 50")
    cfg = plan(a.quick, a.viewers or None, a.rate or None)
    cfg["jitter_ms"] = a.jitter_ms
    lean.pin_to(set(CLIENT_CORES))  # the controller is a client too
    res = lean.run_and_report(lambda c: run(c, log=lambda m: print(m, file=sys.stderr, flush=True)), cfg, a.json)
    return 0 if ok(res) else 1


if __name__ == "__main__":
    sys.exit(main())

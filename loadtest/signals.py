"""Interest-signal benchmark: N viewers on two gateway processes each send one ``view`` a second; every
signal must reach the SQL ``signals`` table.

    python -m loadtest.signals                       # 5,000 viewers x 1 view/s x 60 s
    python -m loadtest.signals --ramp                # then the ramp: the maximum sustained signal rate
    python -m loadtest.signals --quick               # 300 viewers x 1/s x 5 s (the suite's version)
    python -m loadtest.signals --database-url postgresql://postgres@127.0.0.1:5432/test
    make bench ARGS="--only signals"                 # the same through the bench (writes its section)

One run: a private Valkey, two ``livesale serve`` processes (``LIVESALE_SETTLE_IN_PROCESS=0``, instant
payments, one shared secret) and one ``livesale settle`` process (the settlement worker, whose signal
sink writes ``ls:signals`` into SQL), all pinned to core 0, on a fresh SQLite file (or the DATABASE_URL
given: the run's room id is unique, so the counts are its own). Client processes on core 1, each from
its own source address 127.0.0.(2+i), open their share of the viewers against gateway i % 2 (lean
clients, viewer tokens minted with the servers' secret) and ``join`` a fresh room first.

Windows, with the same sockets joined throughout:

1. idle: ``seconds`` with nothing sent (the gateways' CPU for heartbeats and ticks);
2. send: each viewer sends ``{"type":"view","product":...}`` ``rate`` times a second for ``seconds``, at a
   random phase of its own (so the offered rate is smooth), on an absolute schedule; the clients count what
   they wrote and any ``error`` frame that came back (``rejected``: the per-connection ``acts`` bucket);
3. drain: ``SELECT count(*) FROM signals WHERE kind='viewed' AND room_id=<room>`` is polled until it equals
   the signals accepted (sent - rejected): ``complete_after_s`` is the time from the last send to that.

Reported: ``sent``, ``rejected``, ``sql_count``, ``equal``; the gateways' CPU per signal, marginal ((send
window CPU - idle window CPU) / signals, µs) and gross; the sink's (settle process) and the Valkey's CPU per
signal (gross); the sink's lag from ``ls:signal-sink:stats`` (sampled each second: the largest
``lag_p99_ms`` seen from the send's start to the drain's end, and the final one; a batch's lag = its commit
time - its oldest signal's ``at_ms``, so it includes the gateway's flush interval); each core's busy share.

``--ramp`` (after the run above, same sockets): steps of ``step_s`` seconds at rising offered rates (default
2.5k, 5k, 7.5k, 10k, 15k, 20k, 25k signals/s; a step above 5 per viewer per second, the ``acts`` bucket, is not offered:
with 5,000 viewers the cap is 25,000/s). A step is sustained when, at its end, SQL is behind the signals
sent by at most 2 s of that rate, the clients achieved >= 95% of the offer and nothing was rejected; then
the ramp waits for SQL to catch up and goes on, else it stops. The highest sustained step is
``max_sustained_rate``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from . import doc_sections, lean
from .checkout import mint_viewer_token
from .serverproc import Livesale, Settler, code_env, setup_room

SERVER_CORES = {0}
CLIENT_CORES = [1]
ACTS_PER_S = 5.0  # the per-connection `acts` bucket (stream_gateway/connection.py): view draws from it
PRODUCT = "p-load"
RAMP_STEPS = (2_500, 5_000, 7_500, 10_000, 15_000, 20_000, 25_000)
START, END = "<!-- bench:signals:start -->", "<!-- bench:signals:end -->"


def plan(quick: bool, viewers: int | None = None, seconds: float | None = None, ramp: bool = False) -> dict:
    """The run's parameters (quick: 300 viewers x 1/s x 5 s, a short ramp when asked)."""
    n = viewers or (300 if quick else 5000)
    secs = seconds or (5 if quick else 60)
    steps = [r for r in ((600, 1200) if quick else RAMP_STEPS) if r / n <= ACTS_PER_S] if ramp else []
    return {"viewers": n, "seconds": secs, "rate": 1.0, "idle_s": secs, "quick": quick, "ramp": steps,
            "step_s": 3 if quick else 15, "procs": 2 * max(1, math.ceil(n / 2500)),
            "drain_timeout_s": 60 if quick else 180}


# -- client worker (its own process) ------------------------------------------------------------------

class Viewer(lean.WSProto):
    __slots__ = ("st", "token", "joined")

    def __init__(self, st: WorkerState, token: str) -> None:
        super().__init__()
        self.st, self.token, self.joined = st, token, False

    def on_open(self) -> None:
        self.send(orjson.dumps({"type": "join", "room": self.st.room, "token": self.token}))

    def on_close(self) -> None:
        self.st.closed += 1

    def on_text(self, p: bytes, now: float) -> None:
        st = self.st
        if not self.joined:
            if b'"type":"snapshot"' in p or b'"type":"resumed"' in p:
                self.joined = True
                st.joined += 1
            elif b'"type":"error"' in p and len(st.errors) < 10:
                st.errors.append(p[:200].decode(errors="replace"))
        elif b'"type":"error"' in p:  # a view has no reply: an error is a refusal (RATE_LIMITED)
            st.rejected += 1
            if len(st.errors) < 10:
                st.errors.append(p[:200].decode(errors="replace"))


class WorkerState:
    def __init__(self, room: str) -> None:
        self.room = room
        self.joined = self.closed = self.rejected = 0
        self.sent = 0
        self.errors: list[str] = []


def _worker(idx: int, cfg: dict, pipe) -> None:
    if cfg.get("client_cores"):
        lean.pin_to(set(cfg["client_cores"]))
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(_worker_main(idx, cfg, pipe))


async def _send_step(conns: list[Viewer], phases: list[float], st: WorkerState, per_conn: float, seconds: float,
                     t0: float, payload: bytes) -> dict:
    """Each connection sends at t0 + its phase + k / per_conn (k < per_conn x seconds), wall clock."""
    fr = lean.frame(payload)
    n = len(conns)
    per = int(round(per_conn * seconds))
    total = n * per
    period = 1.0 / per_conn
    await asyncio.sleep(max(0.0, t0 - time.time()))
    g = 0
    first = last = 0.0
    sent0 = st.sent
    while g < total:
        now = time.time()
        while g < total:
            k, j = divmod(g, n)
            if t0 + k * period + phases[j] * period > now:
                break
            c = conns[j]
            if c.transport is not None and not c.closed:
                c.transport.write(fr)
                st.sent += 1
            g += 1
        if st.sent > sent0 and not first:
            first = now
        last = now
        if g < total:
            k, j = divmod(g, n)
            await asyncio.sleep(max(0.001, min(0.01, t0 + k * period + phases[j] * period - time.time())))
    backlog = sum(c.transport.get_write_buffer_size() for c in conns if c.transport is not None and not c.closed)
    return {"sent": st.sent - sent0, "first": first, "last": last, "backlog_bytes": backlog}


async def _worker_main(idx: int, cfg: dict, pipe) -> None:
    loop = asyncio.get_running_loop()
    st = WorkerState(cfg["room"])
    u = urlsplit(cfg["url"])
    conns: list[Viewer] = []
    cpu0 = lean.proc_cpu_s(os.getpid())
    try:
        toks = iter([mint_viewer_token(cfg["secret"], f"sv{cfg['tag']}-{idx}-{i}", f"viewer {idx}-{i}")
                     for i in range(cfg["n"])])
        conns = await lean.connect_many(cfg["n"], lambda: Viewer(st, next(toks)), u.hostname, u.port, "/ws",
                                        [f"127.0.0.{2 + idx % 250}"], concurrency=100)
        end = time.monotonic() + 60
        while st.joined < len(conns) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        pipe.send({"ready": len(conns), "joined": st.joined, "errors": st.errors[:3]})
    except Exception as exc:
        pipe.send({"ready": len(conns), "joined": st.joined, "error": repr(exc), "errors": st.errors[:3]})
    rnd = random.Random(cfg["tag"] + str(idx))
    phases = sorted(rnd.random() for _ in conns)  # a connection's phase within its period, as a fraction
    rnd.shuffle(conns)  # the phases go to connections in random order
    payload = orjson.dumps({"type": "view", "product": cfg["product"]})
    while True:
        cmd = await loop.run_in_executor(None, pipe.recv)  # blocking fd: large replies must not EAGAIN
        if isinstance(cmd, dict) and cmd.get("cmd") == "send":
            out = await _send_step(conns, phases, st, cmd["per_conn"], cmd["seconds"], cmd["t0"], payload)
            pipe.send(out)
        elif cmd == "stats":
            pipe.send({"sent": st.sent, "rejected": st.rejected, "joined": st.joined, "closed": st.closed,
                       "conns": len(conns), "errors": st.errors[:5], "cpu_s": lean.proc_cpu_s(os.getpid()) - cpu0})
        elif cmd == "stop":
            for c in conns:
                c.close()
            await asyncio.sleep(0.2)
            pipe.send("bye")
            return


# -- servers -------------------------------------------------------------------------------------------



class Cluster:
    """Private Valkey + 2 gateways + 1 settle process, all on ``cores``; one database."""

    def __init__(self, cores: set[int], database_url: str = "", gateways: int = 2) -> None:
        from .engine import PrivateValkey
        self.cores, self.ngw = cores, gateways
        self.dir = Path(tempfile.mkdtemp(prefix="ls-signals-"))
        self.database_url = database_url or f"sqlite:///{self.dir / 'signals.db'}"
        self.vk = PrivateValkey(cores=cores)
        self.gws: list[Livesale] = []
        self.sink: Settler | None = None
        self.secret = secrets.token_hex(32)

    def start(self) -> Cluster:
        self.vk.start()
        env = {"REDIS_URL": self.vk.url, "DATABASE_URL": self.database_url, "LIVESALE_SETTLE_IN_PROCESS": "0",
               "LIVESALE_SECRET": self.secret, "LIVESALE_PAYMENT_MODE": "instant"}
        for _ in range(self.ngw):  # one after the other: the first creates the tables
            gw = Livesale(cores=self.cores, env=env)
            gw.secret = self.secret
            gw.start()
            self.gws.append(gw)
        senv = dict(env, LIVESALE_DATA_DIR=str(self.dir / "settle"), LIVESALE_LOG_LEVEL="WARNING",
                    PYTHONUNBUFFERED="1", **code_env())
        self.sink = Settler(senv, self.cores, self.dir)
        self.sink.start()
        return self

    def stop(self) -> None:
        for p in [self.sink, *self.gws]:
            if p is not None:
                with contextlib.suppress(Exception):
                    p.stop()
                    p.cleanup()
        with contextlib.suppress(Exception):
            self.vk.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cpu(self) -> dict[str, float]:
        out = {f"gw{i}": lean.proc_cpu_s(g.pid()) for i, g in enumerate(self.gws)}
        out["sink"] = lean.proc_cpu_s(self.sink.pid()) if self.sink else 0.0
        out["valkey"] = self.vk.cpu_s()
        return out


def _async_db_url(url: str) -> str:
    for p in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(p):
            return "postgresql+asyncpg://" + url[len(p):]
    for p in ("sqlite+aiosqlite://", "sqlite://"):
        if url.startswith(p):
            return "sqlite+aiosqlite://" + url[len(p):]
    raise ValueError(f"unsupported DATABASE_URL {url.split(':', 1)[0]}")


class Probe:
    """The controller's reads: the SQL count, the sink's stats and the stream's length."""

    def __init__(self, database_url: str, valkey_sock: str, room: str) -> None:
        from redis.asyncio import Redis
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool
        # a fresh connection per read: nothing pooled can hold an old snapshot of another process's writes
        self.engine = create_async_engine(_async_db_url(database_url), poolclass=NullPool)
        self.q = text("SELECT count(*) FROM signals WHERE kind = 'viewed' AND room_id = :room")
        self.room = room
        self.redis = Redis(unix_socket_path=valkey_sock)

    async def sql_count(self) -> int:
        for attempt in range(5):
            try:
                async with asyncio.timeout(15):  # a read that hangs fails the run instead of stalling it
                    async with self.engine.connect() as conn:
                        return int((await conn.execute(self.q, {"room": self.room})).scalar() or 0)
            except Exception:  # a locked SQLite file for a moment, or the table not created yet
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)
        return 0

    async def sink_stats(self) -> dict[str, Any]:
        raw = await self.redis.hgetall("ls:signal-sink:stats")
        vals = [json.loads(v) for v in raw.values()]
        if not vals:
            return {}
        return {"at": min(v.get("at", 0) for v in vals), "lag_ms": max(v["lag_ms"] for v in vals),
                "lag_p50_ms": max(v["lag_p50_ms"] for v in vals),
                "lag_p99_ms": max(v["lag_p99_ms"] for v in vals), "rows": sum(v["rows"] for v in vals),
                "entries": sum(v["entries"] for v in vals), "failures": sum(v["failures"] for v in vals),
                "malformed": sum(v["malformed"] for v in vals), "sinks": len(vals)}

    async def xlen(self) -> int:
        return int(await self.redis.xlen("ls:signals"))

    async def aclose(self) -> None:
        await self.engine.dispose()
        await self.redis.aclose()


class Sampler:
    """Samples the sink's stats every ``every`` s while running: the largest lag p99 / last-batch lag seen in
    the reports the sink made after the sampler started (an older report describes the batches before)."""

    def __init__(self, probe: Probe, every: float = 1.0) -> None:
        self.probe, self.every = probe, every
        self.since_ms = 0
        self.samples: list[dict[str, Any]] = []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.samples = []
        self.since_ms = int(time.time() * 1000)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                s = await self.probe.sink_stats()
                if s and s["at"] >= self.since_ms:
                    self.samples.append(s)
            await asyncio.sleep(self.every)

    async def stop(self) -> dict[str, Any]:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        s = self.samples
        return {"lag_p99_max_ms": max((x["lag_p99_ms"] for x in s), default=None),
                "lag_max_ms": max((x["lag_ms"] for x in s), default=None), "samples": len(s)}


# -- controller ----------------------------------------------------------------------------------------

class Clients:
    def __init__(self, cfg: dict, urls: list[str], log) -> None:
        self.cfg, self.urls, self.log = cfg, urls, log
        self.workers: list = []
        self.pipes: list = []

    async def recv(self, pipe, timeout: float = 300):
        def within():
            if not pipe.poll(timeout):
                raise TimeoutError(f"no answer from a viewer process in {timeout} s")
            try:
                return pipe.recv()
            except EOFError:
                raise RuntimeError("a viewer process exited without answering (its traceback is on stderr)") from None
        return await asyncio.get_running_loop().run_in_executor(None, within)

    async def all(self, msg: Any, timeout: float = 300) -> list:
        for p in self.pipes:
            p.send(msg)
        return [await self.recv(p, timeout) for p in self.pipes]

    async def start(self) -> dict:
        cfg = self.cfg
        procs, n = cfg["procs"], cfg["viewers"]
        share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        ctx = mp.get_context("spawn")
        for i in range(procs):
            a, b = ctx.Pipe()
            wcfg = dict(room=cfg["room"], product=PRODUCT, secret=cfg["secret"], tag=cfg["tag"], n=share[i],
                        url=self.urls[i % len(self.urls)], client_cores=cfg["client_cores"])
            p = ctx.Process(target=_worker, args=(i, wcfg, b), daemon=True)
            p.start()
            b.close()
            self.workers.append(p)
            self.pipes.append(a)
        t = time.monotonic()
        ready = [await self.recv(p) for p in self.pipes]
        errs = [r.get("error") for r in ready if r.get("error")] + [e for r in ready for e in r["errors"]]
        return {"connected": sum(r["ready"] for r in ready), "joined": sum(r["joined"] for r in ready),
                "connect_s": round(time.monotonic() - t, 1), "errors": errs[:3]}

    async def send(self, rate: float, seconds: float) -> dict:
        """Every viewer at ``rate / viewers`` per second for ``seconds``; returns when all have sent."""
        per_conn = rate / self.cfg["viewers"]
        t0 = time.time() + 0.3
        outs = await self.all({"cmd": "send", "per_conn": per_conn, "seconds": seconds, "t0": t0},
                              timeout=seconds + 120)
        sent = sum(o["sent"] for o in outs)
        first = min((o["first"] for o in outs if o["first"]), default=t0)
        last = max(o["last"] for o in outs)
        return {"sent": sent, "first": first, "last": last, "backlog_bytes": sum(o["backlog_bytes"] for o in outs)}

    async def stats(self) -> dict:
        outs = await self.all("stats", timeout=60)
        return {"sent": sum(o["sent"] for o in outs), "rejected": sum(o["rejected"] for o in outs),
                "closed": sum(o["closed"] for o in outs), "client_cpu_s": round(sum(o["cpu_s"] for o in outs), 2),
                "errors": [e for o in outs for e in o["errors"]][:5]}

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


async def _drain(probe: Probe, want: int, since: float, timeout: float, log=print) -> tuple[int, float | None]:
    """Poll the SQL count until it reaches ``want`` (or ``timeout`` s pass): (count, s from ``since`` (wall)).
    Says every 10 s how far it is, and what the sink and the stream say when it gives up."""
    end = time.monotonic() + timeout
    said = time.monotonic()
    n = await probe.sql_count()
    while n < want and time.monotonic() < end:
        await asyncio.sleep(0.1)
        n = await probe.sql_count()
        if time.monotonic() - said >= 10:
            said = time.monotonic()
            log(f"[signals] draining: {n:,} of {want:,} in SQL")
    if n < want:
        with contextlib.suppress(Exception):
            log(f"[signals] gave up after {timeout:g} s: {n:,} of {want:,} in SQL; sink {await probe.sink_stats()}")
    return n, (round(time.time() - since, 2) if n >= want else None)


def _cpu_delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b[k] - a[k] for k in a}


def _busy(c0: dict, c1: dict, wall: float) -> dict[int, float]:
    return {c: round((c1.get(c, 0) - c0.get(c, 0)) / max(1e-9, wall), 2) for c in c1}


async def run(cfg: dict, log=print) -> dict:
    """cfg: viewers, seconds, rate (per viewer, /s), idle_s, ramp (offered rates), step_s, procs, quick,
    database_url?, client_cores?, server_cores?"""
    cfg = dict(cfg)
    cfg.setdefault("client_cores", CLIENT_CORES)
    cores = set(cfg.get("server_cores") or SERVER_CORES)
    cfg["tag"] = secrets.token_hex(3)
    cfg["room"] = f"sig-{cfg['tag']}"
    res: dict[str, Any] = {k: cfg[k] for k in ("viewers", "seconds", "rate", "idle_s", "procs", "quick")}
    res.update(gateways=2, room=cfg["room"], flush_ms=int(os.environ.get("LIVESALE_SIGNAL_FLUSH_MS", "200")),
               database=("PostgreSQL" if cfg.get("database_url", "").startswith("postgres") else "SQLite"))
    loop = asyncio.get_running_loop()
    cl = Cluster(cores, cfg.get("database_url", ""))
    clients: Clients | None = None
    probe: Probe | None = None
    try:
        await loop.run_in_executor(None, cl.start)
        cfg["secret"] = cl.secret
        tok = await loop.run_in_executor(None, cl.gws[0].host_token)
        await setup_room(cl.gws[0].url, tok, room=cfg["room"], product=PRODUCT)
        probe = Probe(cl.database_url, cl.vk.sock, cfg["room"])
        clients = Clients(cfg, [g.url for g in cl.gws], log)
        res.update(await clients.start())
        log(f"[signals] {res['connected']} viewers connected, {res['joined']} joined over 2 gateways in "
            f"{res['connect_s']} s" + (f"; errors {res['errors']}" if res["errors"] else ""))
        if res["joined"] < cfg["viewers"]:
            raise RuntimeError(f"only {res['joined']} of {cfg['viewers']} viewers joined: {res['errors']}")
        await asyncio.sleep(2.0)  # the joins' own signals and the first ticks settle
        # 1. idle window
        res["loadavg_before"] = round(os.getloadavg()[0], 2)
        log(f"[signals] idle window {cfg['idle_s']} s (load average {res['loadavg_before']})")
        c0, w0 = cl.cpu(), time.monotonic()
        await asyncio.sleep(cfg["idle_s"])
        idle = _cpu_delta(c0, cl.cpu())
        idle_wall = time.monotonic() - w0
        idle_gw_per_s = sum(v for k, v in idle.items() if k.startswith("gw")) / idle_wall
        res["idle"] = {"wall_s": round(idle_wall, 2), "cpu_s": {k: round(v, 2) for k, v in idle.items()}}
        # 2. send window
        total = int(cfg["viewers"] * round(cfg["rate"] * cfg["seconds"]))
        log(f"[signals] sending: {cfg['viewers']} viewers x {cfg['rate']:g} view/s x {cfg['seconds']} s = {total:,}")
        sampler = Sampler(probe)
        sampler.start()
        c0, k0, w0 = cl.cpu(), lean.core_busy_s(), time.monotonic()
        snd = await clients.send(cfg["viewers"] * cfg["rate"], cfg["seconds"])
        c1, k1, wall = cl.cpu(), lean.core_busy_s(), time.monotonic() - w0
        sc = await clients.stats()
        accepted = sc["sent"] - sc["rejected"]
        sql, after = await _drain(probe, accepted, snd["last"], cfg.get("drain_timeout_s", 180), log)
        await asyncio.sleep(2.5)  # the sink reports every 2 s: its last batches are in the stats after this
        lag = await sampler.stop()
        final = await probe.sink_stats()
        sql = await probe.sql_count()  # nothing more arrives: the count stays (no duplicates)
        d = _cpu_delta(c0, c1)
        gw = sum(v for k, v in d.items() if k.startswith("gw"))
        gw_idle = idle_gw_per_s * wall
        n = max(1, snd["sent"])
        res.update(sent=snd["sent"], rejected=sc["rejected"], accepted=accepted, sql_count=sql,
                   equal=sql == snd["sent"] and sc["rejected"] == 0, complete_after_s=after,
                   send_window_s=round(wall, 2), send_span_s=round(snd["last"] - snd["first"], 2),
                   achieved_rate=round(snd["sent"] / max(1e-3, snd["last"] - snd["first"])),
                   client_backlog_bytes=snd["backlog_bytes"],
                   gateway_cpu_s=round(gw, 2), gateway_idle_cpu_s=round(gw_idle, 2),
                   gateway_cpu_split=[round(d[f"gw{i}"], 2) for i in range(len(cl.gws))],
                   gateway_us_per_signal=round((gw - gw_idle) * 1e6 / n, 1),
                   gateway_us_per_signal_gross=round(gw * 1e6 / n, 1),
                   sink_us_per_signal=round(d["sink"] * 1e6 / n, 1),
                   valkey_us_per_signal=round(d["valkey"] * 1e6 / n, 1),
                   lag_p99_max_ms=max(lag["lag_p99_max_ms"] or 0, final.get("lag_p99_ms") or 0) or None,
                   lag_max_ms=lag["lag_max_ms"],
                   lag_p99_final_ms=final.get("lag_p99_ms"), lag_p50_final_ms=final.get("lag_p50_ms"),
                   sink_final=final, core_busy=_busy(k0, k1, wall), client_cpu_s=sc["client_cpu_s"],
                   client_errors=sc["errors"])
        log(f"[signals] sent {res['sent']:,} ({res['achieved_rate']:,}/s), rejected {res['rejected']}, SQL "
            f"{sql:,} -> equal={res['equal']}, complete {after} s after the last send; gateways "
            f"{res['gateway_us_per_signal']} µs/signal marginal ({res['gateway_us_per_signal_gross']} gross), sink "
            f"lag p99 max {res['lag_p99_max_ms']} ms, final {res['lag_p99_final_ms']} ms; core busy {res['core_busy']}")
        # 3. ramp
        if cfg.get("ramp"):
            res["ramp"] = await _ramp(cfg, cl, clients, probe, idle_gw_per_s, sc["sent"], sc["rejected"], log)
    finally:
        if clients:
            await clients.stop()
        if probe:
            with contextlib.suppress(Exception):
                await probe.aclose()
        if res.get("sent") is None or res.get("error"):
            with contextlib.suppress(Exception):
                res["server_log_tail"] = [g.tail(600) for g in cl.gws] + [cl.sink.tail(600) if cl.sink else ""]
        await loop.run_in_executor(None, cl.stop)
    return res


async def _ramp(cfg: dict, cl: Cluster, clients: Clients, probe: Probe, idle_gw_per_s: float, sent0: int,
                rejected0: int, log) -> dict:
    steps: list[dict[str, Any]] = []
    best = None
    why = "every step offered was sustained"
    total_sent, total_rej = sent0, rejected0
    for rate in cfg["ramp"]:
        if rate / cfg["viewers"] > ACTS_PER_S:
            why = f"{rate:,}/s needs more than {ACTS_PER_S:g} views/s per viewer (the acts bucket): not offered"
            break
        lb = round(os.getloadavg()[0], 2)
        log(f"[signals/ramp] {rate:,} signals/s offered for {cfg['step_s']} s")
        sampler = Sampler(probe, 0.5)
        sampler.start()
        c0, k0, w0 = cl.cpu(), lean.core_busy_s(), time.monotonic()
        snd = await clients.send(rate, cfg["step_s"])
        sql_end = await probe.sql_count()
        xlen = await probe.xlen()
        c1, k1, wall = cl.cpu(), lean.core_busy_s(), time.monotonic() - w0
        sc = await clients.stats()
        total_sent, rej = sc["sent"], sc["rejected"] - total_rej
        total_rej = sc["rejected"]
        behind = (total_sent - total_rej) - sql_end
        achieved = round(snd["sent"] / max(1e-3, snd["last"] - snd["first"]))
        d = _cpu_delta(c0, c1)
        gw = sum(v for k, v in d.items() if k.startswith("gw"))
        n = max(1, snd["sent"])
        reasons = []
        if behind > 2 * rate:
            reasons.append(f"SQL {behind:,} signals behind at the step's end (> 2 s of traffic)")
        if achieved < 0.95 * rate:
            reasons.append(f"the clients sent only {achieved:,}/s")
        if rej:
            reasons.append(f"{rej:,} rejected (acts bucket)")
        sql_all, after = await _drain(probe, total_sent - total_rej, snd["last"], cfg.get("drain_timeout_s", 180), log)
        lag = await sampler.stop()
        st = {"offered": rate, "per_viewer": round(rate / cfg["viewers"], 2), "sent": snd["sent"], "achieved": achieved,
              "rejected": rej, "behind_at_end": behind, "stream_len_at_end": xlen, "client_backlog_bytes":
              snd["backlog_bytes"], "caught_up_after_s": after, "sql_equal": sql_all == total_sent - total_rej,
              "gateway_us_per_signal": round((gw - idle_gw_per_s * wall) * 1e6 / n, 1),
              "gateway_us_per_signal_gross": round(gw * 1e6 / n, 1), "gateway_cpu_util": round(gw / wall, 2),
              "sink_cpu_util": round(d["sink"] / wall, 2), "sink_us_per_signal": round(d["sink"] * 1e6 / n, 1),
              "valkey_cpu_util": round(d["valkey"] / wall, 2), "core_busy": _busy(k0, k1, wall),
              "lag_max_ms": lag["lag_max_ms"], "loadavg_before": lb,
              "sustained": not reasons, "why_not": "; ".join(reasons)}
        steps.append(st)
        log(f"[signals/ramp] {rate:,}/s: sent {achieved:,}/s, behind {behind:,} at the end, stream {xlen}, caught up "
            f"after {after} s, gateways {st['gateway_cpu_util']} CPU ({st['gateway_us_per_signal']} µs/signal), sink "
            f"{st['sink_cpu_util']}, lag max {st['lag_max_ms']} ms -> {'sustained' if not reasons else st['why_not']}")
        if reasons or after is None:
            why = f"{rate:,}/s: " + ("; ".join(reasons) or "SQL did not catch up within 180 s")
            break
        best = rate
    return {"step_s": cfg["step_s"], "steps": steps, "max_sustained_rate": best, "stopped_because": why}


# -- docs/BENCHMARKS.md section -------------------------------------------------------------------------

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


def section(r: dict, machine: dict, command: str) -> list[str]:
    """The "Interest signals" section (with its markers) for docs/BENCHMARKS.md and the console."""
    L: list[str] = [START, f"## Interest signals: {r.get('viewers', 0):,} viewers, one `view` a second each, "
                           f"two gateway processes ({machine['date']})", ""]
    a = L.append
    if "sent" not in r:
        a(f"`{command}`: **failed**: {str(r.get('error'))[:300]}")
        a("")
        a(END)
        return L
    a(f"`{command}`" + (" (**quick smoke run: small counts**)" if r.get("quick") else "")
      + f" on commit {machine.get('checkout') or machine.get('git')}. Machine: {machine['cpu']}, {machine['cores']} "
      f"cores, Python {machine['python']}, kernel {machine['kernel']}. Two `livesale serve` processes "
      "(`LIVESALE_SETTLE_IN_PROCESS=0`, instant payments) and one `livesale settle` process (its signal sink "
      f"writes `ls:signals` into SQL) on a private Valkey and {r['database']}, all pinned to core 0; "
      f"{r['procs']} client processes on core 1 (lean clients, half of them on each gateway, source addresses "
      f"127.0.0.x). Every viewer joins a fresh room first (viewer tokens), then sends "
      f"`{{\"type\":\"view\",\"product\":\"{PRODUCT}\"}}` "
      + ("once" if r["rate"] == 1 else f"{r['rate']:g} times") + f" a second for {r['seconds']:g} s "
      "at a random phase of its own; each gateway appends its buffered signals as one stream entry every "
      f"{r['flush_ms']} ms (`LIVESALE_SIGNAL_FLUSH_MS`).")
    a("")
    a("| viewers | signals sent (rate) | rejected | SQL count | SQL = sent | complete after the last send | "
      "gateway CPU µs/signal (marginal / gross) | sink µs/signal | Valkey µs/signal | sink lag p99 ms (max seen / "
      "final) | core 0 / core 1 busy | load avg before |")
    a("|---|---|---|---|---|---|---|---|---|---|---|---|")
    cb = r.get("core_busy", {})
    p99_max = max(r.get("lag_p99_max_ms") or 0, r.get("lag_p99_final_ms") or 0) or None
    a(f"| {_f(r['viewers'])} | {_f(r['sent'])} ({_f(r.get('achieved_rate'))}/s) | {_f(r['rejected'])} | "
      f"{_f(r['sql_count'])} | {_f(r['equal'])} | {_f(r.get('complete_after_s'), 2)} s | "
      f"{_f(r['gateway_us_per_signal'])} / {_f(r['gateway_us_per_signal_gross'])} | {_f(r['sink_us_per_signal'])} | "
      f"{_f(r['valkey_us_per_signal'])} | {_f(p99_max)} / {_f(r['lag_p99_final_ms'])} | "
      f"{_f(cb.get('0', cb.get(0)), 2)} / {_f(cb.get('1', cb.get(1)), 2)} | {_f(r.get('loadavg_before'), 2)} |")
    a("")
    rp = r.get("ramp")
    if rp:
        best = rp.get("max_sustained_rate")
        all_ok = bool(rp["steps"]) and all(s["sustained"] for s in rp["steps"])
        a(f"**Maximum sustained signal rate: {'at least ' if all_ok else ''}"
          f"{_f(best) + ' signals/s' if best else 'below the first step'}** "
          f"(ramp on the same sockets, {rp['step_s']} s per step; stopped: {rp['stopped_because']}).")
        a("")
        a("| offered /s (per viewer) | sent /s | rejected | SQL behind at the step's end | stream entries left | "
          "caught up after | gateways CPU (µs/signal marginal / gross) | sink CPU (µs/signal) | Valkey CPU | "
          "sink lag max ms | core 0 / core 1 busy | sustained |")
        a("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in rp["steps"]:
            cb = s.get("core_busy", {})
            a(f"| {_f(s['offered'])} ({s['per_viewer']:g}) | {_f(s['achieved'])} | {_f(s['rejected'])} | "
              f"{_f(s['behind_at_end'])} | {_f(s['stream_len_at_end'])} | {_f(s['caught_up_after_s'], 2)} s | "
              f"{_f(s['gateway_cpu_util'], 2)} ({_f(s['gateway_us_per_signal'])} / "
              f"{_f(s['gateway_us_per_signal_gross'])}) | "
              f"{_f(s['sink_cpu_util'], 2)} ({_f(s['sink_us_per_signal'])}) | {_f(s['valkey_cpu_util'], 2)} | "
              f"{_f(s['lag_max_ms'])} | "
              f"{_f(cb.get('0', cb.get(0)), 2)} / {_f(cb.get('1', cb.get(1)), 2)} | "
              f"{'yes' if s['sustained'] else '**no**: ' + s['why_not']} |")
        a("")
    a("How to read it:")
    a("")
    a("- *SQL = sent*: `SELECT count(*) FROM signals WHERE kind='viewed' AND room_id=<the run's room>` after the "
      "drain equals the `view` messages the clients wrote, none refused (a refusal would come back as an `error` "
      "frame: the per-connection `acts` bucket, 5/s with a burst of 5). *Complete after*: from the last send to "
      "that count (polled every 0.1 s): the gateway's flush interval plus the sink's read and commit.")
    a("- *Gateway CPU per signal*: the two gateway processes' utime+stime (/proc, 10 ms ticks) over the send window; "
      f"*marginal* subtracts what they used in an idle window of {r['idle_s']:g} s with the same sockets joined "
      "(heartbeats, ticks), scaled to the send window; *gross* does not. Sink and Valkey: gross, over the same "
      "window. All of them share core 0 here, so their sum is bounded by one core.")
    a("- *Sink lag*: `lag_p99_ms` in `ls:signal-sink:stats` (the settle process writes it every 2 s: over its last "
      "2,000 batches, a batch's lag = its commit time - its oldest signal's `at_ms`), sampled each second from the "
      "send's start to the drain's end: the largest value seen, and the last.")
    if rp:
        a("- *Ramp*: the same viewers send faster, one step after the other, each after SQL caught up with the "
          "previous one. A step is sustained when at its end SQL is at most 2 s of that rate behind what was "
          "sent, the clients achieved at least 95% of the offer and nothing was refused. The offer per viewer is "
          "capped by the acts bucket (5/s): with 5,000 viewers no step above 25,000/s can be offered without "
          "more sockets. *Stream entries left*: `XLEN ls:signals` at the step's end (the sink deletes what it "
          "wrote). *Sink lag max*: the largest `lag_ms` (its last batch's lag) in the reports the sink made during the "
          "step and its catch-up (sampled every 0.5 s); its p99 spans 2,000 batches, older steps' too, so it is "
          "left out here.")
    for n in r.get("notes") or []:
        a(f"- {n}")
    if L[-1] != "":
        a("")
    a(END)
    return L


def splice(doc: str, sec: list[str]) -> str:
    """``doc`` with its signals section replaced by ``sec`` (loadtest/doc_sections.py)."""
    return doc_sections.splice(doc, sec, START, END)


def old_section(doc: str) -> list[str]:
    """The signals section of a docs/BENCHMARKS.md text, if any."""
    return doc_sections.old_section(doc, START, END)


def target(r: dict) -> tuple[str, str, bool] | None:
    """(target, measured, met) for the Targets table."""
    if not r or "sent" not in r:
        return None
    rp = r.get("ramp") or {}
    return (f"{r['viewers']:,} viewers on two gateways, one signal/s each for {r['seconds']:g} s: SQL count = "
            "signals sent",
            f"{r['sent']:,} sent, {r['sql_count']:,} in SQL ({'equal' if r['equal'] else 'NOT equal'}), complete "
            f"{_f(r.get('complete_after_s'), 2)} s after the last send; gateway {_f(r['gateway_us_per_signal'])} "
            f"µs/signal, sink lag p99 {_f(r['lag_p99_max_ms'])} ms"
            + (f"; max sustained {_f(rp.get('max_sustained_rate'))} signals/s" if rp else ""),
            bool(r["equal"]))


def notes(path: Path | None = None) -> list[str]:
    """The bullets of loadtest/bench_notes.md about this step (starting with "Interest signals")."""
    return doc_sections.notes_about("Interest signals", path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=0, help="default 5,000 (--quick: 300)")
    ap.add_argument("--seconds", type=float, default=0, help="send window, s (default 60; --quick: 5)")
    ap.add_argument("--ramp", action="store_true", help="then ramp the rate up: the maximum sustained signal rate")
    ap.add_argument("--steps", default="", help="the ramp's offered rates, signals/s, comma list (default "
                                               + ",".join(map(str, RAMP_STEPS)) + ")")
    ap.add_argument("--quick", action="store_true", help="300 viewers x 1/s x 5 s")
    ap.add_argument("--database-url", default="", help="the SQL database (default: a fresh SQLite file)")
    ap.add_argument("--json", default="", help="also write the result here")
    a = ap.parse_args(argv)
    if a.viewers and not 1 <= a.viewers <= 20000:
        ap.error("--viewers: 1 to 20,000")
    if a.seconds and not 1 <= a.seconds <= 600:
        ap.error("--seconds: 1 to 600")
    cfg = plan(a.quick, a.viewers or None, a.seconds or None, a.ramp)
    if a.ramp and a.steps:
        cfg["ramp"] = [int(x) for x in a.steps.split(",") if x]
    cfg["database_url"] = a.database_url
    lean.pin_to(set(CLIENT_CORES))  # the controller is a client too
    res = lean.run_and_report(lambda c: run(c, log=lambda m: print(m, file=sys.stderr, flush=True)), cfg, a.json)
    return 0 if res.get("equal") else 1


if __name__ == "__main__":
    sys.exit(main())

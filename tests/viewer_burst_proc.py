"""One OS process of viewers in a buy burst over the WebSocket (run by tests/e2e/test_members_burst.py;
not a test module).

Protocol over stdin/stdout, one JSON line each way:
  parent -> child  config line: {"base": "http://127.0.0.1:P", "room", "sale", "viewers": [[token, kind], ...]}
  child  -> parent "READY"   (every socket connected and joined)
  parent -> child  "GO"      (every process is ready: each socket sends one `buy` at once)
  child  -> parent result line: {"results": [[kind, code, hold, units_left], ...]}
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp


async def _viewer(session: aiohttp.ClientSession, base: str, room: str, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(base + "/ws", protocols=("livesale.v1.json",))
    await ws.send_json({"type": "join", "room": room, "token": token})
    while True:
        m = await asyncio.wait_for(ws.receive_json(), 30)
        if m["type"] == "snapshot":
            return ws
        if m["type"] == "error":
            raise SystemExit(f"join refused: {m}")


async def _buy(ws: aiohttp.ClientWebSocketResponse, sale: str, rid: str) -> dict:
    await ws.send_json({"type": "buy", "rid": rid, "sale": sale, "qty": 1})
    while True:
        m = await asyncio.wait_for(ws.receive_json(), 30)
        if m.get("rid") == rid:
            return m


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    # no per-session connection cap (aiohttp keeps 100 by default; each socket holds one)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = await asyncio.gather(*(_viewer(session, cfg["base"], cfg["room"], tok) for tok, _ in cfg["viewers"]))
        print("READY", flush=True)
        go = await loop.run_in_executor(None, sys.stdin.readline)
        if go.strip() != "GO":
            raise SystemExit(f"expected GO, got {go!r}")
        answers = await asyncio.gather(*(_buy(ws, cfg["sale"], f"b{i}-{id(ws)}") for i, ws in enumerate(sockets)))
        out = [[kind, a.get("code"), a.get("hold"), a.get("units_left")]
               for (_, kind), a in zip(cfg["viewers"], answers, strict=True)]
        for ws in sockets:
            await ws.close()
    print(json.dumps({"results": out}), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())

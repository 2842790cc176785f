"""One OS process of viewers in an interaction burst over the WebSocket (claim a coupon, vote, enter a
draw: run by tests/proc_helpers.py ``act_burst``; not a test module).

Protocol over stdin/stdout, one JSON line each way:
  parent -> child  config line: {"base": "http://127.0.0.1:P", "room", "viewers": [[token, kind, [msg, ...]], ...],
                   "hold": false}
  child  -> parent "READY"   (every socket connected and joined)
  parent -> child  "GO"      (every process is ready: each socket sends its messages, one after another,
                             each with a fresh rid, waiting for the answer carrying that rid)
  child  -> parent result line: {"results": [[kind, [answer, ...]], ...]}
With "hold": true the sockets stay joined after answering until the parent sends "CLOSE" (a draw's
entrants must be present when it draws); the result line comes first.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp


async def _viewer(session: aiohttp.ClientSession, base: str, room: str, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(base + "/ws", protocols=("livesale.v1.json",), heartbeat=None)
    await ws.send_json({"type": "join", "room": room, "token": token})
    while True:
        m = await asyncio.wait_for(ws.receive_json(), 60)
        if m["type"] == "snapshot":
            return ws
        if m["type"] == "error":
            raise SystemExit(f"join refused: {m}")


async def _ask(ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any], rid: str) -> dict[str, Any]:
    await ws.send_json({**msg, "rid": rid})
    while True:
        m = await asyncio.wait_for(ws.receive_json(), 60)
        if m.get("rid") == rid:
            return dict(m)


async def _run(ws: aiohttp.ClientWebSocketResponse, msgs: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return [await _ask(ws, m, f"{tag}-{n}") for n, m in enumerate(msgs)]


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read (and drop) what the room sends while the socket waits, so its buffer never fills."""
    async for _ in ws:
        pass


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = await asyncio.gather(*(_viewer(session, cfg["base"], cfg["room"], v[0]) for v in cfg["viewers"]))
        print("READY", flush=True)
        go = await loop.run_in_executor(None, sys.stdin.readline)
        if go.strip() != "GO":
            raise SystemExit(f"expected GO, got {go!r}")
        answers = await asyncio.gather(*(_run(ws, v[2], f"a{i}") for i, (ws, v) in
                                         enumerate(zip(sockets, cfg["viewers"], strict=True))))
        out = [[v[1], a] for v, a in zip(cfg["viewers"], answers, strict=True)]
        print(json.dumps({"results": out}), flush=True)
        if cfg.get("hold"):
            drains = [asyncio.create_task(_drain(ws)) for ws in sockets]
            close = await loop.run_in_executor(None, sys.stdin.readline)
            if close.strip() != "CLOSE":
                raise SystemExit(f"expected CLOSE, got {close!r}")
            for d in drains:
                d.cancel()
        for ws in sockets:
            await ws.close()


if __name__ == "__main__":
    asyncio.run(_main())

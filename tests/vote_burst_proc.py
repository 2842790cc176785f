"""One OS process of voters in a poll burst (run by tests/e2e/test_vote_burst.py; not a test module).

A process holds WebSocket viewers of one room, on one or more gateways, all from its own source
address (127.0.0.x), connected and joined before the burst so only the votes race.

Protocol over stdin/stdout, one JSON line or word each way:
  parent -> child  config line: {"src": "127.0.0.x", "timeout": s, "concurrency": n, "room", "poll",
                                 "viewers": [[base, token, option, again], ...]}
                   (``again``: the option of a second vote, sent once the first is answered; null: none)
  child  -> parent "READY"   (every socket connected and joined)
  parent -> child  "GO"      (each socket sends its vote now)
  child  -> parent result line: {"results": [[code, option, again_code, again_option], ...]}
                   (in config order; code NO_ANSWER when nothing came back in time, CLOSED_SOCKET when
                   the socket closed first; again_code null when no second vote was sent)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import aiohttp

PROTOCOL = "livesale.v1.json"


async def _join(session: aiohttp.ClientSession, sem: asyncio.Semaphore, base: str, room: str, token: str,
                wait: float) -> aiohttp.ClientWebSocketResponse:
    async with sem:
        ws = await session.ws_connect(base + "/ws", protocols=(PROTOCOL,), heartbeat=None)
        await ws.send_json({"type": "join", "room": room, "token": token})
        while True:
            m = await asyncio.wait_for(ws.receive_json(), wait)
            if m["type"] == "snapshot":
                return ws
            if m["type"] == "error":
                raise SystemExit(f"join refused: {m}")


async def _vote(ws: aiohttp.ClientWebSocketResponse, poll: str, option: int, rid: str, wait: float) -> list[Any]:
    """[code, option] of the vote_result echoing ``rid`` (ticks and events in between are skipped)."""
    await ws.send_json({"type": "vote", "rid": rid, "poll": poll, "option": option})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return ["NO_ANSWER", None]
        try:
            msg = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            return ["NO_ANSWER", None]
        if msg.type != aiohttp.WSMsgType.TEXT:
            if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            return ["CLOSED_SOCKET", None]
        m = json.loads(msg.data)
        if m.get("rid") == rid:
            if m.get("type") != "vote_result":
                return [f"{m.get('type')}:{m.get('code')}", None]
            return [m.get("code"), m.get("option")]


async def _voter(ws: aiohttp.ClientWebSocketResponse, poll: str, i: int, option: int, again: int | None,
                 wait: float) -> list[Any]:
    code, counted = await _vote(ws, poll, option, f"v{i}", wait)
    if again is None:
        return [code, counted, None, None]
    code2, counted2 = await _vote(ws, poll, again, f"w{i}", wait)
    return [code, counted, code2, counted2]


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    wait = float(cfg["timeout"])
    connector = aiohttp.TCPConnector(limit=0, local_addr=(cfg["src"], 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(int(cfg.get("concurrency", 100)))
        sockets = list(await asyncio.gather(*(_join(session, sem, base, cfg["room"], tok, wait)
                                              for base, tok, _opt, _again in cfg["viewers"])))
        print("READY", flush=True)
        go = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if go != "GO":
            raise SystemExit(f"expected GO, got {go!r}")
        out = await asyncio.gather(*(_voter(ws, cfg["poll"], i, opt, again, wait)
                                     for i, (ws, (_b, _t, opt, again)) in enumerate(zip(sockets, cfg["viewers"],
                                                                                         strict=True))))
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
    print(json.dumps({"results": out}), flush=True)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a test dependency here, but not required
        asyncio.run(_main())
    else:
        uvloop.run(_main())

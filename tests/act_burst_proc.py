"""One OS process of viewers in an interaction burst over the WebSocket (claim a coupon, vote, enter a
draw: run by tests/proc_helpers.py ``ActBurst``; not a test module).

A process holds WebSocket viewers of one room, on one or more gateways, all from its own source
address (127.0.0.x), connected and joined before the burst so only the messages race.

Protocol over stdin/stdout, one JSON line or word each way:
  parent -> child  config line: {"room", "src": "127.0.0.x" | null, "timeout": s, "concurrency": n, "hold": false,
                                 "viewers": [[base, token, kind, [msg, ...]], ...]}
                   (``src``: the source address of every socket, null: the system's choice; ``timeout``: the
                   wait for a join's snapshot and for each answer; ``concurrency``: joins under way at once)
  child  -> parent "READY"   (every socket connected and joined)
  parent -> child  "GO"      (each socket sends its messages, one after another, each with a fresh rid,
                             waiting for the answer carrying that rid; ticks and events in between are skipped)
  child  -> parent result line: {"results": [[kind, [answer, ...]], ...]}
                   (in config order, one answer per message; {"type": "NO_ANSWER"} when nothing came back
                   in time, {"type": "CLOSED_SOCKET"} when the socket closed first)
With "hold": true the sockets stay joined after answering until the parent sends "CLOSE" (a draw's
entrants must be present when it draws); the result line comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import aiohttp

PROTOCOL = "livesale.v1.json"
NO_ANSWER: dict[str, Any] = {"type": "NO_ANSWER"}
CLOSED_SOCKET: dict[str, Any] = {"type": "CLOSED_SOCKET"}


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


async def _ask(ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any], rid: str, wait: float) -> dict[str, Any]:
    """The message echoing ``rid``, else NO_ANSWER / CLOSED_SOCKET."""
    if ws.closed:
        return CLOSED_SOCKET
    try:
        await ws.send_json({**msg, "rid": rid})
    except (ConnectionError, RuntimeError):  # closed under us (aiohttp raises either, by version)
        return CLOSED_SOCKET
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return NO_ANSWER
        try:
            frame = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            return NO_ANSWER
        if frame.type != aiohttp.WSMsgType.TEXT:
            if frame.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            return CLOSED_SOCKET
        m = json.loads(frame.data)
        if m.get("rid") == rid:
            return dict(m)


async def _run(ws: aiohttp.ClientWebSocketResponse, msgs: list[dict[str, Any]], tag: str,
               wait: float) -> list[dict[str, Any]]:
    return [await _ask(ws, m, f"{tag}-{n}", wait) for n, m in enumerate(msgs)]


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read (and drop) what the room sends while the socket waits, so its buffer never fills."""
    async for _ in ws:
        pass


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    wait = float(cfg["timeout"])
    viewers = cfg["viewers"]
    connector = aiohttp.TCPConnector(limit=0, local_addr=(cfg["src"], 0) if cfg.get("src") else None)
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(int(cfg["concurrency"]))
        sockets = await asyncio.gather(*(_join(session, sem, base, cfg["room"], token, wait)
                                         for base, token, _kind, _msgs in viewers))
        print("READY", flush=True)
        go = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if go != "GO":
            raise SystemExit(f"expected GO, got {go!r}")
        answers = await asyncio.gather(*(_run(ws, v[3], f"a{i}", wait)
                                         for i, (ws, v) in enumerate(zip(sockets, viewers, strict=True))))
        out = [[v[2], a] for v, a in zip(viewers, answers, strict=True)]
        print(json.dumps({"results": out}), flush=True)
        if cfg.get("hold"):
            drains = [asyncio.create_task(_drain(ws)) for ws in sockets]
            close = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if close != "CLOSE":
                raise SystemExit(f"expected CLOSE, got {close!r}")
            for d in drains:
                d.cancel()
            await asyncio.gather(*drains, return_exceptions=True)
        with contextlib.suppress(Exception):  # the answers are out: a slow close handshake changes nothing
            await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 10)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a test dependency here, but not required
        asyncio.run(_main())
    else:
        uvloop.run(_main())

"""One OS process of viewers entering a lucky draw in a burst (run by tests/e2e/test_draw_burst.py; not a
test module). Every socket stays connected and joined until the draw is over: presence at the draw is
part of the entry rule.

Protocol over stdin/stdout, one JSON line or word each way:
  parent -> child  config line: {"base": "http://127.0.0.1:P", "room", "timeout": s, "concurrency": n,
                                 "viewers": [[token, user], ...]}
  child  -> parent "READY"          (every socket connected and joined)
  parent -> child  "GO <draw id>"   (each socket sends one `enter_draw` at once)
  child  -> parent "ENTERED <n>"    (every socket has its entry_result; n of them ENTERED)
  parent -> child  "END <json list of the winners' entry ids>"  (the draw is over: wait until every socket
                                    has draw_result and every winner here its draw_won, then close)
  child  -> parent result line: {"entries": [[user, code, entry_id], ...],   (config order)
                                 "results": <sockets that received draw_result>,
                                 "won": [[user, entry_id, hold], ...]}       (every draw_won received)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import aiohttp

PROTOCOL = "livesale.v1.json"


class Viewer:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, user: str) -> None:
        self.ws = ws
        self.user = user
        self.entry: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.result = False
        self.won: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            m = json.loads(msg.data)
            t = m.get("type")
            if t == "entry_result" and m.get("rid") == "enter" and not self.entry.done():
                self.entry.set_result(m)
            elif t == "draw_result":
                self.result = True
            elif t == "draw_won":
                self.won.append(m)
        if not self.entry.done():
            self.entry.set_result({"code": "CLOSED"})


async def _join(session: aiohttp.ClientSession, sem: asyncio.Semaphore, base: str, room: str, token: str,
                user: str, wait: float) -> Viewer:
    async with sem:
        ws = await session.ws_connect(base + "/ws", protocols=(PROTOCOL,), heartbeat=None)
        await ws.send_json({"type": "join", "room": room, "token": token})
        while True:
            m = await asyncio.wait_for(ws.receive_json(), wait)
            if m["type"] == "snapshot":
                return Viewer(ws, user)
            if m["type"] == "error":
                raise SystemExit(f"join refused: {m}")


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    wait = float(cfg["timeout"])
    sem = asyncio.Semaphore(int(cfg.get("concurrency", 100)))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        viewers = list(await asyncio.gather(*(_join(session, sem, cfg["base"], cfg["room"], tok, user, wait)
                                              for tok, user in cfg["viewers"])))
        print("READY", flush=True)
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line.startswith("GO "):
            raise SystemExit(f"expected GO <draw>, got {line!r}")
        draw = line.split()[1]
        await asyncio.gather(*(v.ws.send_json({"type": "enter_draw", "rid": "enter", "draw": draw}) for v in viewers))
        entries = []
        for v in viewers:
            try:
                m = await asyncio.wait_for(asyncio.shield(v.entry), wait)
            except TimeoutError:
                m = {"code": "NO_ANSWER"}
            entries.append([v.user, m.get("code"), m.get("entry_id")])
        print(f"ENTERED {sum(1 for e in entries if e[1] == 'ENTERED')}", flush=True)
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line.startswith("END "):
            raise SystemExit(f"expected END <winners>, got {line!r}")
        winners = set(json.loads(line[4:]))
        mine = {v.user: e[2] for v, e in zip(viewers, entries, strict=True)}
        deadline = loop.time() + wait
        while loop.time() < deadline and not all(v.result and (v.won or mine[v.user] not in winners)
                                                 for v in viewers):
            await asyncio.sleep(0.05)  # polling the readers' state, bounded by the deadline
        out = {"entries": entries, "results": sum(1 for v in viewers if v.result),
               "won": [[v.user, m.get("entry_id"), m.get("hold")] for v in viewers for m in v.won]}
        for v in viewers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(v.ws.close(), 5)
            v.task.cancel()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a test dependency here, but not required
        asyncio.run(_main())
    else:
        uvloop.run(_main())

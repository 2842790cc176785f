"""One OS process of buyers in a burst that outlives a Redis master's failover (run by
tests/e2e/test_cluster_burst.py; not a test module).

Protocol over stdin/stdout, one JSON line each way:
  parent -> child  config line: {"bases": [gateway URLs], "room", "buyers": [[token, user, sale], ...],
                                 "deadline_s", "spread_s"}
  child  -> parent "READY"   (every socket connected and joined, spread over the gateways)
  parent -> child  "GO"      (each buyer sends one `buy`, the buyers' clicks spread evenly over spread_s,
                             then `pay` for a hold)
  child  -> parent result line: {"results": [[user, sale, buy_code, hold, pay_code, order,
                                              [[sent_s, answered_s, code], ...]], ...]}

A buyer answered `UNAVAILABLE` or `INTERNAL` (a retryable error: the shard is failing over) sends the
same request again with the same `rid`, as docs/PROTOCOL.md tells clients to, backing off from 100 ms to
1 s, until it gets a final answer or the deadline passes. Every request and its answer is timed (seconds on this process's
monotonic clock, which the parent also reads: the same machine).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

RETRYABLE = {"UNAVAILABLE", "INTERNAL"}


async def _join(session: aiohttp.ClientSession, base: str, room: str, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(base + "/ws", protocols=("livesale.v1.json",), heartbeat=None)
    await ws.send_json({"type": "join", "room": room, "token": token})
    while True:
        m = await asyncio.wait_for(ws.receive_json(), 60)
        if m["type"] == "snapshot":
            return ws
        if m["type"] == "error":
            raise SystemExit(f"join refused: {m}")


class Buyer:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, user: str, sale: str) -> None:
        self.ws, self.user, self.sale = ws, user, sale
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.log: list[list[Any]] = []

    async def read(self) -> None:
        async for m in self.ws:
            if m.type != aiohttp.WSMsgType.TEXT:
                continue
            d = json.loads(m.data)
            fut = self.waiting.pop(d.get("rid", ""), None) if d.get("type") in (
                "buy_result", "pay_result", "error") else None
            if fut is not None and not fut.done():
                fut.set_result(d)

    async def ask(self, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        pause = 0.1
        while True:
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self.waiting[body["rid"]] = fut
            sent = time.monotonic()
            await self.ws.send_json(body)
            try:
                d = await asyncio.wait_for(fut, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                self.log.append([sent, None, "NO_ANSWER"])
                return {"code": "NO_ANSWER"}
            self.log.append([sent, time.monotonic(), d.get("code")])
            if d.get("code") not in RETRYABLE or time.monotonic() > deadline:
                return d
            await asyncio.sleep(pause)  # back off as a client should: 0.1, 0.2, 0.4 ... 1 s
            pause = min(1.0, pause * 2)

    async def run(self, deadline: float, delay: float) -> list[Any]:
        await asyncio.sleep(delay)
        b = await self.ask({"type": "buy", "rid": f"b-{self.user}", "sale": self.sale, "qty": 1}, deadline)
        hold, pay_code, order = b.get("hold"), None, None
        if b.get("code") == "RESERVED":
            p = await self.ask({"type": "pay", "rid": f"p-{self.user}", "hold": hold}, deadline)
            pay_code = p.get("code")
            order = (p.get("order") or {}).get("order_id") if isinstance(p.get("order"), dict) else p.get("order")
        return [self.user, self.sale, b.get("code"), hold, pay_code, order, self.log]


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    bases, room = cfg["bases"], cfg["room"]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        sem = asyncio.Semaphore(100)

        async def make(i: int, token: str, user: str, sale: str) -> Buyer:
            async with sem:
                return Buyer(await _join(session, bases[i % len(bases)], room, token), user, sale)

        buyers = await asyncio.gather(*(make(i, t, u, s) for i, (t, u, s) in enumerate(cfg["buyers"])))
        readers = [asyncio.create_task(b.read()) for b in buyers]
        print("READY", flush=True)
        go = await loop.run_in_executor(None, sys.stdin.readline)
        if go.strip() != "GO":
            raise SystemExit(f"expected GO, got {go!r}")
        deadline = time.monotonic() + float(cfg["deadline_s"])
        spread = float(cfg.get("spread_s", 0))  # clicks spread evenly over this long (0: all at once)
        results = await asyncio.gather(*(b.run(deadline, spread * i / len(buyers)) for i, b in enumerate(buyers)))
        for r in readers:
            r.cancel()
        await asyncio.gather(*(b.ws.close() for b in buyers), return_exceptions=True)
    print(json.dumps({"results": results}), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())

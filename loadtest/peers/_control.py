"""Control API shared by the Python peers (same contract as common.js).

GET /ctl/status -> {"clients", "sent", "running"}; GET /ctl/start?rate=R&count=C starts C
broadcasts at R per second on an absolute schedule (no drift); GET /ctl/stop stops a run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

def announcement(seq: int, sched_ms: float) -> dict:
    """text = "s<scheduled ms>." + padding (~150-byte frame): lateness against the schedule is measurable."""
    head = f"s{round(sched_ms)}."
    return {"type": "announcement", "seq": seq, "ts": int(time.time() * 1000),
            "text": head + "x" * max(0, 80 - len(head))}


def add_control(app: web.Application, count_clients: Callable[[], int],
                broadcast: Callable[[dict], Awaitable[None]]) -> None:
    state = {"sent": 0, "running": False, "stop": False}

    async def run(rate: float, count: int) -> None:
        t0 = time.monotonic()
        w0 = time.time() * 1000
        try:
            for k in range(count):
                if state["stop"]:
                    break
                delay = t0 + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                state["sent"] += 1
                await broadcast(announcement(state["sent"], w0 + k * 1000 / rate))
        finally:
            state["running"] = False

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"clients": count_clients(), "sent": state["sent"], "running": state["running"]})

    async def start(request: web.Request) -> web.Response:
        if state["running"]:
            return web.json_response({"error": "running"})
        rate = float(request.query.get("rate", "10"))
        count = int(request.query.get("count", "100"))
        state["running"] = True
        state["stop"] = False
        first = state["sent"] + 1
        app["_bcast"] = asyncio.ensure_future(run(rate, count))
        return web.json_response({"first_seq": first, "count": count})

    async def stop(request: web.Request) -> web.Response:
        state["stop"] = True
        return web.json_response({"sent": state["sent"]})

    app.router.add_get("/ctl/stop", stop)
    app.router.add_get("/ctl/status", status)
    app.router.add_get("/ctl/start", start)


def serve(app: web.Application, port: int) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    print(f"peer on {port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, backlog=4096, print=None, access_log=None)


def dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))

"""Peer: plain aiohttp 3.14 + uvloop, `await ws.send_str(msg)` per client, JSON encoded once."""

from __future__ import annotations

import sys

from aiohttp import web

from _control import add_control, dumps, serve

clients: set[web.WebSocketResponse] = set()


async def handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    clients.add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        clients.discard(ws)
    return ws


async def broadcast(event: dict) -> None:
    msg = dumps(event)
    for ws in list(clients):
        try:
            await ws.send_str(msg)
        except ConnectionError:
            clients.discard(ws)


app = web.Application()
app.router.add_get("/ws", handler)
add_control(app, lambda: len(clients), broadcast)

if __name__ == "__main__":
    serve(app, int(sys.argv[1]) if len(sys.argv) > 1 else 8093)

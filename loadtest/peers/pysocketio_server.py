"""Peer: python-socketio 5.18 on aiohttp + uvloop, `await sio.emit(...)` to every client."""

from __future__ import annotations

import sys

import socketio
from aiohttp import web

from _control import add_control, serve

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"], http_compression=False,
                           ping_interval=25, ping_timeout=20)
connected = 0


@sio.event
async def connect(sid, environ):  # noqa: ARG001
    global connected
    connected += 1


@sio.event
async def disconnect(sid, *args):  # noqa: ARG001
    global connected
    connected -= 1


async def broadcast(event: dict) -> None:
    await sio.emit("announcement", event)


app = web.Application()
sio.attach(app)
add_control(app, lambda: connected, broadcast)

if __name__ == "__main__":
    serve(app, int(sys.argv[1]) if len(sys.argv) > 1 else 8094)

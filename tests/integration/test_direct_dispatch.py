"""Synchronous inbound dispatch (stream_gateway/direct.py, ``Gateway._direct``): a joined socket's buy, vote,
clock, ping... are handled from the transport's data callback when the read loop is idle, and everything keeps
its order and its answers (docs/PROTOCOL.md). Real sockets, real Valkey and SQL."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import orjson
import pytest

from conftest import timeout
from gateway_helpers import JSON, MSGPACK, Api, RawWs, WsClient, host_token, setup_room, viewer
from server.appkeys import GATEWAY
from server.config import Settings
from test_gateway import make_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(90, method="thread")


def _frames(*objs: dict[str, Any]) -> bytes:
    """Masked client text frames, concatenated: one TCP write, usually one read on the server."""
    out = b""
    for obj in objs:
        payload = orjson.dumps(obj)
        n = len(payload)
        head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
        mask = os.urandom(4)
        out += head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return out


async def _server(make_server: Any, settings: Settings, *rooms: str) -> tuple[Any, Api]:
    client = await make_server()
    api = Api(client)
    for room_id in rooms:  # one product: no personal shelf after the join, so the read loop is idle at once
        await setup_room(api, host_token(settings.secret), room_id, products=1)
    return client, api


async def _sale(api: Api, settings: Settings, room_id: str) -> str:
    sale = await api.ok("POST", f"/api/rooms/{room_id}/sales", host_token(settings.secret),
                        {"product_id": "p0", "units": 10, "per_user_limit": 5}, 201)
    sid: str = sale["sale_id"]
    return sid


@pytest.mark.parametrize("protocol", [JSON, MSGPACK])
async def test_an_idle_joined_socket_is_served_directly(make_server: Any, settings: Settings, uid: str,
                                                        protocol: str) -> None:
    client, api = await _server(make_server, settings, uid)
    sid = await _sale(api, settings, uid)
    gateway = client.server.app[GATEWAY]
    c = await WsClient.connect(client, "/ws", protocol)
    try:
        await c.wait(lambda m: m["type"] == "hello")
        before = gateway.direct
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        assert gateway.direct == before, "not joined: the read loop answers"
        token, _ = viewer(settings.secret, "Direct")
        assert (await c.join(uid, token))["type"] == "snapshot"
        before = gateway.direct
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        assert (await c.request({"type": "clock", "t0": 1.5}))["type"] == "clock"
        r = await c.request({"type": "buy", "sale": sid, "qty": 1})
        assert r["type"] == "buy_result" and r["code"] == "RESERVED" and r["hold"], r
        bad = await c.request({"type": "buy", "sale": sid, "qty": "two"})
        assert bad["type"] == "error" and bad["code"] == "BAD_MESSAGE", bad
        assert gateway.direct == before + 4
        liked = gateway.direct
        await c.send({"type": "like", "n": 1})  # awaits Redis: through the read loop
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        assert gateway.direct <= liked + 1
    finally:
        await c.close()


async def test_order_join_buy_pay_buy_is_kept(make_server: Any, settings: Settings, uid: str) -> None:
    """Messages behind one whose handling awaits wait for it: a buy sent right after a join to another room
    is decided in the new room, and a clock sent right after a pay is answered after the pay."""
    room_a, room_b = uid + "a", uid + "b"
    client, api = await _server(make_server, settings, room_a, room_b)
    sid_b = await _sale(api, settings, room_b)
    gateway = client.server.app[GATEWAY]
    token, _ = viewer(settings.secret, "Order")
    raw = await RawWs.connect(client.server.host, client.server.port)
    try:
        await raw.send_json({"type": "join", "room": room_b, "token": token})
        await raw.read_json_until(lambda m: m["type"] == "snapshot", timeout(5))
        await raw.send_json({"type": "buy", "rid": "b1", "sale": sid_b, "qty": 1})
        first = await raw.read_json_until(lambda m: m.get("rid") == "b1", timeout(5))
        assert first["code"] == "RESERVED", first
        await raw.send_json({"type": "join", "room": room_a, "token": token})
        await raw.read_json_until(lambda m: m["type"] == "snapshot", timeout(5))
        before = gateway.direct

        await asyncio.get_running_loop().sock_sendall(raw.sock, _frames(
            {"type": "join", "room": room_b, "token": token, "rid": "j"},
            {"type": "buy", "rid": "b2", "sale": sid_b, "qty": 1},
            {"type": "pay", "rid": "p1", "hold": first["hold"]},
            {"type": "clock", "rid": "c1", "t0": 1},
            {"type": "buy", "rid": "b3", "sale": sid_b, "qty": 1},
            {"type": "ping", "rid": "g1"}))
        got: list[dict[str, Any]] = []
        want = {"b2", "p1", "c1", "b3", "g1"}

        def record(m: dict[str, Any]) -> bool:
            got.append(m)
            return want <= {x.get("rid") for x in got}
        await raw.read_json_until(record, timeout(10))
    finally:
        raw.close()
    at = {m.get("rid") or m["type"]: i for i, m in enumerate(got) if m.get("rid") or m["type"] == "snapshot"}
    by = {m.get("rid"): m for m in got}
    assert at["snapshot"] < at["b2"], got
    assert by["b2"]["code"] == "RESERVED" and by["b3"]["code"] == "RESERVED", got  # decided in room B
    assert by["p1"]["type"] == "pay_result" and by["p1"]["code"] == "CONFIRMED", got
    assert at["p1"] < at["c1"] < at["g1"], got  # nothing overtakes the pay
    assert gateway.direct >= before


async def test_answers_to_one_segment_leave_in_one_write(make_server: Any, settings: Settings, uid: str) -> None:
    """Five requests in one TCP write to an idle joined socket: handled in one data callback, their five answers
    leave in one transport write (stream_gateway/outbox.py), in order."""
    client, api = await _server(make_server, settings, uid)
    gateway = client.server.app[GATEWAY]
    token, _ = viewer(settings.secret, "Coalesce")
    raw = await RawWs.connect(client.server.host, client.server.port)
    try:
        await raw.send_json({"type": "join", "room": uid, "token": token})
        await raw.read_json_until(lambda m: m["type"] == "snapshot", timeout(5))
        flushes, saved = gateway.outbox.flushes, gateway.outbox.frames_saved
        rids = [f"r{i}" for i in range(5)]
        await asyncio.get_running_loop().sock_sendall(raw.sock, _frames(
            *({"type": "clock" if i % 2 else "ping", "rid": rid, "t0": i} for i, rid in enumerate(rids))))
        got: list[dict[str, Any]] = []

        def record(m: dict[str, Any]) -> bool:
            if m.get("rid"):
                got.append(m)
            return len(got) == len(rids)
        await raw.read_json_until(record, timeout(10))
    finally:
        raw.close()
    assert [m["rid"] for m in got] == rids
    assert [m["type"] for m in got] == ["pong", "clock", "pong", "clock", "pong"]
    assert gateway.outbox.frames_saved - saved >= len(rids) - 1, "the five answers were not one write"
    assert gateway.outbox.flushes - flushes <= 2

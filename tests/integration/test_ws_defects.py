"""Defects found by the outside checks (issue #6) on the WebSocket path, each pinned by a test.

Real sockets, real Redis/Valkey and real SQL; waits are condition-based with timeouts.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import pytest

from conftest import timeout
from gateway_helpers import RawWs, is_event, viewer
from inventory.scripts import Inventory
from test_gateway import Room, make_server, room  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(90, method="thread")


async def _sale(room: Room, units: int, **extra: Any) -> str:
    sale = await room.api.ok("POST", f"/api/rooms/{room.id}/sales", room.host,
                             {"product_id": "p0", "units": units, **extra}, 201)
    return str(sale["sale_id"])


async def _funnel(room: Room) -> dict[str, Any]:
    dash = await room.api.ok("GET", f"/api/rooms/{room.id}/dashboard", room.host, status=200)
    return {"requests": dash["requests"], "funnel": {k: v for k, v in dash["funnel"].items() if k != "viewers"}}


# -- item 1: a replayed buy answer emits nothing and counts nothing --------------------------------------

async def test_repeated_buy_does_not_rebroadcast_sold_out(room: Room, inventory: Inventory) -> None:
    sid = await _sale(room, 3)
    watcher, _ = await room.viewer("Watcher")
    buyer, _ = await room.viewer("Buyer")
    others = [await room.viewer(f"B{i}") for i in range(2)]
    first = await buyer.request({"type": "buy", "rid": "r0", "sale": sid, "qty": 1})
    assert first["code"] == "RESERVED"
    for i, (c, _) in enumerate(others):
        r = await c.request({"type": "buy", "rid": f"r{i + 1}", "sale": sid, "qty": 1})
        assert r["code"] == "RESERVED"
    await watcher.wait(lambda m: m.get("type") == "sale_sold_out", timeout(5))
    await _flush_funnel(room)
    funnel_before = await _funnel(room)
    mark = len(watcher.msgs)
    for _ in range(5):
        again = await buyer.request({"type": "buy", "rid": "r0", "sale": sid, "qty": 1})
        assert again["code"] == "RESERVED" and again["hold"] == first["hold"]
    # an event published after the retries tells us the room's stream has caught up
    await room.announce_http("after-retries")
    await watcher.wait(lambda m: m.get("text") == "after-retries", timeout(5), start=mark)
    sold_out = [m for m in watcher.msgs if m.get("type") == "sale_sold_out"]
    assert len(sold_out) == 1, sold_out
    events = [m["type"] for m in watcher.msgs[mark:] if is_event(m)]
    assert events == ["announcement"], events
    await _flush_funnel(room)
    assert await _funnel(room) == funnel_before
    assert (await inventory.check_invariant(sid)).ok


async def _flush_funnel(room: Room) -> None:
    from server.appkeys import COMMERCE

    await room.client.server.app[COMMERCE].funnel.flush()


# -- item 3: qty null is a wrong type like 1.0, true and "1" ----------------------------------------------

async def test_buy_qty_null_is_refused(room: Room, inventory: Inventory) -> None:
    sid = await _sale(room, 5)
    c, _ = await room.viewer("Nully")
    before = await inventory.counters(sid)
    for bad in (None, 1.0, True, "1"):
        r = await c.request({"type": "buy", "sale": sid, "qty": bad})
        assert r["type"] == "error" and r["code"] == "BAD_MESSAGE", (bad, r)
        assert "qty" in r["message"]
    omitted = await c.request({"type": "buy", "sale": sid})
    assert omitted["type"] == "buy_result" and omitted["code"] == "RESERVED" and omitted["qty"] == 1
    after = await inventory.counters(sid)
    assert before is not None and after is not None and after.held == before.held + 1


# -- item 4: an oversize frame always closes with 1009 ------------------------------------------------------

async def _oversize_close_code(host: str, port: int, room_id: str, size: int) -> int | None:
    """Send an oversize frame the way a busy client does: the server's close frame arrives while the
    client is still writing the rest of the frame. The client must be able to finish writing (the
    server keeps reading and discarding instead of resetting the connection) and then read 1009."""
    raw = await RawWs.connect(host, port, rcvbuf=1 << 16)
    loop = asyncio.get_running_loop()
    try:
        await raw.send_json({"type": "join", "room": room_id})
        await raw.read_json_until(lambda m: m["type"] == "snapshot")
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, size) + os.urandom(4)
        chunk = b"x" * 16384
        await loop.sock_sendall(raw.sock, head + chunk)
        readable = loop.create_future()
        loop.add_reader(raw.sock.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await asyncio.wait_for(readable, timeout(10))  # the server's answer is here (not read yet)
        finally:
            loop.remove_reader(raw.sock.fileno())
        try:
            for _ in range((size - len(chunk)) // len(chunk)):
                await asyncio.wait_for(loop.sock_sendall(raw.sock, chunk), timeout(10))
        except OSError:  # reset by the server: a WebSocket client reports 1006 here
            return 1006
        while True:  # room traffic (ticks) may come first
            op, data = await raw.read_frame(timeout(10))
            if op == 0x8:
                return int(struct.unpack("!H", data[:2])[0]) if len(data) >= 2 else None
    finally:
        raw.close()


async def test_oversize_frames_always_close_with_1009(room: Room) -> None:
    srv = room.client.server
    codes = [await _oversize_close_code(srv.host, srv.port, room.id, 1 << 20) for _ in range(5)]
    assert codes == [1009] * 5, codes
    codes = await asyncio.gather(*(_oversize_close_code(srv.host, srv.port, room.id, 256 * 1024)
                                   for _ in range(20)))
    assert list(codes) == [1009] * 20, codes
    h = await room.healthz()
    assert h["ok"] is True


# -- item 11: LIMIT is answered before SOLD_OUT -------------------------------------------------------------

async def test_over_the_limit_answers_limit_not_sold_out(room: Room, inventory: Inventory) -> None:
    sid = await _sale(room, 3, per_user_limit=2)
    c, _ = await room.viewer("Greedy")
    r = await c.request({"type": "buy", "sale": sid, "qty": 5})
    assert r["code"] == "LIMIT" and r["units_left"] == 3, r
    ok = await c.request({"type": "buy", "sale": sid, "qty": 2})
    assert ok["code"] == "RESERVED"
    r = await c.request({"type": "buy", "sale": sid, "qty": 1})
    assert r["code"] == "LIMIT", r
    other, _ = await room.viewer("Other")
    r = await other.request({"type": "buy", "sale": sid, "qty": 2})
    assert r["code"] == "SOLD_OUT" and r["units_left"] == 1, r
    assert (await inventory.check_invariant(sid)).ok


# -- item 12: ending the live closes its open and scheduled sales ---------------------------------------

async def test_end_live_closes_open_and_scheduled_sales(room: Room, inventory: Inventory) -> None:
    open_sid = await _sale(room, 5)
    later_sid = await _sale(room, 5, starts_in_s=600)
    watcher, _ = await room.viewer("Watcher")
    token, _ = viewer(room.secret, "Late")
    await room.api.ok("POST", f"/api/rooms/{room.id}/actions/go_live", room.host, {}, 200)
    await room.api.ok("POST", f"/api/rooms/{room.id}/actions/end_live", room.host, {}, 200)
    for sid in (open_sid, later_sid):
        ev = await watcher.wait(lambda m, s=sid: m.get("type") == "sale_closed" and m.get("sale_id") == s,
                                timeout(5))
        assert ev["reason"] == "live_ended", ev
    r = await watcher.request({"type": "buy", "sale": open_sid, "qty": 1})
    assert r["code"] == "ENDED", r
    st, body = await room.api.call("POST", f"/api/sales/{open_sid}/reserve", token,
                                   {"request_id": "late-1", "qty": 1})
    assert st == 410 and body["error"]["code"] == "ENDED", (st, body)
    # a viewer joining now sees both sales closed
    late, _ = await room.viewer("Later")
    snap = next(m for m in late.msgs if m["type"] == "snapshot")
    states = {s["sale_id"]: s["state"] for s in snap["sales"]}
    assert states[open_sid] == "closed" and states[later_sid] == "closed", states
    for sid in (open_sid, later_sid):
        assert (await inventory.check_invariant(sid)).ok

"""The hub's parts that need no Redis, driven with in-memory transports: membership, the critical lane,
join replay, ambient ticks and sale timers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from commerce.identity import Identity
from stream_gateway.connection import Conn
from stream_gateway.decisions import LIKES, UNITS, VIEWERS
from stream_gateway.fanout import RoomFeed
from stream_gateway.frames import TEXT, frame
from stream_gateway.rooms import LocalRoom, RoomRegistry, new_stats
from stream_gateway.sale_timers import SaleTimers
from stream_gateway.ticker import Ticker

NOW = 1_700_000_000_000


class FakeTransport:
    def __init__(self, buffered: int = 0) -> None:
        self.buffered = buffered
        self.data: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.data.append(data)


def conn(user: str = "", binary: bool = False, buffered: int = 0) -> Conn:
    c = Conn(None, FakeTransport(buffered), binary, 5.0, 1.0, 1 << 20)  # type: ignore[arg-type]
    c.identity = Identity(user=user, name=user, role="viewer")
    return c


def written(c: Conn) -> list[bytes]:
    return c.transport.data  # type: ignore[attr-defined, no-any-return]


def payload(data: bytes) -> Any:
    """The JSON of one unmasked server frame (7-bit or 16-bit length)."""
    n = data[1] & 0x7F
    return orjson.loads(data[4:] if n == 126 else data[2:])


def loaded_room(registry: RoomRegistry, seq: int = 10) -> LocalRoom:
    room = LocalRoom("r1", keep=4)
    room.state.epoch, room.state.seq, room.state.room = "e1", seq, {"room_id": "r1"}
    room.ready.set()
    registry.register(room)
    return room


def event(seq: int, epoch: str = "e1", **kw: Any) -> bytes:
    return orjson.dumps({"type": "announcement", "epoch": epoch, "seq": seq, "text": "hi", "ts": NOW, **kw})


class Feed:
    def __init__(self) -> None:
        self.stats = new_stats()
        self.registry = RoomRegistry(self.stats)
        self.gaps: list[LocalRoom] = []
        self.sales_changed: list[LocalRoom] = []
        self.feed = RoomFeed(self.registry, lambda: NOW, self.stats, on_gap=self.gaps.append,
                             on_sales_changed=self.sales_changed.append)


def test_membership() -> None:
    f = Feed()
    room = loaded_room(f.registry)
    a, b = conn("u1"), conn("u1", binary=True)
    f.registry.add(a, room)
    f.registry.add(b, room)
    assert room.size == 2 and room.by_user == {"u1": {a, b}} and a.room_id == "r1" and VIEWERS in room.dirty
    assert f.registry.connections() == 2
    f.registry.remove(a)
    f.registry.remove(b)
    assert room.size == 0 and room.by_user == {} and room.empty_since is not None and a.room_id is None


def test_critical_event_is_framed_once_for_every_connection() -> None:
    f = Feed()
    room = loaded_room(f.registry)
    text = [conn(f"u{i}") for i in range(3)]
    for c in text:
        f.registry.add(c, room)
    f.feed.dispatch(room, b"E" + event(11))
    frames = [written(c)[-1] for c in text]
    assert frames[0] == frame(event(11), TEXT) and all(fr is frames[0] for fr in frames)
    assert room.state.seq == 11 and [s for s, _ in room.ring] == [11] and f.stats["events"] == 1
    f.feed.dispatch(room, b"E" + event(11))  # a duplicate: dropped
    assert all(len(written(c)) == 1 for c in text)


def test_a_gap_queues_the_event_and_asks_for_a_resync() -> None:
    f = Feed()
    room = loaded_room(f.registry)
    c = conn("u1")
    f.registry.add(c, room)
    f.feed.dispatch(room, b"E" + event(13))
    assert f.gaps == [room] and room.loading and room.pending == [event(13)] and not written(c)
    f.feed.dispatch(room, b"E" + event(14))  # while loading: queued, no second resync
    assert f.gaps == [room] and room.pending == [event(13), event(14)]


def test_sale_events_rearm_timers_and_poll_units() -> None:
    f = Feed()
    room = loaded_room(f.registry)
    sale = {"sale_id": "s1", "state": "open", "starts_at": NOW - 1, "ends_at": NOW + 60_000}
    f.feed.dispatch(room, b"E" + orjson.dumps({"type": "sale_open", "epoch": "e1", "seq": 11, "sale": sale}))
    assert f.sales_changed == [room] and UNITS in room.dirty


def test_ambient_and_user_messages() -> None:
    f = Feed()
    room = loaded_room(f.registry)
    a, b = conn("u1"), conn("u2")
    f.registry.add(a, room)
    f.registry.add(b, room)
    f.feed.dispatch(room, b"A" + orjson.dumps({"k": "l", "n": 5}))
    f.feed.dispatch(room, b"A" + orjson.dumps({"k": "c", "c": {"id": "c1", "user": "u2", "text": "x"}}))
    assert room.state.likes == 5 and LIKES in room.dirty and [c["id"] for c in room.comments] == ["c1"]
    assert not written(a)  # ambient waits for the tick
    f.feed.dispatch(room, b"U" + orjson.dumps({"u": "u2", "m": {"type": "order_confirmed"}}))
    assert not written(a) and payload(written(b)[0]) == {"type": "order_confirmed"}


def test_join_resumes_from_the_ring_or_gets_a_snapshot() -> None:
    f = Feed()
    room = loaded_room(f.registry, seq=10)
    for s in (11, 12, 13):
        f.feed.on_event(room, event(s))
    c = conn("u1")
    assert f.feed.resume_or_snapshot(c, room, ("e1", 11)) is True
    msgs = [payload(d) for d in written(c)]
    assert msgs[0]["type"] == "resumed" and (msgs[0]["from_seq"], msgs[0]["to_seq"]) == (11, 13)
    assert [m["seq"] for m in msgs[1:]] == [12, 13]
    c2 = conn("u2")
    assert f.feed.resume_or_snapshot(c2, room, ("e1", 5)) is False  # older than the ring
    assert payload(written(c2)[0])["type"] == "snapshot"


def test_tick_skips_connections_over_the_soft_limit() -> None:
    f = Feed()
    room = loaded_room(f.registry)
    fast, slow = conn("u1"), conn("u2", buffered=10_000)
    f.registry.add(fast, room)
    f.registry.add(slow, room)
    ticker = Ticker(f.registry, None, None, lambda: NOW, gateway_id="g", tick_ms=200,  # type: ignore[arg-type]
                    ambient_rate=20_000, sample_threshold=100, soft_limit=1_000, stats=f.stats)
    room.state.viewers = 2
    ticker._tick(room, NOW)
    assert payload(written(fast)[0]) == {"type": "tick", "ts": NOW, "viewers": 2}
    assert written(slow) == [b""] and slow.skipped == 1 and f.stats == {**f.stats, "ticks": 1, "skipped": 1}
    assert not room.dirty and ticker.stride() == 1


def test_a_tick_waits_for_the_answer_on_its_way_and_never_past_the_next_tick() -> None:
    """A connection with a request in flight gets its tick in the same write as the answer; a tick held
    without an answer goes out with the room's next tick, first; nothing overtakes a held tick."""
    f = Feed()
    room = loaded_room(f.registry)
    idle, buyer, late, evented, clicking = conn("u1"), conn("u2"), conn("u3"), conn("u4"), conn("u5")
    for c in (idle, buyer, late, evented, clicking):
        f.registry.add(c, room)
    buyer.inflight = late.inflight = evented.inflight = 1
    clicking.clicked = time.monotonic()  # clicked buy since the last tick (answered): its next frame carries the tick
    ticker = Ticker(f.registry, None, None, lambda: NOW, gateway_id="g", tick_ms=200,  # type: ignore[arg-type]
                    ambient_rate=20_000, sample_threshold=100, soft_limit=1_000, stats=f.stats)
    room.state.viewers = 4
    ticker._tick(room, NOW)
    assert [payload(d)["viewers"] for d in written(idle)] == [4]
    assert written(buyer) == written(late) == written(evented) == written(clicking) == []
    assert f.stats["ambient_deferred"] == 4
    clicking.send({"type": "buy_result", "rid": "r0"})  # its next frame: the held tick in front of it
    assert [m["type"] for m in frames(written(clicking)[0])] == ["tick", "buy_result"]

    buyer.answered()  # the answer's turn (no outbox here: written at once), the tick before it
    buyer.send({"type": "buy_result", "rid": "r1"})
    assert len(written(buyer)) == 1
    tick, answer = frames(written(buyer)[0])
    assert tick["type"] == "tick" and answer == {"type": "buy_result", "rid": "r1"}

    room.state.viewers = 5  # the next tick: the held one (viewers 4) and then the new one, one write
    room.dirty.add(VIEWERS)
    ticker._tick(room, NOW + 200)
    assert [m.get("viewers") for m in frames(written(late)[0])] == [4, 5]

    room.state.viewers = 6  # held again; then a critical event: the held tick goes first, in the same write
    room.dirty.add(VIEWERS)
    ticker._tick(room, NOW + 400)
    f.feed.on_event(room, event(11))
    assert [(m["type"], m.get("viewers")) for m in frames(written(evented)[-1])] == [("tick", 6),
                                                                                     ("announcement", None)]


def test_a_tick_held_for_a_buyer_who_went_quiet_leaves_with_the_next_tick_even_an_empty_one() -> None:
    """A buyer who clicked since the last tick has its tick held for its next frame; if none comes, the room's next
    tick releases it on its own, also when that tick has nothing new to send."""
    f = Feed()
    room = loaded_room(f.registry)
    quiet, idle = conn("u1"), conn("u2")
    for c in (quiet, idle):
        f.registry.add(c, room)
    quiet.clicked = time.monotonic()
    ticker = Ticker(f.registry, None, None, lambda: NOW, gateway_id="g", tick_ms=200,  # type: ignore[arg-type]
                    ambient_rate=20_000, sample_threshold=100, soft_limit=1_000, stats=f.stats)
    room.state.viewers = 2
    ticker._tick(room, NOW)
    assert written(quiet) == [] and quiet.ambient is not None and len(written(idle)) == 1
    ticker._tick(room, NOW + 200)  # nothing new in the room
    assert [payload(d)["viewers"] for d in written(quiet)] == [2] and quiet.ambient is None
    assert len(written(idle)) == 1  # nothing new for the others


def test_a_saturated_process_sheds_ticks_and_recovers() -> None:
    f = Feed()
    room = loaded_room(f.registry)
    for i in range(8_000):
        f.registry.add(conn(f"u{i}"), room)
    cpu = [0.0]
    ticker = Ticker(f.registry, None, None, lambda: NOW, gateway_id="g", tick_ms=200,  # type: ignore[arg-type]
                    ambient_rate=20_000, sample_threshold=100, soft_limit=1_000, stats=f.stats,
                    cpu_clock=lambda: cpu[0])
    ticker.measure_cpu(100.0)
    assert ticker.stride() == 2  # 8,000 viewers: every 0.4 s
    cpu[0] += 0.97  # a whole core over the last second
    ticker.measure_cpu(101.0)
    assert ticker.shed == 2 and ticker.stride() == 4 and f.stats["ambient_shed"] == 2
    cpu[0] += 0.99
    ticker.measure_cpu(102.0)
    assert ticker.stride() == 5  # never less than once a second
    for t in (103.0, 104.0, 105.0):  # calm again
        cpu[0] += 0.3
        ticker.measure_cpu(t)
    assert ticker.shed == 1 and ticker.stride() == 2


def frames(data: bytes) -> list[Any]:
    """Every unmasked server frame (7-bit lengths) in ``data``."""
    out = []
    while data:
        n = data[1] & 0x7F
        out.append(orjson.loads(data[2:2 + n]))
        data = data[2 + n:]
    return out


async def test_sale_timers_fire_once_per_due_time() -> None:
    fired: list[tuple[str, str]] = []

    async def on_open(room_id: str, sale: dict[str, Any]) -> None:
        fired.append(("open", sale["sale_id"]))

    async def on_close(room_id: str, sale: dict[str, Any]) -> None:
        fired.append(("close", sale["sale_id"]))

    registry = RoomRegistry({})
    room = loaded_room(registry)
    room.state.sales = {"s1": {"sale_id": "s1", "state": "scheduled", "starts_at": NOW - 5, "ends_at": NOW + 10},
                        "s2": {"sale_id": "s2", "state": "closed", "starts_at": NOW - 9, "ends_at": NOW - 1}}
    timers = SaleTimers(registry.rooms, lambda: NOW, on_open, on_close)
    await timers.start()
    timers.schedule(room)
    timers.schedule(room)  # re-arming replaces the earlier timers
    await asyncio.sleep(0.05)
    assert fired == [("open", "s1"), ("close", "s1")]
    timers.schedule(room)
    await timers.aclose()
    await asyncio.sleep(0.02)
    assert len(fired) == 2  # closed: nothing fires any more

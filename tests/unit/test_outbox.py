"""Coalesced writes (stream_gateway/outbox.py): a connection's frames of one loop iteration leave in one
transport write, in order; a close frame never overtakes them; a closed transport gets nothing."""

from __future__ import annotations

import asyncio

from stream_gateway.connection import CLOSE_SLOW, CLOSES, Conn
from stream_gateway.frames import close_frame
from stream_gateway.outbox import Outbox


class Transport:
    def __init__(self, buffered: int = 0) -> None:
        self.buffered = buffered
        self.closing = False
        self.writes: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def abort(self) -> None:
        self.closing = True


def conn(outbox: Outbox | None, t: Transport) -> Conn:
    return Conn(None, t, False, 5.0, 1.0, 1 << 20, outbox)  # type: ignore[arg-type]


async def next_iteration() -> None:
    """Until the callbacks scheduled in this iteration have run (the outbox's flush among them)."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


async def test_frames_of_one_iteration_leave_in_one_write_in_order() -> None:
    ob = Outbox()
    ta, tb = Transport(), Transport()
    a, b = conn(ob, ta), conn(ob, tb)
    assert a.queue(b"1") and b.queue(b"x") and a.queue(b"2") and a.write(b"3")  # a broadcast frame rides along
    assert ta.writes == [] and tb.writes == []  # nothing leaves before the iteration ends
    await next_iteration()
    assert ta.writes == [b"123"] and tb.writes == [b"x"]
    assert ob.flushes == 2 and ob.frames_saved == 2
    assert a.queue(b"4")  # the next iteration: its own write
    await next_iteration()
    assert ta.writes == [b"123", b"4"]


async def test_a_broadcast_frame_is_written_at_once_and_queued_frames_follow_it() -> None:
    ob = Outbox()
    t = Transport()
    c = conn(ob, t)
    assert c.write(b"event")
    assert t.writes == [b"event"]
    c.queue(b"answer")
    c.write(b"tick")
    await next_iteration()
    assert t.writes == [b"event", b"answertick"]


async def test_close_frame_follows_the_queued_frames() -> None:
    ob = Outbox()
    t = Transport()
    c = conn(ob, t)
    c.queue(b"answer-1")
    c.queue(b"answer-2")
    c.kill(1008, "too many messages")
    assert t.writes == [b"answer-1answer-2", close_frame(1008, "too many messages")]
    assert not c.write(b"late")
    await next_iteration()  # the scheduled flush finds nothing more to send
    assert len(t.writes) == 2


async def test_a_transport_closed_before_the_flush_gets_nothing() -> None:
    ob = Outbox()
    t = Transport()
    c = conn(ob, t)
    c.queue(b"a")
    t.closing = True
    await next_iteration()
    assert t.writes == [] and c.dead
    assert not c.queue(b"b") and not c.write(b"b")


async def test_the_slow_consumer_limit_is_checked_on_the_first_frame_of_an_iteration() -> None:
    ob = Outbox()
    t = Transport(buffered=(1 << 20) + 1)
    c = conn(ob, t)
    slow = CLOSES["slow"]
    assert not c.queue(b"a")
    assert c.dead and CLOSES["slow"] == slow + 1
    assert t.writes == [close_frame(CLOSE_SLOW, "slow consumer: resync")]


def test_without_an_outbox_every_frame_is_written_at_once() -> None:
    t = Transport()
    c = conn(None, t)
    c.queue(b"a")
    c.write(b"b")
    assert t.writes == [b"a", b"b"]


async def test_one_broken_transport_does_not_keep_the_others_frames() -> None:
    class Broken(Transport):
        def write(self, data: bytes) -> None:
            raise RuntimeError("broken")
    ob = Outbox()
    tb, tg = Broken(), Transport()
    conn(ob, tb).queue(b"a")
    conn(ob, tg).queue(b"b")
    await next_iteration()
    assert tg.writes == [b"b"]

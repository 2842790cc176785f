"""The gateway's decisions (stream_gateway/decisions.py) on their own: no sockets, no Redis, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from commerce.room_state import RoomState
from stream_gateway.decisions import (
    CLOSE, LIKES, MAX_TICK_ITEMS, OPEN, SAMPLED_TICK_ITEMS, UNITS, UNITS_CHANGED, VIEWERS, EventVerdict,
    SaleTimer, ambient_shed, can_resume, clock_offset, event_verdict, sale_timers, should_unload, tick_message,
    tick_stride,
)

NOW = 1_700_000_000_000


def sale(sale_id: str, state: str, starts_at: int, ends_at: int) -> dict[str, Any]:
    return {"sale_id": sale_id, "state": state, "starts_at": starts_at, "ends_at": ends_at}


def comment(i: int, user: str = "u1") -> dict[str, Any]:
    return {"id": f"c{i}", "user": user, "text": f"hi {i}"}


def room_state(**kw: Any) -> RoomState:
    st = RoomState("r1", epoch="e1", seq=10)
    for k, v in kw.items():
        setattr(st, k, v)
    return st


# -- sequenced events -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("have", "got", "verdict"), [
    (("e1", 10), ("e1", 11), EventVerdict.APPLY),
    (("e1", 10), ("e1", 10), EventVerdict.STALE),
    (("e1", 10), ("e1", 3), EventVerdict.STALE),
    (("e1", 10), ("e1", 12), EventVerdict.RESYNC),   # a gap: a message was lost
    (("e1", 10), ("e2", 1), EventVerdict.RESYNC),    # Redis restarted: new epoch
    (("e1", 10), ("e2", 11), EventVerdict.RESYNC),
    (("", 0), ("e1", 1), EventVerdict.RESYNC),       # a room loaded before its first event
])
def test_event_verdict(have: tuple[str, int], got: tuple[str, int], verdict: EventVerdict) -> None:
    assert event_verdict(*have, *got) is verdict


# -- resume ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("resume", "first_kept", "ok"), [
    (("e1", 10), 5, True),    # up to date: resumed with nothing to replay
    (("e1", 7), 5, True),     # replay 8..10
    (("e1", 4), 5, True),     # the ring still holds everything after 4
    (("e1", 3), 5, False),    # 4 fell out of the ring: snapshot
    (("e1", 11), 5, False),   # ahead of the room (another incarnation's seq): snapshot
    (("e0", 9), 5, False),    # another epoch: snapshot
    (("e1", 10), None, True),  # empty ring, nothing missed
    (("e1", 9), None, False),  # empty ring, one missed
])
def test_can_resume(resume: tuple[str, int], first_kept: int | None, ok: bool) -> None:
    assert can_resume(*resume, "e1", 10, first_kept) is ok


# -- ticks ----------------------------------------------------------------------------------------------

def plan(st: RoomState, dirty: set[str], comments: list[dict[str, Any]] | None = None,
         bought: list[dict[str, Any]] | None = None, size: int = 5, threshold: int = 100) -> Any:
    return tick_message(st, dirty, comments or [], bought or [], room_size=size, sample_threshold=threshold,
                        now_ms=NOW)


def test_tick_with_nothing_new_sends_nothing() -> None:
    assert plan(room_state(), set()) == (None, False)


def test_tick_carries_only_dirty_counters() -> None:
    st = room_state(viewers=42, likes=7)
    msg, keep = plan(st, {VIEWERS})
    assert msg == {"type": "tick", "ts": NOW, "viewers": 42} and not keep
    msg, _ = plan(st, {LIKES, VIEWERS})
    assert msg == {"type": "tick", "ts": NOW, "viewers": 42, "likes": 7}


def test_tick_units_of_open_sales_only_when_changed() -> None:
    st = room_state(sales={"s1": sale("s1", "open", NOW - 1000, NOW + 60_000),
                           "s2": sale("s2", "closed", NOW - 9000, NOW - 10),
                           "s3": sale("s3", "scheduled", NOW + 120_000, NOW + 180_000)},
                    units={"s1": 3, "s2": 0, "s3": 10})
    msg, keep = plan(st, {UNITS_CHANGED})
    assert msg == {"type": "tick", "ts": NOW, "units": {"s1": 3}} and not keep
    msg, keep = plan(st, {UNITS})  # still to poll: nothing to say yet, keep polling while s1 is open
    assert msg is None and keep


def test_tick_stops_polling_when_no_sale_is_open() -> None:
    st = room_state(sales={"s1": sale("s1", "scheduled", NOW + 30_000, NOW + 90_000)})  # within the minute
    msg, keep = plan(st, {UNITS})
    assert msg is None and not keep


def test_tick_comments_hide_moderated_and_sample_big_rooms() -> None:
    st = room_state(hidden={"c1"}, muted={"troll"})
    comments = [comment(i) for i in range(30)] + [comment(99, user="troll")]
    msg, _ = plan(st, set(), comments=comments)
    assert [c["id"] for c in msg["comments"]] == [f"c{i}" for i in range(30) if i != 1]
    assert "sampled" not in msg
    msg, _ = plan(st, set(), comments=comments, size=101, threshold=100)
    assert len(msg["comments"]) == SAMPLED_TICK_ITEMS and msg["comments"][-1]["id"] == "c29"
    assert msg["sampled"] is True


def test_tick_all_comments_hidden_sends_nothing() -> None:
    st = room_state(muted={"troll"})
    assert plan(st, set(), comments=[comment(1, user="troll")]) == (None, False)


def test_tick_bought_is_capped() -> None:
    bought = [{"name": f"b{i}"} for i in range(MAX_TICK_ITEMS + 5)]
    msg, _ = plan(room_state(), set(), bought=bought)
    assert len(msg["bought"]) == MAX_TICK_ITEMS and msg["bought"][0]["name"] == "b5"
    msg, _ = plan(room_state(), set(), bought=bought, size=2, threshold=1)
    assert len(msg["bought"]) == SAMPLED_TICK_ITEMS


def test_tick_reads_its_inputs_only() -> None:
    dirty, comments, bought = {VIEWERS, UNITS}, [comment(1)], [{"name": "b"}]
    plan(room_state(), dirty, comments=comments, bought=bought)
    assert dirty == {VIEWERS, UNITS} and len(comments) == 1 and len(bought) == 1


@pytest.mark.parametrize(("conns", "rate", "tick_s", "stride"), [
    (0, 20_000, 0.2, 1),
    (4_000, 20_000, 0.2, 1),
    (4_001, 20_000, 0.2, 2),
    (5_000, 20_000, 0.2, 2),     # every 0.4 s
    (19_000, 20_000, 0.2, 5),    # every ~1 s
    (50, 100, 0.05, 10),
    (50, 100, 0.005, 50),        # the budget per tick never drops below one frame
])
def test_tick_stride(conns: int, rate: int, tick_s: float, stride: int) -> None:
    assert tick_stride(conns, rate, tick_s) == stride


@pytest.mark.parametrize(("conns", "shed", "stride"), [
    (100, 2, 2),       # a small room of a saturated process: every 0.4 s instead of 0.2 s
    (8_000, 2, 4),     # 0.4 s -> 0.8 s
    (8_000, 8, 5),     # never less often than once a second
    (19_000, 8, 5),    # already at once a second: unchanged
    (50_000, 8, 13),   # the budget's own stride above a second wins
])
def test_a_saturated_process_ticks_less_often_but_every_second(conns: int, shed: int, stride: int) -> None:
    assert tick_stride(conns, 20_000, 0.2, shed) == stride


def test_ambient_shed_follows_the_cpu_with_hysteresis() -> None:
    shed = 1
    for cpu, want in [(0.5, 1), (0.95, 2), (0.8, 2), (1.0, 4), (1.0, 8), (1.0, 8), (0.75, 8), (0.6, 4), (0.1, 2),
                      (0.1, 1), (0.1, 1)]:
        shed = ambient_shed(shed, cpu)
        assert shed == want, (cpu, want)


# -- sale timers ----------------------------------------------------------------------------------------

def test_sale_timers() -> None:
    sales = {"a": sale("a", "scheduled", NOW + 5_000, NOW + 65_000),
             "b": sale("b", "open", NOW - 5_000, NOW + 2_000),
             "c": sale("c", "closed", NOW - 9_000, NOW + 1_000),
             "d": sale("d", "sold_out", NOW - 9_000, NOW - 1),
             "e": sale("e", "scheduled", NOW - 10, NOW + 999)}
    assert sale_timers(sales, NOW) == [
        SaleTimer("a", OPEN, 5.001), SaleTimer("a", CLOSE, 65.001),
        SaleTimer("b", CLOSE, 2.001),
        SaleTimer("d", CLOSE, 0.0),       # overdue: fires at once
        SaleTimer("e", OPEN, 0.0), SaleTimer("e", CLOSE, 1.0),
    ]


def test_sale_timers_accept_string_times() -> None:  # as stored in the room state hash
    assert sale_timers({"a": {"state": "open", "starts_at": "0", "ends_at": str(NOW + 9)}}, NOW) == [
        SaleTimer("a", CLOSE, 0.01)]


# -- clock and unloading --------------------------------------------------------------------------------

def test_clock_offset_takes_the_shortest_round_trip() -> None:
    samples = [(1000.0, 6000.0, 1010.0),   # rtt 10 -> offset 4995
               (2000.0, 7001.0, 2002.0),   # rtt 2 -> offset 5000
               (3000.0, 9000.0, 3050.0)]   # rtt 50
    assert clock_offset(samples) == 5000.0
    assert clock_offset([]) == 0.0


@pytest.mark.parametrize(("empty_since", "size", "now", "unload"), [
    (None, 0, 100.0, False),    # never emptied
    (50.0, 0, 80.0, False),     # within the grace
    (50.0, 0, 80.1, True),
    (50.0, 1, 200.0, False),    # someone came back
])
def test_should_unload(empty_since: float | None, size: int, now: float, unload: bool) -> None:
    assert should_unload(empty_since, size, now, 30.0) is unload

"""The gateway's decisions as pure functions: no sockets, no Redis, no clock of their own.

Each takes the facts (room state, pending items, times, counts) and returns what to do; the parts
that own the I/O (``fanout``, ``ticker``, ``sale_timers``, ``clock``, ``sweeper``) act on the answer.
Tested on their own in tests/unit/test_decisions.py.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from commerce.room_state import RoomState, sale_state_at

__all__ = [
    "MAX_TICK_ITEMS", "SAMPLED_TICK_ITEMS", "VIEWERS", "LIKES", "UNITS", "UNITS_CHANGED",
    "EventVerdict", "event_verdict", "can_resume", "TickPlan", "tick_message", "tick_stride",
    "OPEN", "CLOSE", "SaleTimer", "sale_timers", "clock_offset", "should_unload",
]

MAX_TICK_ITEMS = 100       # comments / "just bought" carried by one tick
SAMPLED_TICK_ITEMS = 10    # the same in rooms over the sample threshold

# what changed in a room since its last tick (LocalRoom.dirty holds these)
VIEWERS = "viewers"
LIKES = "likes"
UNITS = "units"                  # units left may have changed: poll them before the next tick
UNITS_CHANGED = "units_changed"  # the poll found a new value: the tick carries the open sales' units


# -- sequenced events ---------------------------------------------------------------------------------

class EventVerdict(enum.Enum):
    APPLY = "apply"    # the next event: apply and fan out
    STALE = "stale"    # already applied (or older): drop
    RESYNC = "resync"  # a gap or another epoch (lost pub/sub messages, Redis restarted): reload the room


def event_verdict(have_epoch: str, have_seq: int, epoch: str, seq: int) -> EventVerdict:
    """What to do with a sequenced event ``(epoch, seq)`` for a room at ``(have_epoch, have_seq)``."""
    if epoch != have_epoch or seq > have_seq + 1:
        return EventVerdict.RESYNC
    if seq <= have_seq:
        return EventVerdict.STALE
    return EventVerdict.APPLY


def can_resume(resume_epoch: str, resume_seq: int, epoch: str, seq: int, first_kept: int | None) -> bool:
    """Whether a client that saw up to ``(resume_epoch, resume_seq)`` can be served from the replay
    ring (oldest kept seq ``first_kept``, None when empty) of a room at ``(epoch, seq)``; otherwise it
    gets a snapshot."""
    first = seq + 1 if first_kept is None else first_kept
    return resume_epoch == epoch and first - 1 <= resume_seq <= seq


# -- ambient ticks --------------------------------------------------------------------------------------

class TickPlan(NamedTuple):
    message: dict[str, Any] | None  # the tick to send, None when it would carry nothing
    keep_polling: bool              # keep UNITS dirty: a sale is open, units left keep moving


def tick_message(state: RoomState, dirty: set[str], comments: Sequence[dict[str, Any]],
                 bought: Sequence[dict[str, Any]], *, room_size: int, sample_threshold: int,
                 now_ms: int, live: Mapping[str, Any] | None = None) -> TickPlan:
    """What this room's tick carries now: the counters marked ``dirty``, the visible comments and the
    "just bought" items since the last tick (sampled when the room has more than ``sample_threshold``
    local viewers) and the interaction ``live`` counts that changed (teams, polls, drops, draws). Reads
    its arguments only; the caller resets them."""
    if not (dirty or comments or bought or live):
        return TickPlan(None, False)
    msg: dict[str, Any] = {"type": "tick", "ts": now_ms}
    if VIEWERS in dirty:
        msg["viewers"] = state.viewers
    if LIKES in dirty:
        msg["likes"] = state.likes
    open_sales = state.open_sales(now_ms) if UNITS_CHANGED in dirty or UNITS in dirty else []
    if UNITS_CHANGED in dirty:
        msg["units"] = {sid: state.units[sid] for sid in open_sales if sid in state.units}
    limit = SAMPLED_TICK_ITEMS if room_size > sample_threshold else MAX_TICK_ITEMS
    if comments:
        visible = [c for c in comments if c["id"] not in state.hidden and c["user"] not in state.muted]
        if visible:
            msg["comments"] = visible[-limit:]
            if len(visible) > limit:
                msg["sampled"] = True
    if bought:
        msg["bought"] = bought[-limit:]
    if live:
        msg.update(live)
    keep_polling = UNITS in dirty and any(
        sale_state_at(state.sales[s], now_ms, None) == "open" for s in open_sales)
    return TickPlan(msg if len(msg) > 2 else None, keep_polling)


BUSY_CPU = 0.9   # a gateway process that used this share of a core over the last second is saturated
CALM_CPU = 0.7   # ... and below this share, no longer
SHED_MAX = 8     # ambient_shed never goes above this factor
SHED_INTERVAL_S = 1.0  # a saturated process still ticks every room at least this often


def tick_stride(connections: int, ambient_rate: int, tick_s: float, shed: int = 1) -> int:
    """Rooms tick every N-th base tick, N chosen so that the ambient frames this process writes (one
    per local viewer per tick) stay within ``ambient_rate`` per second. Small rooms tick every
    ``tick_s``; with 20,000 frames/s and 0.2 s ticks, 5,000 local viewers tick every 0.4 s, 19,000
    every ~1 s. ``shed`` (``ambient_shed``): a saturated process ticks ``shed`` times less often, but at
    least every ``SHED_INTERVAL_S``. Critical events never wait for a tick."""
    budget_per_tick = max(1.0, ambient_rate * tick_s)
    base = max(1, math.ceil(connections / budget_per_tick))
    if shed <= 1:
        return base
    return max(base, min(base * shed, round(SHED_INTERVAL_S / tick_s)))


def ambient_shed(shed: int, cpu_share: float) -> int:
    """The ambient lane yields first when the process runs out of CPU: ``cpu_share`` is the share of one
    core the process used over the last second; at ``BUSY_CPU`` or more the shed factor doubles (up to
    ``SHED_MAX``), at ``CALM_CPU`` or less it halves back towards 1 (no shedding)."""
    if cpu_share >= BUSY_CPU:
        return min(SHED_MAX, shed * 2)
    if cpu_share <= CALM_CPU:
        return max(1, shed // 2)
    return shed


# -- sale timers ----------------------------------------------------------------------------------------

OPEN = "open"
CLOSE = "close"


class SaleTimer(NamedTuple):
    sale_id: str
    action: str     # OPEN | CLOSE
    delay_s: float  # from now; 0 when already due


def sale_timers(sales: Mapping[str, Mapping[str, Any]], now_ms: int) -> list[SaleTimer]:
    """The timers a room's sales need at ``now_ms`` (server clock): a scheduled sale opens 1 ms
    after ``starts_at``; every sale not closed yet closes 1 ms after ``ends_at``."""
    out: list[SaleTimer] = []
    for sale_id, sale in sales.items():
        state = sale.get("state")
        if state == "closed":
            continue
        if state == "scheduled":
            out.append(SaleTimer(sale_id, OPEN, max(0.0, (int(sale["starts_at"]) - now_ms + 1) / 1000)))
        out.append(SaleTimer(sale_id, CLOSE, max(0.0, (int(sale["ends_at"]) - now_ms + 1) / 1000)))
    return out


# -- clock and housekeeping -----------------------------------------------------------------------------

def clock_offset(samples: Iterable[tuple[float, float, float]]) -> float:
    """Server-minus-local offset (ms) from ``(t0, server, t1)`` samples (local send, server time,
    local receive): the sample with the shortest round trip wins, taken at its midpoint. 0 without
    samples."""
    best: tuple[float, float] | None = None
    for t0, server, t1 in samples:
        rtt = t1 - t0
        if best is None or rtt < best[0]:
            best = (rtt, server - (t0 + t1) / 2)
    return best[1] if best else 0.0


def should_unload(empty_since: float | None, size: int, now: float, grace_s: float) -> bool:
    """A loaded room with nobody in it for longer than ``grace_s`` is forgotten."""
    return empty_since is not None and not size and now - empty_since > grace_s

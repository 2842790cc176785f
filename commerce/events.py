"""Room events: their type names and one builder per event. Pure.

``EventType`` lists the sequenced room events (the critical lane, docs/PROTOCOL.md "Server ->
client"); ``server/web/livesale.js`` mirrors it as ``EventType`` and tests/unit/test_protocol.py
fails when the two lists differ. Each builder returns the event body that ``RoomBus.publish``
sequences (it adds ``seq``, ``epoch`` and ``ts``), typed as a TypedDict so mypy checks the fields.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, TypedDict

__all__ = [
    "EventType", "CloseReason", "room_status", "room_updated", "product_added", "product_pinned",
    "product_unpinned", "sale_scheduled", "sale_open", "sale_sold_out", "sale_closed", "announcement",
    "comment_hidden", "user_muted", "SALE_EVENTS", "UNITS_EVENTS", "teams_set", "poll_opened", "poll_closed",
    "coupon_drop", "coupon_drop_ended", "draw_opened", "draw_result", "draw_redrawn",
]


class EventType(StrEnum):
    ROOM_STATUS = "room_status"
    ROOM_UPDATED = "room_updated"
    PRODUCT_ADDED = "product_added"
    PRODUCT_PINNED = "product_pinned"
    PRODUCT_UNPINNED = "product_unpinned"
    SALE_SCHEDULED = "sale_scheduled"
    SALE_OPEN = "sale_open"
    SALE_SOLD_OUT = "sale_sold_out"
    SALE_CLOSED = "sale_closed"
    ANNOUNCEMENT = "announcement"
    COMMENT_HIDDEN = "comment_hidden"
    USER_MUTED = "user_muted"
    # interaction (docs/PROTOCOL.md Interaction)
    TEAMS_SET = "teams_set"
    POLL_OPENED = "poll_opened"
    POLL_CLOSED = "poll_closed"
    COUPON_DROP = "coupon_drop"
    COUPON_DROP_ENDED = "coupon_drop_ended"
    DRAW_OPENED = "draw_opened"
    DRAW_RESULT = "draw_result"
    DRAW_REDRAWN = "draw_redrawn"


CloseReason = Literal["ended", "stopped", "live_ended"]

SALE_EVENTS = frozenset({EventType.SALE_SCHEDULED, EventType.SALE_OPEN, EventType.SALE_CLOSED})  # move timers
UNITS_EVENTS = frozenset({EventType.SALE_SCHEDULED, EventType.SALE_OPEN, EventType.SALE_SOLD_OUT})  # poll units


class RoomStatus(TypedDict):
    type: Literal["room_status"]
    status: str


class RoomUpdated(TypedDict):
    type: Literal["room_updated"]
    room: dict[str, Any]


class ProductEvent(TypedDict):
    type: Literal["product_added", "product_pinned"]
    product: dict[str, Any]


class Bare(TypedDict):
    type: Literal["product_unpinned"]


class SaleEvent(TypedDict, total=False):
    type: Literal["sale_scheduled", "sale_open"]
    sale: dict[str, Any]
    reason: Literal["restocked"]


class SaleSoldOut(TypedDict):
    type: Literal["sale_sold_out"]
    sale_id: str


class SaleClosed(TypedDict):
    type: Literal["sale_closed"]
    sale_id: str
    reason: CloseReason
    ends_at: int


class Announcement(TypedDict):
    type: Literal["announcement"]
    text: str


class CommentHidden(TypedDict):
    type: Literal["comment_hidden"]
    comment: str


class UserMuted(TypedDict):
    type: Literal["user_muted"]
    user: str


def room_status(status: str) -> RoomStatus:
    return {"type": "room_status", "status": status}


def room_updated(room: dict[str, Any]) -> RoomUpdated:
    return {"type": "room_updated", "room": room}


def product_added(product: dict[str, Any]) -> ProductEvent:
    return {"type": "product_added", "product": product}


def product_pinned(product: dict[str, Any]) -> ProductEvent:
    return {"type": "product_pinned", "product": product}


def product_unpinned() -> Bare:
    return {"type": "product_unpinned"}


def sale_scheduled(sale: dict[str, Any]) -> SaleEvent:
    return {"type": "sale_scheduled", "sale": sale}


def sale_open(sale: dict[str, Any], restocked: bool = False) -> SaleEvent:
    ev: SaleEvent = {"type": "sale_open", "sale": sale}
    if restocked:
        ev["reason"] = "restocked"
    return ev


def sale_sold_out(sale_id: str) -> SaleSoldOut:
    return {"type": "sale_sold_out", "sale_id": sale_id}


def sale_closed(sale_id: str, reason: CloseReason, ends_at: int) -> SaleClosed:
    return {"type": "sale_closed", "sale_id": sale_id, "reason": reason, "ends_at": ends_at}


def announcement(text: str) -> Announcement:
    return {"type": "announcement", "text": text}


def comment_hidden(comment_id: str) -> CommentHidden:
    return {"type": "comment_hidden", "comment": comment_id}


def user_muted(user: str) -> UserMuted:
    return {"type": "user_muted", "user": user}


# -- interaction (docs/PROTOCOL.md Interaction) --------------------------------------------------------

class TeamsSet(TypedDict):
    type: Literal["teams_set"]
    teams: list[dict[str, Any]]
    allow_switch: bool
    switch_cooldown_s: int


class PollEvent(TypedDict):
    type: Literal["poll_opened", "poll_closed"]
    poll: dict[str, Any]


class DropEvent(TypedDict):
    type: Literal["coupon_drop", "coupon_drop_ended"]
    drop: dict[str, Any]


class DrawEvent(TypedDict):
    type: Literal["draw_opened", "draw_result"]
    draw: dict[str, Any]


class DrawRedrawn(TypedDict):
    type: Literal["draw_redrawn"]
    draw: dict[str, Any]
    round: int
    replaced: list[str]
    added: list[str]


def teams_set(teams: list[dict[str, Any]], allow_switch: bool, switch_cooldown_s: int) -> TeamsSet:
    return {"type": "teams_set", "teams": teams, "allow_switch": allow_switch, "switch_cooldown_s": switch_cooldown_s}


def poll_opened(poll: dict[str, Any]) -> PollEvent:
    return {"type": "poll_opened", "poll": poll}


def poll_closed(poll: dict[str, Any]) -> PollEvent:
    return {"type": "poll_closed", "poll": poll}


def coupon_drop(drop: dict[str, Any]) -> DropEvent:
    return {"type": "coupon_drop", "drop": drop}


def coupon_drop_ended(drop: dict[str, Any]) -> DropEvent:
    return {"type": "coupon_drop_ended", "drop": drop}


def draw_opened(draw: dict[str, Any]) -> DrawEvent:
    return {"type": "draw_opened", "draw": draw}


def draw_result(draw: dict[str, Any]) -> DrawEvent:
    return {"type": "draw_result", "draw": draw}


def draw_redrawn(draw: dict[str, Any], round_no: int, replaced: list[str], added: list[str]) -> DrawRedrawn:
    return {"type": "draw_redrawn", "draw": draw, "round": round_no, "replaced": replaced, "added": added}

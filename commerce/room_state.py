"""A room's state as one gateway knows it: loaded from Redis, then advanced by sequenced events. Pure."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["RoomState", "sale_state_at", "COMMENTS_KEPT"]

COMMENTS_KEPT = 50
_KEPT = {"poll": "polls", "drop": "drops", "draw": "draws"}  # state-hash field "<kind>:<id>" -> attribute
_OBJECT_EVENTS = {"poll_opened": ("poll", "poll_id"), "poll_closed": ("poll", "poll_id"),
                  "coupon_drop": ("drop", "drop_id"), "coupon_drop_ended": ("drop", "drop_id"),
                  "draw_opened": ("draw", "draw_id"), "draw_result": ("draw", "draw_id"),
                  "draw_redrawn": ("draw", "draw_id")}


def sale_state_at(sale: dict[str, Any], now_ms: int, units_left: int | None) -> str:
    """scheduled | open | sold_out | closed, from absolute times (server clock) and units left."""
    if sale.get("state") == "closed" or now_ms >= int(sale["ends_at"]):
        return "closed"
    if now_ms < int(sale["starts_at"]):
        return "scheduled"
    if units_left is not None and units_left <= 0:
        return "sold_out"
    return "open"


@dataclass
class RoomState:
    room_id: str
    epoch: str = ""
    seq: int = 0
    room: dict[str, Any] = field(default_factory=dict)
    pinned: dict[str, Any] | None = None
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    sales: dict[str, dict[str, Any]] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)
    muted: set[str] = field(default_factory=set)
    comments: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=COMMENTS_KEPT))
    announcement: dict[str, Any] | None = None
    likes: int = 0
    viewers: int = 0
    # interaction (docs/PROTOCOL.md Interaction): the objects of the latest sequenced events, by id
    teams: dict[str, Any] | None = None
    polls: dict[str, dict[str, Any]] = field(default_factory=dict)
    drops: dict[str, dict[str, Any]] = field(default_factory=dict)
    draws: dict[str, dict[str, Any]] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)  # the latest live counts (ambient): teams, polls, drops

    @classmethod
    def load(cls, room_id: str, epoch: str, seq: int, state: dict[str, str], comments: list[str],
             likes: int) -> RoomState:
        rs = cls(room_id=room_id, epoch=epoch, seq=seq, likes=likes)
        for key, raw in state.items():
            kind, _, ident = key.partition(":")
            if kind == "room":
                rs.room = orjson.loads(raw)
            elif kind == "pinned":
                rs.pinned = orjson.loads(raw)
            elif kind == "product":
                rs.products[ident] = orjson.loads(raw)
            elif kind == "sale":
                rs.sales[ident] = orjson.loads(raw)
            elif kind == "hidden":
                rs.hidden.add(ident)
            elif kind == "muted":
                rs.muted.add(ident)
            elif kind == "announcement":
                rs.announcement = orjson.loads(raw)
            elif kind == "teams":
                rs.teams = orjson.loads(raw)
            elif kind in _KEPT:
                getattr(rs, _KEPT[kind])[ident] = orjson.loads(raw)
        for raw in reversed(comments):  # stored newest first
            rs.comments.append(orjson.loads(raw))
        return rs

    @property
    def exists(self) -> bool:
        return bool(self.room)

    def apply(self, ev: dict[str, Any]) -> None:
        """Advance by one sequenced event (its seq must be self.seq + 1; the caller checks)."""
        self.seq = int(ev["seq"])
        t = ev["type"]
        if t == "room_status":
            self.room = {**self.room, "status": ev["status"]}
        elif t == "room_updated":
            self.room = ev["room"]
        elif t == "product_added":
            self.products[ev["product"]["product_id"]] = ev["product"]
        elif t == "product_pinned":
            self.pinned = ev["product"]
        elif t == "product_unpinned":
            self.pinned = None
        elif t in ("sale_scheduled", "sale_open"):
            sale = ev["sale"]
            self.sales[sale["sale_id"]] = sale
            if "units_left" in sale:
                self.units[sale["sale_id"]] = int(sale["units_left"])
        elif t == "sale_sold_out":
            if ev["sale_id"] in self.sales:
                self.sales[ev["sale_id"]] = {**self.sales[ev["sale_id"]], "state": "sold_out"}
            self.units[ev["sale_id"]] = 0
        elif t == "sale_closed":
            if ev["sale_id"] in self.sales:
                self.sales[ev["sale_id"]] = {**self.sales[ev["sale_id"]], "state": "closed",
                                             "ends_at": ev.get("ends_at", self.sales[ev["sale_id"]]["ends_at"])}
        elif t == "comment_hidden":
            self.hidden.add(ev["comment"])
        elif t == "user_muted":
            self.muted.add(ev["user"])
        elif t == "announcement":
            self.announcement = {"text": ev["text"], "ts": ev["ts"]}
        elif t == "teams_set":
            self.teams = {k: ev[k] for k in ("teams", "allow_switch", "switch_cooldown_s")}
        elif t in _OBJECT_EVENTS:
            kind, ident_field = _OBJECT_EVENTS[t]
            obj = ev[kind]
            getattr(self, _KEPT[kind])[obj[ident_field]] = obj

    def open_draws(self) -> list[dict[str, Any]]:
        return [d for d in self.draws.values() if d.get("state") == "open"]

    def interaction_view(self, now_ms: int) -> dict[str, Any]:
        """The snapshot's interaction fields: teams, open polls (closed ones for 10 minutes), drops not
        expired, draws (drawn ones for a day), with the live counts merged in."""
        live = self.live
        polls = [{**p, **live.get("polls", {}).get(pid, {})} if p.get("state") == "open" else p
                 for pid, p in self.polls.items()
                 if p.get("state") == "open" or now_ms < int(p.get("closed_at") or p["ends_at"]) + 600_000]
        drops = [{**d, **live.get("drops", {}).get(did, {})} for did, d in self.drops.items()
                 if now_ms < int(d["expires_at"])]
        draws = [{**d, **live.get("draws", {}).get(d["draw_id"], {})} if d.get("state") == "open" else d
                 for d in self.draws.values()
                 if d.get("state") == "open" or now_ms < int(d.get("entry_until", 0)) + 86_400_000]
        return {"teams": self.teams, "leaderboard": live.get("teams"), "polls": polls, "drops": drops,
                "draws": draws}

    def add_comment(self, comment: dict[str, Any]) -> None:
        self.comments.append(comment)

    def sale_view(self, sale: dict[str, Any], now_ms: int) -> dict[str, Any]:
        units = self.units.get(sale["sale_id"], sale.get("units_left"))
        return {**sale, "units_left": units, "state": sale_state_at(sale, now_ms, units)}

    def open_sales(self, now_ms: int) -> list[str]:
        return [sid for sid, s in self.sales.items() if sale_state_at(s, now_ms, None) != "closed"
                and int(s["starts_at"]) - 60_000 <= now_ms]

    def snapshot(self, now_ms: int, you: dict[str, Any]) -> dict[str, Any]:
        recent = [s for s in self.sales.values() if now_ms < int(s["ends_at"]) + 600_000 and s.get("state") != "closed"
                  or now_ms < int(s["ends_at"]) + 60_000]
        recent.sort(key=lambda s: int(s["starts_at"]))
        return {
            "type": "snapshot",
            "recovered": False,
            "room": self.room,
            "pinned": self.pinned,
            "products": sorted(self.products.values(), key=lambda p: p["product_id"]),
            "sales": [self.sale_view(s, now_ms) for s in recent],
            "comments": [c for c in self.comments if c["id"] not in self.hidden and c["user"] not in self.muted],
            "announcement": self.announcement,
            "viewers": self.viewers,
            "likes": self.likes,
            "epoch": self.epoch,
            "seq": self.seq,
            "server_time": now_ms,
            "you": you,
            **self.interaction_view(now_ms),
        }

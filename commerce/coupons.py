"""Coupon drops (docs/PROTOCOL.md Interaction, Coupon drops). Being written."""

from __future__ import annotations

from typing import Any

from inventory.scripts import Inventory
from inventory.store import Store

from .due import DueTimers
from .identity import Identity
from .interaction_requests import CouponTerms, DropCoupons
from .live_counts import LiveCounts
from .room_bus import RoomBus
from .teams import Teams

__all__ = ["Coupons"]


class Coupons:
    def __init__(self, store: Store, bus: RoomBus, inventory: Inventory, live: LiveCounts, due: DueTimers,
                 teams: Teams) -> None:
        self.store = store
        self.bus = bus
        self.inventory = inventory
        self.live = live
        self.due = due
        self.teams = teams

    async def drop(self, room_id: str, req: DropCoupons) -> dict[str, Any]:
        raise NotImplementedError

    async def end(self, room_id: str, drop_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def claim(self, viewer: Identity, room_id: str | None, drop_id: str, request_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def prize_drop(self, room_id: str, drop_id: str, terms: CouponTerms, count: int) -> dict[str, Any]:
        """A hidden drop whose coupons only ``grant`` hands out (a draw's coupon prize)."""
        raise NotImplementedError

    async def grant(self, drop_id: str, user: str) -> dict[str, Any]:
        """Give ``user`` a coupon of a prize drop (idempotent per user): the Coupon."""
        raise NotImplementedError

    async def wallet(self, viewer: Identity) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def get(self, drop_id: str) -> dict[str, Any]:
        raise NotImplementedError

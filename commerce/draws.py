"""Lucky draws (docs/PROTOCOL.md Interaction, Lucky draws). SHELL: being written (helper brief)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inventory.scripts import Inventory
from inventory.store import Store

from .due import DueTimers
from .identity import Identity
from .interaction_requests import CreateDraw
from .live_counts import LiveCounts
from .room_bus import RoomBus
from .teams import Teams

if TYPE_CHECKING:
    from .checkout import Checkout
    from .coupons import Coupons
    from .sales import Sales

__all__ = ["Draws"]


class Draws:
    def __init__(self, store: Store, bus: RoomBus, inventory: Inventory, live: LiveCounts, due: DueTimers,
                 teams: Teams, coupons: Coupons, sales: Sales, checkout: Checkout) -> None:
        self.store = store
        self.bus = bus
        self.inventory = inventory
        self.live = live
        self.due = due
        self.teams = teams
        self.coupons = coupons
        self.sales = sales
        self.checkout = checkout

    async def create(self, room_id: str, req: CreateDraw) -> dict[str, Any]:
        raise NotImplementedError

    async def enter(self, viewer: Identity, room_id: str, draw_id: str, watched_ms: int,
                    keyword_seen: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    async def on_comment(self, viewer: Identity, room_id: str, draw_ids: list[str], watched_ms: int) -> None:
        raise NotImplementedError

    async def seen(self, room_id: str, draw_ids: list[str], users: list[str], now_ms: int) -> None:
        raise NotImplementedError

    async def get(self, draw_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def entrants(self, draw_id: str) -> dict[str, Any]:
        raise NotImplementedError

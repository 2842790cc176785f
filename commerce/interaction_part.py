"""What every interaction feature (teams, polls, coupon drops, draws) is built on: the SQL store, the
room bus, Redis through the inventory's client (its clock is Redis TIME), the live counts on the ambient
lane and the deadlines kept in Redis (docs/ARCHITECTURE.md, Interaction)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inventory.scripts import Inventory
from inventory.store import Store

from .due import DueTimers
from .live_counts import LiveCounts
from .room_bus import RoomBus

__all__ = ["InteractionPart"]


if TYPE_CHECKING:
    from .signals import Signals


class InteractionPart:
    def __init__(self, store: Store, bus: RoomBus, inventory: Inventory, live: LiveCounts, due: DueTimers) -> None:
        self.store = store
        self.bus = bus
        self.inventory = inventory
        self.redis = inventory.redis
        self.live = live
        self.due = due
        self.signals: Signals | None = None  # interest signals (commerce/signals.py; Commerce sets it)

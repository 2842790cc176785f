"""Polls (docs/PROTOCOL.md Interaction, Polls). SHELL: being written (helper brief in /tmp/notes)."""

from __future__ import annotations

from typing import Any

from inventory.scripts import Inventory
from inventory.store import Store

from .due import DueTimers
from .identity import Identity
from .interaction_requests import OpenPoll
from .live_counts import LiveCounts
from .room_bus import RoomBus

__all__ = ["Polls"]


class Polls:
    def __init__(self, store: Store, bus: RoomBus, inventory: Inventory, live: LiveCounts, due: DueTimers) -> None:
        self.store = store
        self.bus = bus
        self.inventory = inventory
        self.live = live
        self.due = due

    async def open(self, room_id: str, req: OpenPoll) -> dict[str, Any]:
        raise NotImplementedError

    async def close(self, room_id: str, poll_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def vote(self, viewer: Identity, room_id: str | None, poll_id: str, option: int) -> dict[str, Any]:
        raise NotImplementedError

    async def get(self, poll_id: str, viewer: Identity) -> dict[str, Any]:
        raise NotImplementedError

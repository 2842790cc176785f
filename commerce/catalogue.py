"""Rooms and their products: create, read, pin; the room's live status.

Each action validates, writes the system of record (SQL), then publishes the room event.
"""

from __future__ import annotations

import secrets

import orjson
import time
from typing import Any

from inventory.store import ProductRecord, RoomRecord, Store

from . import events as ev
from .errors import Conflict, Forbidden, InvalidInput, NotFound
from .identity import Identity
from .requests import AddProduct, CreateRoom
from .room_bus import RoomBus
from .validation import SLUG_RE, SLUG_RULE
from .wire import product_wire, room_wire

__all__ = ["Catalogue"]


def _now_ms() -> int:
    return int(time.time() * 1000)


def check_slug(what: str, value: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise InvalidInput(f"{what}_id must be {SLUG_RULE}")
    return value


class Catalogue:
    def __init__(self, store: Store, bus: RoomBus) -> None:
        self.store = store
        self.bus = bus

    async def create_room(self, host: Identity, req: CreateRoom) -> dict[str, Any]:
        room_id = req.room_id or "r-" + secrets.token_hex(4)
        if not host.hosts(room_id) and req.room_id:
            raise Forbidden(f"this host token does not cover room {room_id}")
        existing = await self.store.get_room(room_id)
        if existing and existing.host_id != host.user and "*" not in host.rooms:
            raise Conflict(f"room {room_id} belongs to another host")
        now = _now_ms()
        rec = RoomRecord(room_id=room_id, title=req.title, host_id=host.user, player_url=req.player_url,
                         status=existing.status if existing else "scheduled",
                         created_at_ms=existing.created_at_ms if existing else now, updated_at_ms=now)
        await self.store.upsert_room(rec)
        wire = room_wire(rec)
        await self.bus.publish(room_id, ev.room_updated(wire), {"room": wire})
        return wire

    async def room(self, room_id: str) -> RoomRecord:
        rec = await self.store.get_room(check_slug("room", room_id))
        if rec is None:
            raise NotFound(f"no room {room_id}")
        return rec

    async def list_rooms(self) -> list[dict[str, Any]]:
        return [{"room_id": r.room_id, "title": r.title, "status": r.status} for r in await self.store.list_rooms()]

    async def products(self, room_id: str) -> list[dict[str, Any]]:
        return [product_wire(p) for p in await self.store.list_products(room_id)]

    async def product(self, room_id: str, product_id: str) -> ProductRecord:
        p = await self.store.get_product(room_id, check_slug("product", product_id))
        if p is None:
            raise NotFound(f"no product {product_id} in room {room_id}")
        return p

    async def add_product(self, room_id: str, req: AddProduct) -> dict[str, Any]:
        await self.room(room_id)
        product_id = req.product_id or "p-" + secrets.token_hex(4)
        variants = [{"variant_id": v, "sku": sku, "label": label} for v, sku, label in req.variants or ()]
        rec = ProductRecord(room_id=room_id, product_id=product_id, sku=req.sku, title=req.title,
                            description=req.description, image_url=req.image_url, unit_price=req.unit_price,
                            currency=req.currency, variants=orjson.dumps(variants).decode())
        await self.store.upsert_product(rec)
        wire = product_wire(rec)
        await self.bus.publish(room_id, ev.product_added(wire), {f"product:{product_id}": wire})
        return wire

    async def set_status(self, room_id: str, status: str) -> None:
        rec = await self.room(room_id)
        await self.store.set_room_status(room_id, status)
        await self.bus.publish(room_id, ev.room_status(status), {"room": {**room_wire(rec), "status": status}},
                               ended=status == "ended")  # ended: the room's keys get the ended window

    async def pin(self, room_id: str, product_id: str) -> None:
        wire = product_wire(await self.product(room_id, product_id))
        await self.bus.publish(room_id, ev.product_pinned(wire), {"pinned": wire})

    async def unpin(self, room_id: str) -> None:
        await self.bus.publish(room_id, ev.product_unpinned(), {"pinned": None})

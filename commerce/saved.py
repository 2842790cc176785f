"""Save for later: a viewer keeps a product of a show in their bag without taking stock (an interest
signal: hosts see the counts on their dashboard; the data issue builds audiences from it)."""

from __future__ import annotations

import time
from typing import Any

from inventory.saved import MAX_SAVED, SavedItem, SavedStore
from inventory.store import Store

from .signals import Signals, SignalKind
from .catalogue import Catalogue
from .errors import Conflict, Unauthorized
from .identity import Identity
from .wire import product_wire

__all__ = ["Saved"]


class Saved:
    signals: Signals | None = None  # interest signals (Commerce sets it)

    def __init__(self, store: Store, catalogue: Catalogue) -> None:
        self.sql = SavedStore(store)
        self.catalogue = catalogue

    async def save(self, viewer: Identity, room_id: str, product_id: str) -> tuple[bool, dict[str, Any]]:
        if not viewer.is_viewer:
            raise Unauthorized("saving a product needs a viewer token")
        product = await self.catalogue.product(room_id, product_id)  # NOT_FOUND for an unknown room / product
        if await self.sql.count(viewer.user) >= MAX_SAVED:
            raise Conflict(f"at most {MAX_SAVED} saved products: remove some first")
        now = int(time.time() * 1000)
        fresh = await self.sql.save(SavedItem(viewer.user, room_id, product.product_id, now))
        if fresh and self.signals is not None:
            self.signals.record(SignalKind.SAVED, viewer.user, room_id, product=product.product_id)
        return fresh, {"room_id": room_id, "product": product_wire(product), "saved": True}

    async def unsave(self, viewer: Identity, room_id: str, product_id: str) -> bool:
        if not viewer.is_viewer:
            raise Unauthorized("this needs a viewer token")
        return await self.sql.unsave(viewer.user, room_id, product_id)

    async def of(self, viewer: Identity) -> list[dict[str, Any]]:
        if not viewer.is_viewer:
            raise Unauthorized("this needs a viewer token")
        out = []
        for item in await self.sql.of_user(viewer.user):
            rec = await self.catalogue.store.get_product(item.room_id, item.product_id)
            if rec is not None:
                out.append({"room_id": item.room_id, "product": product_wire(rec), "saved_at": item.saved_at_ms})
        return out

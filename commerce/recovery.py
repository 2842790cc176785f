"""Recovery after Redis data loss: reconcile live sales with SQL, rebuild them, bring their rooms back.

``inventory/reconcile.py`` compares and rebuilds a sale's stock state; this module adds the room: after
a sale of a room was rebuilt, the room's state (room, products, sales: what a joining or resyncing
viewer's snapshot is built from) is published again from SQL through ``publish.lua``, with a
``room_updated`` event. When the room's Redis keys were lost, that publish starts a new epoch, so
gateways resync and send viewers the rebuilt snapshot (the pinned product and muted viewers, known
only to Redis, are not restored).

``ReconcileLoop`` (run by every gateway and settlement process, one of them a round, every
``LIVESALE_RECONCILE_INTERVAL_S``) logs a
warning line per drifting sale, and repairs automatically only a sale whose Redis hash vanished while
SQL says it is live (nothing of it is left in Redis to lose); other drift is logged only, for an
operator to look at and repair with ``livesale reconcile --repair``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from inventory.keys import RECONCILE_LOCK, room_keys
from inventory.reconcile import RebuildResult, Reconciler, SaleDrift

from . import events as ev
from .service import Commerce
from .tasks import Every
from .wire import product_wire, room_wire

__all__ = ["Recovery", "ReconcileLoop"]

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, commerce: Commerce) -> None:
        self.commerce = commerce
        c = commerce
        self.reconciler = Reconciler(c.checkout.inventory.redis, c.store, c.checkout.inventory)

    async def check(self) -> list[SaleDrift]:
        return await self.reconciler.check_all()

    async def repair(self, drifts: list[SaleDrift] | None = None) -> list[RebuildResult]:
        """Rebuild every drifting sale from SQL, then republish the rooms of the rebuilt sales."""
        results = await self.reconciler.repair_all(drifts)
        rooms = []
        for r in results:
            if r.code == "REBUILT":
                sale = await self.commerce.store.get_sale(r.sale_id)
                if sale is not None and sale.room_id not in rooms:
                    rooms.append(sale.room_id)
        for room_id in rooms:
            await self.republish_room(room_id)
        return results

    async def rooms_lost(self) -> list[str]:
        """Live rooms (SQL) whose Redis state lost the room: a joining viewer would get NOT_FOUND."""
        out = []
        for room in await self.commerce.store.list_rooms(status="live", limit=1000):
            if not await self.commerce.bus.redis.hexists(room_keys(room.room_id).state, "room"):
                out.append(room.room_id)
        return out

    async def republish_room(self, room_id: str) -> None:
        """The room's state from SQL (room, products, sales with their live units) into its Redis state."""
        c = self.commerce
        room = await c.store.get_room(room_id)
        if room is None:
            return
        wire = room_wire(room)
        state: dict[str, Any] = {"room": wire}
        for p in await c.store.list_products(room_id):
            state[f"product:{p.product_id}"] = product_wire(p)
        for sale in await c.sales.of_room(room_id):
            state[f"sale:{sale['sale_id']}"] = sale
        # under a new epoch, with an event: every gateway resyncs from this state (even one that had
        # already reloaded the emptied room) and sends its viewers a fresh snapshot
        await c.bus.new_epoch(room_id)
        await c.bus.publish(room_id, ev.room_updated(wire), state, ended=room.status == "ended")


class ReconcileLoop:
    """Compare every live sale with SQL every ``interval_s``; repair the sales whose hash vanished.

    Every gateway (and a separate settlement process) runs one; a lock in Redis (``RECONCILE_LOCK``,
    held for most of an interval) lets one process a round do the comparison, so N gateways do not
    compare N times. ``last`` keeps the last round's drifting sales (what a metric will export)."""

    def __init__(self, commerce: Commerce, interval_s: float) -> None:
        self.recovery = Recovery(commerce)
        self.redis = commerce.bus.redis
        self.interval_s = interval_s
        self.last: list[SaleDrift] = []
        self._token = secrets.token_hex(8)
        self._loop = Every(interval_s, self._round, log, "reconcile")

    def start(self) -> None:
        self._loop.start()

    async def aclose(self) -> None:
        await self._loop.aclose()

    async def once(self) -> list[SaleDrift]:
        drifts = await self.recovery.check()
        self.last = [d for d in drifts if not d.ok]
        for d in self.last:
            log.warning("reconcile: %s", d.line())
        for room_id in await self.recovery.rooms_lost():  # no sale to rebuild, but viewers need the room
            log.warning("reconcile: room %s lost its Redis state: republished from SQL", room_id)
            await self.recovery.republish_room(room_id)
        missing = [d for d in drifts if d.missing]
        for r in await self.recovery.repair(missing) if missing else []:
            log.warning("reconcile: sale %s rebuilt from SQL after Redis lost it: %s (available %d, held %d, "
                        "sold %d, %d units restored, %d orders requeued)", r.sale_id, r.code, r.available, r.held,
                        r.sold, r.added, r.requeued)
        return drifts

    async def _my_round(self) -> bool:
        """This process takes the round when no other process took it in the last ~interval."""
        hold_ms = max(100, int(self.interval_s * 900))
        return bool(await self.redis.set(RECONCILE_LOCK, self._token, nx=True, px=hold_ms))

    async def _round(self) -> None:
        if await self._my_round():
            await self.once()

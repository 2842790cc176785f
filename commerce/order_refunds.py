"""Refunds of settled orders: the merchant of the order's pool, or a host of its room, refunds it.

The order becomes refunded (an ``order_refunds`` row: one per order, ever); with ``restock`` (the
default; false when the goods came back damaged) its units return to its pool exactly once
(``pool_stock.lua`` under the transfer id ``refund_restock:<order id>``); an order paid through the
payment provider gets its money back through the provider's refund (a ``refunds`` row, resent until the
provider takes it). The steps run in this order, each idempotent, with a named fault point after each
(tests kill the process there): ``after_record`` -> restock -> ``after_restock`` -> money ->
``after_money`` -> ``done``. A refund left ``recorded`` by a crash is finished by ``recover`` (run by
every gateway and settlement process): whatever had happened is not repeated.

A sale with units of its own (no pool) has nowhere to return units to: its refunded units are written
off (``restock`` is recorded false).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from inventory.keys import pool_of_sale
from inventory.order_refunds import OrderRefund, OrderRefundStore
from inventory.pools import PoolStore
from inventory.scripts import Inventory
from inventory.store import Store

from .errors import Forbidden, InvalidInput, NotFound, NotSettled
from .identity import Identity
from .payments.service import Payments
from .requests import RefundOrder
from .room_bus import RoomBus

__all__ = ["OrderRefunds", "refund_wire"]

log = logging.getLogger(__name__)

Fault = Callable[[str], None]


def refund_wire(r: OrderRefund) -> dict[str, Any]:
    return {"order_id": r.order_id, "sale_id": r.sale_id, "pool": r.pool_id or None, "units": r.units,
            "amount": r.amount, "currency": r.currency, "restock": r.restock, "reason": r.reason,
            "refunded_by": r.refunded_by, "state": r.state, "refunded_at": r.created_at_ms, "status": "refunded"}


class OrderRefunds:
    def __init__(self, store: Store, inventory: Inventory, bus: RoomBus, payments: Payments,
                 fault: Fault | None = None) -> None:
        self.store = store
        self.inventory = inventory
        self.bus = bus
        self.payments = payments
        self.sql = OrderRefundStore(store)
        self.pools = PoolStore(store)
        self.fault = fault or (lambda _point: None)

    async def refund(self, who: Identity, order_id: str, req: RefundOrder) -> tuple[bool, dict[str, Any]]:
        """(fresh, the refund): fresh False when the order was refunded before (nothing happens again)."""
        if len(order_id) > 128:
            raise InvalidInput("order id too long")
        o = await self.store.get_order(order_id)
        if o is None:
            hold = None
            try:
                hold = await self.inventory.get_hold(order_id)
            except Exception:  # not a hold id of this server
                hold = None
            if hold is not None and hold.status == "confirmed":
                raise NotSettled("the order is paid but not settled yet; retry shortly")
            raise NotFound(f"no settled order {order_id}")
        sale = await self.store.get_sale(o.sale_id)
        pool_id = sale.pool_id if sale is not None else (pool_of_sale(o.sale_id) or "")
        allowed = bool(o.room_id) and who.hosts(o.room_id)
        if not allowed and who.is_merchant and pool_id:
            pool = await self.pools.get(pool_id)
            allowed = pool is not None and pool.merchant_id == who.user
        if not allowed:
            raise Forbidden("refunding this order needs a host token of its room or the token of its pool's merchant")
        now = int(time.time() * 1000)
        r = OrderRefund(order_id=o.order_id, sale_id=o.sale_id, pool_id=pool_id, user_id=o.user_id, units=o.qty,
                        amount=o.total, currency=o.currency, restock=req.restock and bool(pool_id),
                        reason=req.reason, refunded_by=who.user, state="recorded", created_at_ms=now,
                        updated_at_ms=now)
        fresh, stored = await self.sql.record(r)
        if fresh:
            self.fault("after_record")
            log.info("refunds: order %s refunded by %s (%d units%s)", order_id, who.user, o.qty,
                     ", back to pool " + pool_id if r.restock else "")
        if stored.state == "recorded":
            await self._finish(stored)
            stored = await self.sql.get(order_id) or stored
        if fresh and o.room_id:
            await self.bus.to_user(o.room_id, o.user_id, {"type": "order_refunded", **refund_wire(stored)})
        return fresh, refund_wire(stored)

    async def _finish(self, r: OrderRefund) -> None:
        if r.restock:
            code, _available = await self.inventory.pools.stock(r.pool_id, f"refund_restock:{r.order_id}",
                                                                "refund_restock", r.units, r.reason, ref=r.order_id)
            if code not in ("DONE", "REPLAYED"):
                raise RuntimeError(f"refund of {r.order_id}: the pool {r.pool_id} answered {code}")
        self.fault("after_restock")
        for p in await self.payments.sql.for_hold(r.order_id):
            if p.status == "confirmed":
                if await self.payments.sql.refund(p, "order_refunded"):
                    await self.payments.send_refund(p.payment_id, p.amount, p.currency, "order_refunded")
        self.fault("after_money")
        await self.sql.mark_done(r.order_id)

    async def recover(self, older_than_s: float = 5.0) -> int:
        """Finish the refunds a stopped process left ``recorded``; returns how many."""
        done = 0
        for r in await self.sql.unfinished(int((time.time() - older_than_s) * 1000)):
            await self._finish(r)
            done += 1
            log.warning("refunds: finished the refund of order %s left unfinished by a stopped process", r.order_id)
        return done

    async def refunded_among(self, order_ids: list[str]) -> set[str]:
        return await self.sql.refunded_among(order_ids)

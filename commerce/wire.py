"""JSON shapes of rooms, products, sales, holds and orders, shared by both transports. Pure.

docs/PROTOCOL.md documents each shape; the WebSocket and the HTTP API send the same one.
"""

from __future__ import annotations

from typing import Any

import orjson

from inventory.domain import Hold
from inventory.keys import variant_group
from inventory.store import OrderRecord, ProductRecord, RoomRecord, SaleRecord

__all__ = ["product_wire", "room_wire", "sale_wire", "hold_wire", "order_wire", "order_event_wire", "mask_name"]


def mask_name(name: str) -> str:
    """The "just bought" ticker's name: first and last character, up to three `*` between."""
    name = name.strip() or "someone"
    if len(name) <= 2:
        return name[0] + "*"
    return name[0] + "*" * min(len(name) - 2, 3) + name[-1]


def product_wire(p: ProductRecord) -> dict[str, Any]:
    out = {"product_id": p.product_id, "sku": p.sku, "title": p.title, "description": p.description or "",
           "image_url": p.image_url or "", "unit_price": p.unit_price, "currency": p.currency}
    variants = orjson.loads(p.variants or "[]")
    if variants:
        out["variants"] = variants
    return out


def room_wire(r: RoomRecord) -> dict[str, Any]:
    return {"room_id": r.room_id, "title": r.title, "status": r.status, "player_url": r.player_url or "",
            "host_id": r.host_id}


def sale_wire(s: SaleRecord, units_left: int | None = None, state: str = "scheduled") -> dict[str, Any]:
    return {"sale_id": s.sale_id, "room_id": s.room_id, "product_id": s.product_id, "sku": s.sku,
            "title": s.title, "unit_price": s.unit_price, "currency": s.currency, "allocated": s.allocated,
            "units_left": s.allocated if units_left is None else units_left, "per_user_limit": s.per_user_limit,
            "starts_at": s.starts_at_ms, "ends_at": s.ends_at_ms, "hold_ttl_ms": s.hold_ttl_ms, "state": state,
            "members_only": s.members_only, **({"pool": s.pool_id} if s.pool_id else {}),
            **({"presale": {"deposit": s.deposit, "balance_from": s.balance_from_ms, "balance_by": s.balance_by_ms,
                            "deposit_rule": s.deposit_rule}} if s.deposit else {}),
            **({"group": variant_group(s.sale_id), "variant": s.variant} if s.variant else {})}


def hold_wire(h: Hold) -> dict[str, Any]:
    return {"hold_id": h.hold_id, "sale_id": h.sale_id, "user_id": h.user_id, "qty": h.qty, "status": h.status,
            "pay_by": h.pay_by_ms, "created_at": h.created_ms,
            "order_id": h.hold_id if h.status == "confirmed" else None}


def order_wire(o: OrderRecord) -> dict[str, Any]:
    """A settled order as the HTTP API returns it (``GET /api/orders/{order}``, ``/api/me/orders``)."""
    return {"order_id": o.order_id, "sale_id": o.sale_id, "room_id": o.room_id, "sku": o.sku,
            "user_id": o.user_id, "qty": o.qty, "unit_price": o.unit_price, "total": o.total,
            "currency": o.currency, "payment_ref": o.payment_ref, "reserved_at": o.reserved_at_ms,
            "confirmed_at": o.confirmed_at_ms, "settled_at": o.settled_at_ms, "status": "settled",
            "channel": o.channel or o.room_id, "source": o.source, "sharer": o.sharer or None,
            "ref_code": o.ref_code or None, **_coupon_fields(o)}


def _coupon_fields(o: OrderRecord) -> dict[str, Any]:
    """An order paid with a coupon: its list total, discount and coupon (``total`` is what was paid)."""
    if not o.coupon:
        return {}
    return {"list_total": o.unit_price * o.qty, "discount": o.discount, "coupon": o.coupon}


def order_event_wire(o: OrderRecord) -> dict[str, Any]:
    """The order inside ``order_confirmed`` (WebSocket)."""
    return {"order_id": o.order_id, "sale_id": o.sale_id, "sku": o.sku, "qty": o.qty, "unit_price": o.unit_price,
            "total": o.total, "currency": o.currency, "confirmed_at": o.confirmed_at_ms,
            "settled_at": o.settled_at_ms, **_coupon_fields(o)}

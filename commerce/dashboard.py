"""The host's live dashboard: orders, GMV, orders per minute, the funnel, the sales."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inventory import archive

from .funnel import REQUESTS, STEPS

if TYPE_CHECKING:
    from .service import Commerce

__all__ = ["dashboard"]


async def dashboard(c: Commerce, room_id: str, now_ms: int, local: tuple[int, int] | None) -> dict[str, Any]:
    """``local``: (viewers, likes) as this gateway knows the room, when it has it loaded."""
    room = await c.catalogue.room(room_id)
    store = c.store
    orders, units, gmv = await store.room_totals(room_id)
    per_minute = await store.orders_per_minute(room_id, now_ms - 30 * 60_000)
    latest = await store.orders_for_room(room_id, 20)
    funnel = await c.funnel.counts(room_id)  # requests per step
    uniques = await c.funnel.uniques(room_id)  # unique users per step (HyperLogLog estimates)
    if local is not None:
        viewers, likes = local
    else:
        viewers, likes = await c.bus.report_viewers(room_id, "-", 0, now_ms), 0
    if not funnel and room.status == "ended":  # the room's keys expired: its archive has the counts
        final = await archive.get_room(store, room_id)
        if final is not None:
            funnel = {"tapped": final.tapped, "reserved": final.reserved, "paid": final.paid}
            likes = max(likes, final.likes)
    if uniques is None and room.status == "ended":  # expired: exact unique counts from SQL (show report)
        uniques = await c.reports.funnel(room_id)
    saved = await c.saved.sql.counts_for_room(room_id)  # viewers who saved each product for later
    sales = []
    for wire in await c.sales.of_room(room_id):
        wire["settled_units"] = await store.sold_units(wire["sale_id"])
        sales.append(wire)
    return {
        "room": {"room_id": room.room_id, "title": room.title, "status": room.status},
        "server_time": now_ms, "viewers": viewers, "likes": likes,
        "orders": orders, "units": units, "gmv": gmv,
        "orders_per_minute": [{"minute": m, "orders": n, "gmv": g} for m, n, g in per_minute],
        # unique viewers per step (docs/PROTOCOL.md: estimates within ~1%); `requests`: what was asked
        "funnel": {step: (uniques or {}).get(step, 0) for step in STEPS},
        "requests": {step: funnel.get(step, 0) for step in REQUESTS},
        "sales": sales, "saved": saved,
        "latest_orders": [{"order_id": o.order_id, "sale_id": o.sale_id, "user_id": o.user_id, "qty": o.qty,
                           "total": o.total, "currency": o.currency, "confirmed_at": o.confirmed_at_ms}
                          for o in latest],
    }

"""Room actions shared by the WebSocket gateway and the HTTP API: hosts' controls, buying, chat.

Each action validates, changes the system of record (SQL for rooms/products/sales, Redis Lua for
stock), then publishes the room event. Results are typed; the transports map them to the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from inventory.domain import (
    ConfirmCode, ConfirmResult, InvalidInput, ReleaseResult, ReserveCode, ReserveRequest, ReserveResult,
    SaleSpec, check_id, SALE_ID_RE,
)
from inventory.scripts import Inventory
from inventory.store import OrderStore, ProductRecord, RoomRecord, SaleRecord

from .identity import Identity
from .room_bus import RoomBus
from .room_state import sale_state_at
from .tasks import OwnedTasks

__all__ = ["RoomService", "ActionError", "mask_name", "sale_wire"]

log = logging.getLogger(__name__)


class ActionError(Exception):
    """A refused action: ``code`` is stable (NOT_FOUND, FORBIDDEN, INVALID, CONFLICT, MUTED...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def mask_name(name: str) -> str:
    name = name.strip() or "someone"
    if len(name) <= 2:
        return name[0] + "*"
    return name[0] + "*" * min(len(name) - 2, 3) + name[-1]


def _now_ms() -> int:
    return int(time.time() * 1000)


def product_wire(p: ProductRecord) -> dict[str, Any]:
    return {"product_id": p.product_id, "sku": p.sku, "title": p.title, "description": p.description or "",
            "image_url": p.image_url or "", "unit_price": p.unit_price, "currency": p.currency}


def room_wire(r: RoomRecord) -> dict[str, Any]:
    return {"room_id": r.room_id, "title": r.title, "status": r.status, "player_url": r.player_url or "",
            "host_id": r.host_id}


def sale_wire(s: SaleRecord, units_left: int | None = None, state: str = "scheduled") -> dict[str, Any]:
    return {"sale_id": s.sale_id, "room_id": s.room_id, "product_id": s.product_id, "sku": s.sku,
            "title": s.title, "unit_price": s.unit_price, "currency": s.currency, "allocated": s.allocated,
            "units_left": s.allocated if units_left is None else units_left, "per_user_limit": s.per_user_limit,
            "starts_at": s.starts_at_ms, "ends_at": s.ends_at_ms, "hold_ttl_ms": s.hold_ttl_ms, "state": state}


ReserveCallback = Callable[[ReserveResult | BaseException], None]


class ReserveBatcher:
    """Group-commit for the burst: buys for one sale that arrive while a script call is in flight are
    sent together in the next call (one EVALSHA reserves up to ``max_batch`` requests).

    ``submit`` takes a callback rather than returning a future: the gateway answers each click from
    the batch's result loop directly, so a click costs no task wake-up of its own."""

    def __init__(self, inventory: Inventory, max_batch: int = 256, max_inflight: int = 2) -> None:
        self.inventory = inventory
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queues: dict[str, list[tuple[ReserveRequest, ReserveCallback]]] = {}
        self._inflight: dict[str, int] = {}
        self._tasks = OwnedTasks(log, "reserve batch")

    def submit(self, sale_id: str, req: ReserveRequest, done: ReserveCallback) -> None:
        """Queue one request; ``done`` gets its ReserveResult (or the exception that failed its batch)."""
        self._queues.setdefault(sale_id, []).append((req, done))
        if self._inflight.get(sale_id, 0) < self.max_inflight:
            self._start(sale_id)

    def _start(self, sale_id: str) -> None:
        self._inflight[sale_id] = self._inflight.get(sale_id, 0) + 1
        self._tasks.spawn(self._drain(sale_id))

    async def _drain(self, sale_id: str) -> None:
        try:
            await asyncio.sleep(0)  # let this loop iteration's other buys join the batch
            while True:
                queue = self._queues.get(sale_id)
                if not queue:
                    break
                batch, self._queues[sale_id] = queue[: self.max_batch], queue[self.max_batch:]
                try:
                    results: list[ReserveResult] | None = await self.inventory.reserve_many(
                        sale_id, [req for req, _ in batch])
                    failure: BaseException | None = None
                except Exception as exc:  # Redis down: every waiter gets the error, nothing is lost
                    results, failure = None, exc
                for i, (_, done) in enumerate(batch):
                    try:
                        done(failure if results is None else results[i])
                    except Exception:
                        log.exception("reserve callback failed")
        finally:
            self._inflight[sale_id] -= 1
            if not self._inflight[sale_id]:
                del self._inflight[sale_id]
                if not self._queues.get(sale_id):
                    self._queues.pop(sale_id, None)

    async def close(self) -> None:
        await self._tasks.cancel(5.0)


def _settle_future(fut: "asyncio.Future[Any]", outcome: Any) -> None:
    if fut.done():
        return
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)


class RoomService:
    def __init__(self, store: OrderStore, inventory: Inventory, bus: RoomBus, default_hold_ttl_s: int,
                 max_qty: int) -> None:
        self.store = store
        self.inventory = inventory
        self.bus = bus
        self.default_hold_ttl_s = default_hold_ttl_s
        self.max_qty = max_qty
        self.batcher = ReserveBatcher(inventory)
        self._funnel: dict[str, dict[str, int]] = {}  # room -> counter -> n, flushed to Redis each second
        self._flusher: asyncio.Task[None] | None = None
        self._tasks = OwnedTasks(log, "room publish")  # publishes started from the buy path

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="funnel-flush")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_funnel()
        await self.batcher.close()
        await self._tasks.drain(5.0)

    def _count(self, room_id: str, field: str) -> None:
        room = self._funnel.setdefault(room_id, {})
        room[field] = room.get(field, 0) + 1

    async def flush_funnel(self) -> None:
        pending, self._funnel = self._funnel, {}
        for room_id, counts in pending.items():
            for field, n in counts.items():
                await self.bus.count(room_id, field, n)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.flush_funnel()
            except Exception as exc:  # Redis briefly away: the counts of that second are dropped
                log.warning("funnel flush failed: %s", exc)

    # -- rooms and catalogue -------------------------------------------------------------------

    async def create_room(self, host: Identity, room_id: str | None, title: str, player_url: str) -> dict[str, Any]:
        room_id = room_id or "r-" + secrets.token_hex(4)
        check_id("room_id", room_id, SALE_ID_RE)
        existing = await self.store.get_room(room_id)
        if existing and existing.host_id != host.user and "*" not in host.rooms:
            raise ActionError("CONFLICT", f"room {room_id} belongs to another host")
        now = _now_ms()
        rec = RoomRecord(room_id=room_id, title=title, host_id=host.user, player_url=player_url,
                         status=existing.status if existing else "scheduled",
                         created_at_ms=existing.created_at_ms if existing else now, updated_at_ms=now)
        await self.store.upsert_room(rec)
        await self.bus.publish(room_id, {"type": "room_updated", "room": room_wire(rec)}, {"room": room_wire(rec)})
        return room_wire(rec)

    async def room(self, room_id: str) -> RoomRecord:
        check_id("room_id", room_id, SALE_ID_RE)
        rec = await self.store.get_room(room_id)
        if rec is None:
            raise ActionError("NOT_FOUND", f"no room {room_id}")
        return rec

    async def add_product(self, room_id: str, product_id: str | None, sku: str, title: str, unit_price: int,
                          currency: str, description: str, image_url: str) -> dict[str, Any]:
        await self.room(room_id)
        product_id = product_id or "p-" + secrets.token_hex(4)
        check_id("product_id", product_id, SALE_ID_RE)
        check_id("sku", sku)
        if isinstance(unit_price, bool) or not isinstance(unit_price, int) or not 0 <= unit_price <= 10**12:
            raise InvalidInput("unit_price", "unit_price must be an integer number of minor units")
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper() or not currency.isalpha():
            raise InvalidInput("currency", "currency must be a 3-letter ISO 4217 code such as EUR")
        rec = ProductRecord(room_id=room_id, product_id=product_id, sku=sku, title=title, description=description,
                            image_url=image_url, unit_price=unit_price, currency=currency)
        await self.store.upsert_product(rec)
        wire = product_wire(rec)
        await self.bus.publish(room_id, {"type": "product_added", "product": wire}, {f"product:{product_id}": wire})
        return wire

    # -- host actions ----------------------------------------------------------------------------

    async def set_status(self, room_id: str, status: str) -> None:
        rec = await self.room(room_id)
        await self.store.set_room_status(room_id, status)
        wire = {**room_wire(rec), "status": status}
        await self.bus.publish(room_id, {"type": "room_status", "status": status}, {"room": wire})
        if status == "ended":
            await self._close_room_sales(room_id)

    async def _close_room_sales(self, room_id: str) -> None:
        """Ending the live ends its sales: every open or scheduled sale of the room closes now (in
        Redis, so no buy or HTTP reserve gets through after this) with ``sale_closed`` reason
        ``live_ended``. Sales that had already ended keep their own close."""
        now = await self.inventory.now_ms()
        for rec in await self.store.list_sales(room_id):
            counters = await self.inventory.counters(rec.sale_id)
            if counters is None or counters.ends_at_ms <= now:
                continue
            ends = await self.inventory.close(rec.sale_id)
            if ends is None:
                continue
            _, wire = await self.sale(rec.sale_id)
            await self.fire_close(room_id, {**wire, "ends_at": ends}, reason="live_ended")

    async def pin(self, room_id: str, product_id: str) -> None:
        p = await self.store.get_product(room_id, product_id)
        if p is None:
            raise ActionError("NOT_FOUND", f"no product {product_id} in room {room_id}")
        wire = product_wire(p)
        await self.bus.publish(room_id, {"type": "product_pinned", "product": wire}, {"pinned": wire})

    async def unpin(self, room_id: str) -> None:
        await self.bus.publish(room_id, {"type": "product_unpinned"}, {"pinned": None})

    async def announce(self, room_id: str, text: str) -> None:
        await self.bus.publish(room_id, {"type": "announcement", "text": text},
                               {"announcement": {"text": text, "ts": _now_ms()}})

    async def hide_comment(self, room_id: str, comment_id: str) -> None:
        await self.bus.publish(room_id, {"type": "comment_hidden", "comment": comment_id}, {f"hidden:{comment_id}": 1})

    async def mute(self, room_id: str, user: str) -> None:
        await self.bus.publish(room_id, {"type": "user_muted", "user": user}, {f"muted:{user}": 1})

    async def launch_sale(self, room_id: str, product_id: str, units: int, *, price: int | None = None,
                          per_user_limit: int = 1, starts_at_ms: int | None = None, starts_in_s: int = 0,
                          ends_at_ms: int | None = None, duration_s: int = 300, hold_ttl_s: int | None = None,
                          sale_id: str | None = None) -> dict[str, Any]:
        await self.room(room_id)
        product = await self.store.get_product(room_id, product_id)
        if product is None:
            raise ActionError("NOT_FOUND", f"no product {product_id} in room {room_id}")
        now = await self.inventory.now_ms()
        starts = starts_at_ms if starts_at_ms is not None else now + starts_in_s * 1000
        ends = ends_at_ms if ends_at_ms is not None else starts + duration_s * 1000
        sale_id = sale_id or "s-" + secrets.token_hex(5)
        ttl_ms = (hold_ttl_s or self.default_hold_ttl_s) * 1000
        spec = SaleSpec(sale_id=sale_id, room_id=room_id, sku=product.sku,
                        unit_price=product.unit_price if price is None else price, currency=product.currency,
                        allocated=units, per_user_limit=per_user_limit, starts_at_ms=starts, ends_at_ms=ends,
                        hold_ttl_ms=ttl_ms)
        rec = SaleRecord(sale_id=sale_id, room_id=room_id, product_id=product_id, sku=product.sku,
                         title=product.title, unit_price=spec.unit_price, currency=spec.currency,
                         allocated=units, per_user_limit=per_user_limit, starts_at_ms=starts, ends_at_ms=ends,
                         hold_ttl_ms=ttl_ms, created_at_ms=now)
        try:
            await self.store.insert_sale(rec)  # the DB is the system of record: write it first
        except Exception as exc:
            if type(exc).__name__ == "SaleConflict":
                raise ActionError("CONFLICT", f"sale {sale_id} exists with different terms") from None
            raise
        armed = await self.inventory.arm(spec)
        if not armed.ok:
            raise ActionError("CONFLICT" if armed.code.value == "CONFLICT" else "INVALID",
                              f"sale {sale_id} could not be armed: {armed.code.value}")
        wire = sale_wire(rec, armed.available, sale_state_at(sale_wire(rec), now, armed.available))
        await self.bus.publish(room_id, {"type": "sale_scheduled", "sale": wire}, {f"sale:{sale_id}": wire},
                               once=f"scheduled:{sale_id}")
        return wire

    async def sale(self, sale_id: str) -> tuple[SaleRecord, dict[str, Any]]:
        check_id("sale_id", sale_id, SALE_ID_RE)
        rec = await self.store.get_sale(sale_id)
        if rec is None:
            raise ActionError("NOT_FOUND", f"no sale {sale_id}")
        counters = await self.inventory.counters(sale_id)
        now = await self.inventory.now_ms()
        if counters is None:
            return rec, sale_wire(rec, None, "closed")
        wire = sale_wire(rec, counters.available, "scheduled")
        wire.update(starts_at=counters.starts_at_ms, ends_at=counters.ends_at_ms, held=counters.held,
                    sold=counters.sold, state=sale_state_at({**wire, "state": ""}, now, counters.available))
        return rec, wire

    async def fire_open(self, room_id: str, sale: dict[str, Any]) -> None:
        """At the open instant (first gateway to get there publishes; the rest are deduplicated)."""
        counters = await self.inventory.counters(sale["sale_id"])
        units = counters.available if counters else sale.get("units_left", 0)
        wire = {**sale, "state": "open" if units else "sold_out", "units_left": units}
        await self.bus.publish(room_id, {"type": "sale_open", "sale": wire}, {f"sale:{sale['sale_id']}": wire},
                               once=f"open:{sale['sale_id']}")

    async def fire_close(self, room_id: str, sale: dict[str, Any], reason: str = "ended") -> None:
        wire = {**sale, "state": "closed"}
        await self.bus.publish(room_id, {"type": "sale_closed", "sale_id": sale["sale_id"], "reason": reason,
                                         "ends_at": sale["ends_at"]},
                               {f"sale:{sale['sale_id']}": wire}, once=f"close:{sale['sale_id']}")

    async def end_sale(self, room_id: str, sale_id: str) -> None:
        rec, wire = await self.sale(sale_id)
        if rec.room_id != room_id:
            raise ActionError("NOT_FOUND", f"no sale {sale_id} in room {room_id}")
        ends = await self.inventory.close(sale_id)
        if ends is None:
            raise ActionError("NOT_FOUND", f"sale {sale_id} is not armed")
        await self.fire_close(room_id, {**wire, "ends_at": ends}, reason="stopped")

    async def restocked(self, room_id: str, sale_id: str, available: int) -> None:
        """Expired holds brought a sold-out sale back: tell the room it is open again."""
        try:
            _, wire = await self.sale(sale_id)
        except ActionError:
            return
        if wire["state"] == "open":
            await self.bus.publish(room_id, {"type": "sale_open", "sale": wire, "reason": "restocked"},
                                   {f"sale:{sale_id}": wire})

    # -- viewers ---------------------------------------------------------------------------------

    def submit_buy(self, viewer: Identity, room_id: str | None, sale_id: str, qty: Any, request_id: str,
                   done: ReserveCallback) -> None:
        """Queue a reservation; ``done`` gets the ReserveResult (or the exception that failed it)."""
        if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= self.max_qty:
            done(ReserveResult(ReserveCode.INVALID, None, None, 0, 0))
            return
        self.batcher.submit(sale_id, ReserveRequest(viewer.user, qty, request_id),
                            partial(self._reserved, room_id, sale_id, done))

    def _reserved(self, room_id: str | None, sale_id: str, done: ReserveCallback,
                  result: ReserveResult | BaseException) -> None:
        # a replayed answer (a retry of a request already decided) changed nothing: it neither counts in
        # the funnel again nor announces anything to the room
        if isinstance(result, ReserveResult) and room_id and not result.replayed:
            self._count(room_id, "tapped")
            if result.ok:
                self._count(room_id, "reserved")
                if result.available == 0:  # this request took the last unit: exactly once per depletion
                    self._tasks.spawn(self.bus.publish(room_id, {"type": "sale_sold_out", "sale_id": sale_id}))
        done(result)

    async def buy(self, viewer: Identity, room_id: str | None, sale_id: str, qty: Any, request_id: str) -> ReserveResult:
        fut: asyncio.Future[ReserveResult] = asyncio.get_running_loop().create_future()
        self.submit_buy(viewer, room_id, sale_id, qty, request_id, partial(_settle_future, fut))
        return await fut

    async def pay(self, viewer: Identity, hold_id: str, payment_ref: str | None = None) -> ConfirmResult:
        """Demo payment: it succeeds at once and confirms the hold (idempotent per hold)."""
        ref = payment_ref or "demo-" + hold_id
        result = await self.inventory.confirm(hold_id, ref, viewer.user)
        if result.code is ConfirmCode.CONFIRMED and result.fresh:  # announce once, not on replays
            hold = await self.inventory.get_hold(hold_id)
            counters = await self.inventory.counters(hold.sale_id) if hold else None
            if hold and counters and hold.confirmed_ms:
                room = counters.room_id
                self._count(room, "paid")
                await self.bus.ambient(room, {"k": "b", "b": {"name": mask_name(viewer.name),
                                                               "sale_id": hold.sale_id, "qty": hold.qty,
                                                               "ts": hold.confirmed_ms}})
        return result

    async def release(self, viewer: Identity, hold_id: str) -> ReleaseResult:
        return await self.inventory.release(hold_id, viewer.user)

    async def comment(self, viewer: Identity, room_id: str, text: str) -> dict[str, Any]:
        c = {"id": "c-" + secrets.token_hex(5), "user": viewer.user, "name": viewer.name, "text": text,
             "ts": _now_ms()}
        await self.bus.comment(room_id, c)
        return c

    async def like(self, room_id: str, n: int) -> int:
        return await self.bus.add_likes(room_id, n)


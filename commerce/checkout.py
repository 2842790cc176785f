"""Buying and paying: reserve (batched for the burst), pay, release, the buyer's holds and orders.

Stock changes happen only in the inventory's Lua scripts; this module decides who may ask, counts
the funnel, and tells the room what happened (sold out, "just bought").
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from functools import partial
from typing import Any

from inventory.domain import (
    ConfirmCode, ConfirmResult, Hold, ReleaseCode, InvalidInput as InventoryInvalidInput, ReleaseResult, ReserveCode,
    ReserveRequest, ReserveResult, SaleCounters, sale_of_hold,
)
from inventory.buckets import parent_of
from inventory.draws import PRIZE_SALE_MARK
from inventory.keys import POOL_BUCKET_SUFFIX
from inventory.order_refunds import user_totals
from inventory.scripts import Inventory
from inventory.store import OrderRecord, Store

from . import events as ev
from .batcher import ReserveBatcher, ReserveCallback
from .errors import ErrorCode, Forbidden, HoldLost, InvalidInput, NotFound, NotSettled, Refused
from .funnel import Funnel
from .identity import Identity
from .my_holds import MyHolds
from .room_bus import RoomBus
from .signals import Signals, SignalKind
from .sale_terms import MembersOnly
from .tasks import OwnedTasks
from .wire import mask_name

__all__ = ["Checkout"]

log = logging.getLogger(__name__)

_new = tuple.__new__  # a NamedTuple made without its Python-level __new__ (per click: 0.08 vs 0.22 µs)


def _with_discount(result: ConfirmResult, hold: Hold, counters: SaleCounters | None) -> ConfirmResult:
    """A confirm's answer with the coupon's discount and the total paid (``hold`` names the coupon)."""
    total = counters.unit_price * hold.qty - hold.discount if counters is not None else None
    return dataclasses.replace(result, discount=hold.discount, total=total)


def _settle_future(fut: asyncio.Future[Any], outcome: Any) -> None:
    if fut.done():
        return
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)


async def owned_hold(inventory: Inventory, viewer: Identity, hold_id: str) -> Hold:
    """The viewer's hold: INVALID for a malformed id, HOLD_LOST for a hold lost with Redis data
    (its sale was rebuilt from SQL), NOT_FOUND, or FORBIDDEN for someone else's."""
    try:
        sale_of_hold(hold_id)
    except InventoryInvalidInput as e:
        raise InvalidInput(e.message) from None
    hold = await inventory.get_hold(hold_id)
    if hold is None:
        if await inventory.hold_lost(hold_id):
            raise HoldLost(f"hold {hold_id} was lost with Redis data; buy again")
        raise NotFound(f"no hold {hold_id}")
    if hold.user_id != viewer.user:
        raise Forbidden("this hold belongs to someone else")
    return hold


class Checkout:
    def __init__(self, store: Store, inventory: Inventory, bus: RoomBus, funnel: Funnel, max_qty: int,
                 members_only: MembersOnly | None = None) -> None:
        self.store = store
        self.members_only = members_only or MembersOnly(store)
        self.inventory = inventory
        self.bus = bus
        self.funnel = funnel
        self.max_qty = max_qty
        self.batcher = ReserveBatcher(inventory)
        # the buyer's index of holds (GET /api/me/orders), kept as long as a room's keys
        self.my_holds = MyHolds(inventory.redis, inventory, ttl_s=bus.retain_room_ms // 1000)
        self._tasks = OwnedTasks(log, "room publish")  # publishes started from the buy path

    async def aclose(self) -> None:
        await self.batcher.aclose()
        await self._tasks.drain(5.0)
        await self.my_holds.aclose()

    # -- reserve ---------------------------------------------------------------------------------------

    def submit_buy(self, viewer: Identity, room_id: str | None, sale_id: str, qty: int, request_id: str,
                   done: ReserveCallback) -> None:
        """Queue a reservation; ``done`` gets the ReserveResult (or the exception that failed it)."""
        if not 1 <= qty <= self.max_qty:
            done(ReserveResult(ReserveCode.INVALID, None, None, 0, 0))
            return
        # a pool's own stock: only through a channel (commerce/pools.py); a draw's prize: only its winners
        if sale_id.endswith(POOL_BUCKET_SUFFIX) or PRIZE_SALE_MARK in sale_id:
            done(ReserveResult(ReserveCode.NOT_FOUND, None, None, 0, 0))
            return
        members_only: bool | None = False
        if viewer.guest:  # a members-only sale refuses guest tokens, before the batch (no SQL per click)
            members_only = self.members_only.cached(sale_id)
            if members_only is None:  # first guest click on this sale in this process: read its row once
                self._tasks.spawn(self._guest_buy(viewer, room_id, sale_id, qty, request_id, done))
                return
        self._submit(viewer, room_id, sale_id, qty, request_id, done, members_only)

    def _submit(self, viewer: Identity, room_id: str | None, sale_id: str, qty: int, request_id: str,
                done: ReserveCallback, members_only: bool | None) -> None:
        if members_only and viewer.guest:
            done(ReserveResult(ReserveCode.MEMBERS_ONLY, None, None, 0, 0))
            return
        # a hot sale split into buckets: the batch of the buyer's home bucket (one script call per slot)
        self.batcher.submit(self.inventory.buckets.batch_key(sale_id, viewer.user),
                            _new(ReserveRequest, (viewer.user, qty, request_id)),
                            partial(self._reserved, room_id, sale_id, done, viewer.user))

    async def _guest_buy(self, viewer: Identity, room_id: str | None, sale_id: str, qty: int, request_id: str,
                         done: ReserveCallback) -> None:
        try:
            members_only = await self.members_only.load(sale_id)
        except Exception as exc:  # SQL unreachable: the buyer gets INTERNAL and may retry
            done(exc)
            return
        self._submit(viewer, room_id, sale_id, qty, request_id, done, members_only)

    def _reserved(self, room_id: str | None, sale_id: str, done: ReserveCallback, user: str,
                  result: ReserveResult | BaseException) -> None:
        # a replayed answer (a retry of a request already decided) changed nothing: it neither counts in
        # the funnel again nor announces anything to the room
        if result.__class__ is ReserveResult and not result.replayed:
            r: ReserveResult = result
            reserved = r.code is ReserveCode.RESERVED
            hold = r.hold_id if reserved else None
            if room_id:
                self.funnel.tapped(room_id, user, reserved)
                if reserved and r.available == 0:  # this request took the last unit: once per depletion
                    self._tasks.spawn(self._sold_out(room_id, sale_id))
            if hold:
                self.my_holds.note(user, hold)
            sig = self.signals
            if sig is not None:  # interest signals: tapped, held, came too late
                sig.decided(user, room_id or "", sale_id, hold, r.at_ms or 0, r.code is ReserveCode.SOLD_OUT)
        done(result)

    async def _sold_out(self, room_id: str, sale_id: str) -> None:
        """``sale_sold_out``. A hot sale split into buckets can see its last units go in several buckets at
        once, each answer saying 0 left: the event is published once per depletion, named by the number of
        holds the sale has had (no hold is made while it is sold out; the next depletion needs new ones)."""
        mark = await self.inventory.buckets.depletion_mark(sale_id)
        await self.bus.publish(room_id, ev.sale_sold_out(sale_id), once=f"sold_out:{sale_id}:{mark}" if mark else "")

    async def buy(self, viewer: Identity, room_id: str | None, sale_id: str, qty: int,
                  request_id: str) -> ReserveResult:
        fut: asyncio.Future[ReserveResult] = asyncio.get_running_loop().create_future()
        self.submit_buy(viewer, room_id, sale_id, qty, request_id, partial(_settle_future, fut))
        return await fut

    # -- pay and release -------------------------------------------------------------------------------

    instant_pay = True  # LIVESALE_PAYMENT_MODE=instant; otherwise `pay` is refused (Commerce sets it)
    coupons: Any = None  # commerce.coupons.Coupons (Commerce sets it): coupons applied at pay
    on_paid: Any = None  # (room, user, total, currency): the fan team leaderboard (commerce.teams)
    signals: Signals | None = None  # interest signals (commerce/signals.py; Commerce sets it)
    attribution: Any = None  # async (user) -> the buyer's share-link attribution for confirm (commerce.growth)

    async def _attribution(self, user: str) -> str:
        return await self.attribution(user) if self.attribution is not None else ""

    async def pay(self, viewer: Identity, hold_id: str, payment_ref: str | None = None,
                  coupon: str | None = None) -> ConfirmResult:
        """Demo payment: it succeeds at once and confirms the hold (idempotent per hold). Only in the
        instant payment mode; with a provider it raises PAYMENT_REQUIRED (pay through `checkout`),
        except for a hold with nothing to pay (a draw's prize at price 0). ``coupon``: a claimed
        coupon, locked to the hold, then the hold is confirmed with its discount, then the coupon is
        redeemed (docs/PROTOCOL.md Coupon drops; refusals raise COUPON_*)."""
        if not self.instant_pay and not await self._free_hold(hold_id):
            raise Refused(ErrorCode.PAYMENT_REQUIRED, "this server takes payments through its provider: "
                                                      "send checkout")
        if coupon is not None:
            return await self._pay_with_coupon(viewer, hold_id, payment_ref, coupon)
        ref = payment_ref
        if ref is None:  # a pre-sale's balance is a second payment: its own reference
            try:
                held = await self.inventory.get_hold(hold_id)
            except InventoryInvalidInput:
                held = None
            ref = ("demo-balance-" if held is not None and held.status == "deposit" else "demo-") + hold_id
        result = await self.inventory.confirm(hold_id, ref, viewer.user,
                                              attribution=await self._attribution(viewer.user))
        if result.code is ConfirmCode.CONFIRMED and result.fresh:
            hold = await self.inventory.get_hold(hold_id)
            await self._announce(viewer, hold, await self.inventory.counters(hold.sale_id) if hold else None)
        return result

    async def _free_hold(self, hold_id: str) -> bool:
        """A held hold with nothing to pay (a draw's prize: a sale at price 0)."""
        try:
            hold = await self.inventory.get_hold(hold_id)
        except InventoryInvalidInput:
            return False
        counters = await self.inventory.counters(hold.sale_id) if hold is not None else None
        return counters is not None and counters.unit_price == 0

    async def _pay_with_coupon(self, viewer: Identity, hold_id: str, payment_ref: str | None,
                               coupon: str) -> ConfirmResult:
        hold = await owned_hold(self.inventory, viewer, hold_id)
        if hold.status == "confirmed":  # a retry: the answer of the pay that confirmed it
            result = await self.inventory.confirm(hold_id, payment_ref or "demo-" + hold_id, viewer.user)
            if hold.coupon != coupon:
                return result
            return _with_discount(result, hold, await self.inventory.counters(hold.sale_id))
        sale = await self.store.get_sale(hold.sale_id)
        discount = await self.coupons.lock_for(viewer, hold, coupon, sale)  # step 1 (refusals raise)
        after: Hold | None = None
        try:
            result = await self.inventory.confirm(hold_id, payment_ref or "demo-" + hold_id, viewer.user,
                                                  discount, coupon, await self._attribution(viewer.user))  # step 2
        finally:
            after = await self.inventory.get_hold(hold_id)
            await self.coupons.finish(viewer.user, coupon, hold_id, hold=after)  # step 3, from the hold's record
        counters = await self.inventory.counters(hold.sale_id)
        if result.code is ConfirmCode.CONFIRMED and result.fresh:
            await self._announce(viewer, after, counters)
        if after is not None and after.coupon == coupon and result.code is ConfirmCode.CONFIRMED:
            return _with_discount(result, after, counters)
        return result

    async def _announce(self, viewer: Identity, hold: Hold | None, counters: SaleCounters | None) -> None:
        """Once per confirmed hold (the caller checks it was this call that confirmed it): the funnel's
        paid, the team board, "just bought"."""
        if hold is None or counters is None or PRIZE_SALE_MARK in hold.sale_id:  # a prize: not a purchase
            return
        if self.signals is not None:
            self.signals.record(SignalKind.PAID, viewer.user, counters.room_id if not hold.channel else "",
                                sale=hold.sale_id, ref=hold.hold_id)
        if hold.confirmed_ms and not hold.channel:  # a channel's sale has no room
            room = counters.room_id
            self.funnel.count(room, "paid", viewer.user)
            if self.on_paid is not None:
                await self.on_paid(room, viewer.user, counters.unit_price * hold.qty - hold.discount, counters.currency)
            await self.bus.ambient(room, {"k": "b", "b": {"name": mask_name(viewer.name), "sale_id": hold.sale_id,
                                                           "qty": hold.qty, "ts": hold.confirmed_ms}})

    async def release(self, viewer: Identity, hold_id: str) -> ReleaseResult:
        result = await self.inventory.release(hold_id, viewer.user)
        if result.code is ReleaseCode.RELEASED and self.signals is not None:
            self.signals.record(SignalKind.RELEASED, viewer.user, sale=parent_of(sale_of_hold(hold_id)), ref=hold_id)
        if result.code is ReleaseCode.NOT_FOUND and await self.inventory.hold_lost(hold_id):
            return ReleaseResult(ReleaseCode.HOLD_LOST, "", result.available)
        return result

    # -- the buyer's holds and orders ------------------------------------------------------------------

    async def own_hold(self, viewer: Identity, hold_id: str) -> Hold:
        return await owned_hold(self.inventory, viewer, hold_id)

    async def settled_order(self, order_id: str) -> OrderRecord | None:
        return await self.store.get_order(order_id)

    async def order_for(self, who: Identity, order_id: str) -> OrderRecord:
        """A settled order, for its buyer or a host of its room; NOT_SETTLED while a confirmed
        order is still on its way to SQL."""
        if len(order_id) > 128:
            raise InvalidInput("order id too long")
        o = await self.store.get_order(order_id)
        if o is None:
            try:
                hold = await self.inventory.get_hold(order_id)
            except InventoryInvalidInput:
                hold = None
            counters = await self.inventory.counters(hold.sale_id) if hold is not None else None
            if (hold is not None and hold.status == "confirmed"
                    and (hold.user_id == who.user or (counters is not None and who.hosts(counters.room_id)))):
                raise NotSettled("the order is confirmed and being settled; retry shortly")
            raise NotFound(f"no order {order_id}")
        if o.user_id != who.user and not who.hosts(o.room_id):
            raise Forbidden("this order belongs to someone else")
        return o

    async def my_holds_and_totals(self, viewer: Identity) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
        """The buyer's recent holds that are not settled orders (reserved, paid and settling, expired,
        released), newest first, and the totals of their settled orders per currency."""
        settled = set()
        lines = await self.my_holds.lines(viewer.user)
        paid = [h["hold_id"] for h in lines if h["status"] == "paid"]
        if paid:
            settled = set((await self.store.get_orders(paid)).keys())
        holds = [h for h in lines if h["hold_id"] not in settled]
        return holds, await user_totals(self.store, viewer.user)

    async def my_orders(self, viewer: Identity, since_ms: int, after: tuple[int, str] | None,
                        limit: int) -> tuple[list[OrderRecord], tuple[int, str] | None]:
        """The viewer's settled orders with settled_at >= since, oldest first; and the key after the
        page's last order when there are more."""
        rows = await self.store.orders_settled_for_user(viewer.user, since_ms, after, limit + 1)
        page = rows[:limit]
        more = (page[-1].settled_at_ms, page[-1].order_id) if len(rows) > limit else None
        return page, more

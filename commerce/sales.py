"""Flash sales: launch (SQL first, then armed in Redis), read, open and close on time, stop.

The sale clock is Redis ``TIME``: buying is decided in Lua whatever these events say; the events
tell the room. Open and close are published once across gateways (deduplicated in Redis).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import orjson
from typing import Any

from inventory import archive
from inventory import buckets as B
from inventory.domain import ArmCode, PresaleTerms, SaleSpec
from inventory.draws import PRIZE_SALE_MARK
from inventory.keys import GROUP_PREFIX, POOL_SEP, slot_family, variant_group
from inventory.pools import PoolStore
from inventory.scripts import Inventory
from inventory.store import ProductRecord, SaleConflict, SaleRecord, Store

from . import events as ev
from .catalogue import Catalogue, check_slug
from .errors import Conflict, ErrorCode, InvalidInput, NotFound, Refused
from .requests import CreateSale
from .room_bus import RoomBus
from .room_state import sale_state_at
from .sale_terms import MembersOnly
from .validation import SLUG_RE
from .wire import sale_wire

__all__ = ["Sales"]


class Sales:
    on_opened: Callable[[str, str], None] | None = None  # (room, sale) at the open instant: reminders

    def __init__(self, store: Store, inventory: Inventory, bus: RoomBus, catalogue: Catalogue,
                 default_hold_ttl_s: int, members_only: MembersOnly | None = None) -> None:
        self.store = store
        self.pool_sql = PoolStore(store)
        self.members_only = members_only or MembersOnly(store)
        self.inventory = inventory
        self.bus = bus
        self.catalogue = catalogue
        self.default_hold_ttl_s = default_hold_ttl_s

    async def launch(self, room_id: str, req: CreateSale, announce: bool = True) -> dict[str, Any]:
        """``announce`` False: a lucky draw's prize sale from a pool (commerce/draws.py), never told to
        the room (no ``sale_scheduled``; left out of the room's sales, its live end and restock news)."""
        await self.catalogue.room(room_id)
        product = await self.catalogue.product(room_id, req.product_id)
        now = await self.inventory.now_ms()
        starts = req.starts_at if req.starts_at is not None else now + req.starts_in_s * 1000
        ends = req.ends_at if req.ends_at is not None else starts + req.duration_s * 1000
        if req.buckets > 1 and (req.variants is not None or req.pool is not None or req.deposit is not None
                                or not announce):
            raise InvalidInput("buckets: only a plain sale of its own units can be split (no pool, variants or "
                               "deposit)")
        if req.variants is not None:
            return await self._launch_variants(room_id, req, product, now, starts, ends)
        if req.pool is not None:
            return await self._launch_from_pool(room_id, req, product, now, starts, ends, announce)
        if req.deposit is not None:
            raise InvalidInput("a pre-sale takes its units from a stock pool: set pool")
        if req.sale_id is not None and POOL_SEP in req.sale_id:
            raise InvalidInput(f"sale_id must not contain {POOL_SEP!r} (it names a stock pool's sales)")
        if req.sale_id is not None and B.looks_like_bucket_id(req.sale_id):
            raise InvalidInput("sale_id must not end in _b<n>x<n> (it names a hot sale's buckets)")
        if req.buckets > 1 and req.units < req.buckets:
            raise InvalidInput(f"buckets: {req.buckets} buckets need at least {req.buckets} units")
        if req.buckets > 1 and req.sale_id is not None and len(req.sale_id) > B.MAX_PARENT_LEN:
            raise InvalidInput(f"sale_id of a sale with buckets: at most {B.MAX_PARENT_LEN} characters")
        sale_id = req.sale_id or "s-" + secrets.token_hex(5)
        ttl_ms = (req.hold_ttl_s or self.default_hold_ttl_s) * 1000
        price = product.unit_price if req.unit_price is None else req.unit_price
        spec = SaleSpec(sale_id=sale_id, room_id=room_id, sku=product.sku, unit_price=price,
                        currency=product.currency, allocated=req.units, per_user_limit=req.per_user_limit,
                        starts_at_ms=starts, ends_at_ms=ends, hold_ttl_ms=ttl_ms)
        rec = SaleRecord(sale_id=sale_id, room_id=room_id, product_id=product.product_id, sku=product.sku,
                         title=product.title, unit_price=price, currency=spec.currency, allocated=req.units,
                         per_user_limit=req.per_user_limit, starts_at_ms=starts, ends_at_ms=ends,
                         hold_ttl_ms=ttl_ms, created_at_ms=now, members_only=req.members_only)
        try:
            new = await self.store.insert_sale(rec)  # the DB is the system of record: write it first
        except SaleConflict:
            raise Conflict(f"sale {sale_id} exists with different terms") from None
        if not new and await archive.get_sale(self.store, sale_id) is not None:
            return (await self.get(sale_id))[1]  # retired: never armed again (its stock would come back)
        self.members_only.note(rec)
        armed = await self.inventory.arm(spec, req.buckets)
        if not armed.ok:
            error = Conflict if armed.code is ArmCode.CONFLICT else InvalidInput
            raise error(f"sale {sale_id} could not be armed: {armed.code.value}")
        return await self._announce(rec, armed.available, now)

    async def _launch_from_pool(self, room_id: str, req: CreateSale, product: ProductRecord, now: int, starts: int,
                                ends: int, announce: bool = True) -> dict[str, Any]:
        """A sale whose units move out of a stock pool, atomically with its arming (``pool_allocate.lua``):
        Redis first, so a pool short of units refuses the launch with nothing written anywhere; then
        the SQL row (a crash in between leaves a sale SQL does not know, whose units go back to the pool
        once it ends; a retry of the launch with the same ``sale_id`` writes the row)."""
        assert req.pool is not None
        pool = await self.pool_sql.get(req.pool)
        if pool is None:
            raise NotFound(f"no stock pool {req.pool}")
        if product.sku != pool.sku or product.currency != pool.currency:
            raise InvalidInput(f"product {product.product_id} is {product.sku} in {product.currency}; "
                               f"pool {pool.pool_id} holds {pool.sku} in {pool.currency}")
        if req.sale_id is not None and req.sale_id.startswith(GROUP_PREFIX):
            raise InvalidInput(f"sale_id must not start with {GROUP_PREFIX!r} (it names a sale of variants)")
        if announce and req.sale_id is not None and f"{POOL_SEP}{req.sale_id}".startswith(PRIZE_SALE_MARK):
            raise InvalidInput("sale_id must not start with 'd-' (it names a lucky draw's prize)")
        sale_id = f"{pool.pool_id}{POOL_SEP}{req.sale_id or 's' + secrets.token_hex(5)}"
        if len(sale_id) > 64:
            raise InvalidInput(f"pool id and sale_id together must be at most 62 characters: {sale_id!r}")
        ttl_ms = (req.hold_ttl_s or self.default_hold_ttl_s) * 1000
        price = product.unit_price if req.unit_price is None else req.unit_price
        spec = SaleSpec(sale_id=sale_id, room_id=room_id, sku=product.sku, unit_price=price,
                        currency=product.currency, allocated=req.units, per_user_limit=req.per_user_limit,
                        starts_at_ms=starts, ends_at_ms=ends, hold_ttl_ms=ttl_ms)
        presale = self._presale_terms(req, price, now, starts)
        rec = SaleRecord(sale_id=sale_id, room_id=room_id, product_id=product.product_id, sku=product.sku,
                         title=product.title, unit_price=price, currency=spec.currency, allocated=req.units,
                         per_user_limit=req.per_user_limit, starts_at_ms=starts, ends_at_ms=ends,
                         hold_ttl_ms=ttl_ms, created_at_ms=now, members_only=req.members_only, pool_id=pool.pool_id,
                         deposit=presale.deposit if presale else 0,
                         balance_from_ms=presale.balance_from_ms if presale else 0,
                         balance_by_ms=presale.balance_by_ms if presale else 0,
                         deposit_rule=presale.rule if presale else "")
        known = await self.store.get_sale(sale_id)
        if known is not None:
            if not known.same_content(rec):
                raise Conflict(f"sale {sale_id} exists with different terms")
            if await archive.get_sale(self.store, sale_id) is not None:
                return (await self.get(sale_id))[1]  # retired: never armed again
        code, available, pool_available = await self.inventory.pools.allocate(pool.pool_id, spec, presale)
        if code == "POOL_SHORT":
            raise Refused(ErrorCode.POOL_SHORT, f"pool {pool.pool_id} has {pool_available} units available; "
                                                f"the sale asks for {req.units}")
        if code == "NOT_FOUND":
            raise NotFound(f"stock pool {pool.pool_id} is not open in Redis (run livesale reconcile)")
        if code not in ("ARMED", "EXISTS"):
            error = Conflict if code == "CONFLICT" else InvalidInput
            raise error(f"sale {sale_id} could not be armed from pool {pool.pool_id}: {code}")
        if known is None:
            try:
                await self.store.insert_sale(rec)
            except SaleConflict:
                raise Conflict(f"sale {sale_id} exists with different terms") from None
        else:
            rec = known
        self.members_only.note(rec)
        if not announce:
            return sale_wire(rec, available, sale_state_at(sale_wire(rec), now, available))
        return await self._announce(rec, available, now)

    async def _launch_variants(self, room_id: str, req: CreateSale, product: ProductRecord, now: int, starts: int,
                               ends: int) -> dict[str, Any]:
        """One sale of several variants of a product, each variant's units from its own pool, all or
        nothing (``pool_allocate_group.lua``); the variants share one per-user limit. Each variant is a
        sale of its own (``<pool>--<g-suffix>``, ``group`` and ``variant`` in its Sale object): a buy
        names the variant's sale."""
        assert req.variants is not None
        if req.pool is not None or req.deposit is not None:
            raise InvalidInput("a sale of variants takes each variant's pool from `variants` (no pool, no deposit)")
        known_variants = {v["sku"]: v for v in orjson.loads(product.variants or "[]")}
        if not known_variants:
            raise InvalidInput(f"product {product.product_id} has no variants")
        if req.sale_id is not None and (POOL_SEP in req.sale_id or len(req.sale_id) > 20):
            raise InvalidInput("sale_id of a sale of variants: at most 20 characters, without '--'")
        suffix = GROUP_PREFIX + (req.sale_id or secrets.token_hex(5))
        ttl_ms = (req.hold_ttl_s or self.default_hold_ttl_s) * 1000
        price = product.unit_price if req.unit_price is None else req.unit_price
        plan: list[tuple[str, SaleSpec, SaleRecord]] = []
        families = set()
        for pool_id, units in req.variants:
            pool = await self.pool_sql.get(pool_id)
            if pool is None:
                raise NotFound(f"no stock pool {pool_id}")
            variant = known_variants.get(pool.sku)
            if variant is None or pool.currency != product.currency:
                raise InvalidInput(f"pool {pool_id} holds {pool.sku} in {pool.currency}: not a variant of product "
                                   f"{product.product_id} in {product.currency}")
            families.add(slot_family(pool_id))
            sale_id = f"{pool_id}{POOL_SEP}{suffix}"
            if len(sale_id) > 64:
                raise InvalidInput(f"sale id {sale_id!r} is longer than 64 characters: use shorter pool ids")
            spec = SaleSpec(sale_id=sale_id, room_id=room_id, sku=pool.sku, unit_price=price, currency=pool.currency,
                            allocated=units or req.units, per_user_limit=req.per_user_limit, starts_at_ms=starts,
                            ends_at_ms=ends, hold_ttl_ms=ttl_ms)
            rec = SaleRecord(sale_id=sale_id, room_id=room_id, product_id=product.product_id, sku=pool.sku,
                             title=f"{product.title} · {variant['label']}", unit_price=price, currency=pool.currency,
                             allocated=spec.allocated, per_user_limit=req.per_user_limit, starts_at_ms=starts,
                             ends_at_ms=ends, hold_ttl_ms=ttl_ms, created_at_ms=now, members_only=req.members_only,
                             pool_id=pool_id, variant=str(variant["label"])[:64])
            plan.append((pool_id, spec, rec))
        if len(families) != 1:
            raise InvalidInput("the variants' pools must be one product's: pool ids <product>__<variant>")
        stored = [await self.store.get_sale(spec.sale_id) for _, spec, _ in plan]
        if any(r is not None for r in stored):
            if all(r is not None and r.same_content(rec) for r, (_, _, rec) in zip(stored, plan, strict=True)):
                return {"group": variant_group(plan[0][1].sale_id), "sales": [(await self.get(spec.sale_id))[1]
                                                                             for _, spec, _ in plan]}
            raise Conflict(f"a sale of variants {suffix} exists with different terms")
        code, which, pool_available = await self.inventory.pools.allocate_group([(p, spec) for p, spec, _ in plan])
        if code == "POOL_SHORT":
            pool_id, spec, _ = plan[which - 1]
            raise Refused(ErrorCode.POOL_SHORT, f"pool {pool_id} has {pool_available} units available; the sale "
                                                f"asks for {spec.allocated}")
        if code == "NOT_FOUND":
            raise NotFound(f"stock pool {plan[which - 1][0]} is not open in Redis")
        if code not in ("ARMED", "EXISTS"):
            error = Conflict if code == "CONFLICT" else InvalidInput
            raise error(f"the sale of variants could not be armed: {code}")
        wires = []
        for _, spec, rec in plan:
            try:
                await self.store.insert_sale(rec)
            except SaleConflict:
                raise Conflict(f"sale {spec.sale_id} exists with different terms") from None
            self.members_only.note(rec)
            wires.append(await self._announce(rec, spec.allocated, now))
        return {"group": variant_group(plan[0][1].sale_id), "sales": wires}

    async def _announce(self, rec: SaleRecord, available: int, now: int) -> dict[str, Any]:
        """A launched sale's wire form, published to its room once (``sale_scheduled``)."""
        wire = sale_wire(rec, available, sale_state_at(sale_wire(rec), now, available))
        await self.bus.publish(rec.room_id, ev.sale_scheduled(wire), {f"sale:{rec.sale_id}": wire},
                               once=f"scheduled:{rec.sale_id}")
        return wire

    @staticmethod
    def _presale_terms(req: CreateSale, price: int, now: int, starts: int) -> PresaleTerms | None:
        """A pre-sale's deposit terms from the launch request (None: an ordinary sale)."""
        if req.deposit is None:
            return None
        if req.deposit > price:
            raise InvalidInput(f"deposit {req.deposit} is more than the price {price}")
        opens = req.balance_at if req.balance_at is not None else now + req.balance_in_s * 1000
        closes = opens + req.balance_window_s * 1000
        if closes <= starts:
            raise InvalidInput("the balance window must close after the pre-sale starts")
        return PresaleTerms(deposit=req.deposit, balance_from_ms=opens, balance_by_ms=closes, rule=req.deposit_rule)

    async def get(self, sale_id: str) -> tuple[SaleRecord, dict[str, Any]]:
        """The sale's record and its wire form with live counters (state from Redis TIME)."""
        rec = await self.store.get_sale(check_slug("sale", sale_id))
        if rec is None:
            raise NotFound(f"no sale {sale_id}")
        self.members_only.note(rec)
        counters = await self.inventory.counters(sale_id)
        now = await self.inventory.now_ms()
        if counters is None:  # retired (keys expired: the archive has its final counters) or never armed
            final = await archive.get_sale(self.store, sale_id)
            if final is None:
                return rec, sale_wire(rec, None, "closed")
            wire = sale_wire(rec, final.unsold, "closed")
            wire.update(ends_at=final.ends_at_ms, held=0, sold=final.sold)
            return rec, wire
        wire = sale_wire(rec, counters.available, "scheduled")
        wire.update(starts_at=counters.starts_at_ms, ends_at=counters.ends_at_ms, held=counters.held,
                    sold=counters.sold, allocated=counters.allocated,
                    state=sale_state_at({**wire, "state": ""}, now, counters.available))
        return rec, wire

    async def room_of(self, sale_id: str) -> str | None:
        """The room a sale belongs to (SQL only; None for an unknown or malformed id)."""
        if not isinstance(sale_id, str) or not SLUG_RE.match(sale_id):
            return None
        rec = await self.store.get_sale(sale_id)
        if rec is None:
            return None
        self.members_only.note(rec)
        return rec.room_id

    async def of_room(self, room_id: str) -> list[dict[str, Any]]:
        return [(await self.get(s.sale_id))[1] for s in await self.store.list_sales(room_id)
                if PRIZE_SALE_MARK not in s.sale_id]

    async def fire_open(self, room_id: str, sale: dict[str, Any]) -> None:
        """At the open instant (the first gateway to get there publishes; the rest are deduplicated)."""
        counters = await self.inventory.counters(sale["sale_id"])
        units = counters.available if counters else sale.get("units_left", 0)
        wire = {**sale, "state": "open" if units else "sold_out", "units_left": units}
        await self.bus.publish(room_id, ev.sale_open(wire), {f"sale:{sale['sale_id']}": wire},
                               once=f"open:{sale['sale_id']}")
        if self.on_opened is not None:
            self.on_opened(room_id, sale["sale_id"])  # its reminders fire (commerce/reminders.py)

    async def fire_close(self, room_id: str, sale: dict[str, Any], reason: ev.CloseReason = "ended") -> None:
        wire = {**sale, "state": "closed"}
        await self.bus.publish(room_id, ev.sale_closed(sale["sale_id"], reason, sale["ends_at"]),
                               {f"sale:{sale['sale_id']}": wire}, once=f"close:{sale['sale_id']}")

    async def end(self, room_id: str, sale_id: str) -> None:
        """The host stops a sale now."""
        rec, wire = await self.get(sale_id)
        if rec.room_id != room_id:
            raise NotFound(f"no sale {sale_id} in room {room_id}")
        ends = await self.inventory.close(sale_id)
        if ends is None:
            raise NotFound(f"sale {sale_id} is not armed")
        if rec.pool_id:  # its unsold units go back to the pool now (the reaper returns later expiries)
            await self.inventory.pools.give_back(sale_id)
            _, wire = await self.get(sale_id)  # units_left / allocated after the return
        await self.fire_close(room_id, {**wire, "ends_at": ends}, reason="stopped")

    async def close_room(self, room_id: str) -> None:
        """Ending the live ends its sales: every open or scheduled sale of the room closes now (in
        Redis, so no buy or HTTP reserve gets through after this) with ``sale_closed`` reason
        ``live_ended``. Sales that had already ended keep their own close."""
        now = await self.inventory.now_ms()
        for rec in await self.store.list_sales(room_id):
            if PRIZE_SALE_MARK in rec.sale_id:  # a draw's prize: its winners pay after the live; the draw ends it
                continue
            counters = await self.inventory.counters(rec.sale_id)
            if counters is None or counters.ends_at_ms <= now:
                continue
            ends = await self.inventory.close(rec.sale_id)
            if ends is None:
                continue
            if rec.pool_id:
                await self.inventory.pools.give_back(rec.sale_id)
            _, wire = await self.get(rec.sale_id)
            await self.fire_close(room_id, {**wire, "ends_at": ends}, reason="live_ended")

    async def restocked(self, room_id: str, sale_id: str, available: int) -> None:
        """Expired holds brought a sold-out sale back: tell the room it is open again."""
        if PRIZE_SALE_MARK in sale_id:  # a draw's prize sale is not the room's to buy
            return
        try:
            _, wire = await self.get(sale_id)
        except NotFound:
            return
        if wire["state"] == "open":
            await self.bus.publish(room_id, ev.sale_open(wire, restocked=True), {f"sale:{sale_id}": wire})

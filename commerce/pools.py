"""Stock pools: a merchant's goods shared by many rooms' sales and by sales channels.

A merchant (token role ``merchant``) opens a pool per SKU and restocks or adjusts it (each change a
ledger entry with a reason). A host launches a sale *from* a pool (``CreateSale.pool``: the units
move out atomically, or the launch is refused with ``POOL_SHORT``; ``commerce/sales.py``), tops it up
mid-show (``topup``), and ending it gives the unsold units back (and the reaper gives back what
expiring holds free later). A channel (``web-shop``, ``store:17``) reserves straight from the pool
over HTTP (``channel_reserve``); its holds are paid, released, expire and settle exactly as a room's.

Every move is one atomic script in the pool's hash slot (inventory/pools.py), remembered under a
transfer id built from the client's ``request_id``, so a retried request moves nothing twice.
``audit`` checks the pool's balance in Redis and against SQL.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from inventory import archive
from inventory.domain import ReserveCode, ReserveRequest, ReserveResult
from inventory.keys import pool_bucket_id
from inventory.order_refunds import OrderRefundStore
from inventory.pools import PoolCounters, PoolRecord, PoolStore, transfer_id
from inventory.scripts import Inventory
from inventory.store import SaleRecord, Store

from .signals import SignalKind
from .errors import Conflict, ErrorCode, Forbidden, InvalidInput, NotFound, Refused
from .identity import Identity
from .my_holds import MyHolds
from .requests import ChannelReserve, CreatePool, StockChange, TopUp
from .sales import Sales

__all__ = ["Pools", "PoolAudit", "pool_wire"]


def pool_wire(rec: PoolRecord, c: PoolCounters | None, sold_at_sales: int = 0) -> dict[str, Any]:
    """The Pool object (docs/PROTOCOL.md Stock pools). ``on_hand``: units not sold anywhere (received +
    put back - sold through channels - sold by its sales); ``sold``: sold anywhere."""
    out: dict[str, Any] = {
        "pool_id": rec.pool_id, "sku": rec.sku, "merchant_id": rec.merchant_id, "title": rec.title,
        "unit_price": rec.unit_price, "currency": rec.currency, "per_user_limit": rec.per_user_limit,
        "hold_ttl_ms": rec.hold_ttl_ms, "created_at": rec.created_at_ms, "sku_user_limit": rec.sku_user_limit}
    if c is not None:
        out.update(available=c.available, channel_held=c.held, channel_sold=c.sold, received=c.received,
                   restocked=c.restocked, at_sales=c.out, sold=c.sold + sold_at_sales,
                   on_hand=c.received + c.restocked - c.sold - sold_at_sales)
    return out


@dataclass(frozen=True, slots=True)
class PoolAudit:
    """One pool's balance: ``problems`` empty when every invariant holds (docs/PROTOCOL.md Stock pools)."""

    pool_id: str
    received: int
    restocked: int
    available: int
    channel_held: int
    channel_sold: int
    at_sales: int
    sales: tuple[dict[str, Any], ...]
    sql: dict[str, int]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def wire(self) -> dict[str, Any]:
        return {"pool_id": self.pool_id, "ok": self.ok, "received": self.received, "restocked": self.restocked,
                "available": self.available, "channel_held": self.channel_held, "channel_sold": self.channel_sold,
                "at_sales": self.at_sales, "sales": list(self.sales), "sql": self.sql,
                "problems": list(self.problems)}


class Pools:
    def __init__(self, store: Store, inventory: Inventory, sales: Sales, my_holds: MyHolds) -> None:
        self.store = store
        self.inventory = inventory
        self.sales = sales
        self.sql = PoolStore(store)
        self._known: set[str] = set()  # pool ids seen in SQL (channel holds skip the lookup then)
        self.my_holds = my_holds  # the buyers' index of holds, shared with checkout
        self.channel_guard: Any = None  # async (channel, pool): a mini-shop's channel must sell the pool
        self.signals: Any = None  # interest signals (commerce/signals.py; Commerce sets it)

    # -- the merchant's pools ----------------------------------------------------------------------------

    async def create(self, who: Identity, req: CreatePool) -> dict[str, Any]:
        """Open a pool for a SKU with its opening stock (idempotent: the same pool again answers it)."""
        if not who.is_merchant:
            raise Forbidden("opening a stock pool needs a merchant token")
        now = await self.inventory.now_ms()
        rec = PoolRecord(pool_id=req.pool_id or "pl-" + secrets.token_hex(4), sku=req.sku, merchant_id=who.user,
                         title=req.title, unit_price=req.unit_price, currency=req.currency,
                         per_user_limit=req.per_user_limit, hold_ttl_ms=req.hold_ttl_s * 1000, created_at_ms=now,
                         sku_user_limit=req.sku_user_limit)
        stored = await self.sql.add(rec)
        if stored.pool_id != rec.pool_id:
            raise Conflict(f"SKU {req.sku} already has its pool {stored.pool_id}")
        if (stored.merchant_id, stored.sku, stored.unit_price, stored.currency) != (
                rec.merchant_id, rec.sku, rec.unit_price, rec.currency):
            raise Conflict(f"pool {rec.pool_id} exists with other terms or another merchant")
        code, _available = await self.inventory.pools.open(stored, req.units)
        if code == "CONFLICT":
            raise Conflict(f"pool {rec.pool_id} exists in Redis with other terms")
        if code == "INVALID":
            raise InvalidInput(f"pool {rec.pool_id} could not be opened")
        return await self._wire(stored)

    async def stock(self, who: Identity, pool_id: str, req: StockChange) -> dict[str, Any]:
        """Restock (goods received) or adjust (a count correction) the pool, once per request id."""
        pool = await self._owned(who, pool_id)
        tid = transfer_id(req.kind, pool_id, req.request_id)
        code, available = await self.inventory.pools.stock(pool_id, tid, req.kind, req.units, req.reason)
        if code == "SHORT":
            raise Refused(ErrorCode.POOL_SHORT, f"pool {pool_id} has {available} units available; cannot take "
                                                f"{-req.units} out")
        if code == "NOT_FOUND":
            raise NotFound(f"stock pool {pool_id} is not open in Redis")
        if code == "INVALID":
            raise InvalidInput("invalid stock change")
        return {"pool": await self._wire(pool), "replayed": code == "REPLAYED"}

    async def view(self, who: Identity, pool_id: str) -> dict[str, Any]:
        """The pool with every sale drawn from it (room, allocated, left, held, sold) and its channels."""
        pool = await self._visible(who, pool_id)
        wire = await self._wire(pool)
        wire["sales"] = [await self._sale_row(s) for s in await self.sql.sales_of(pool_id)]
        wire["channels"] = await self.sql.channel_sales(pool_bucket_id(pool_id))
        return wire

    async def listing(self, who: Identity) -> list[dict[str, Any]]:
        if who.is_merchant:
            pools = await self.sql.all(merchant_id=who.user)
        elif who.role == "host":
            pools = await self.sql.all()
        else:
            raise Forbidden("pools are for merchants and hosts")
        return [await self._wire(p) for p in pools]

    async def ledger(self, who: Identity, pool_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        await self._visible(who, pool_id)
        return [{"entry_id": e.entry_id, "kind": e.kind, "units": e.units, "sale_id": e.sale_id, "ref": e.ref,
                 "reason": e.reason, "at": e.at_ms} for e in await self.sql.ledger(pool_id, limit)]

    async def sku_history(self, who: Identity, sku: str, bucket_s: int = 3600) -> dict[str, Any]:
        """A SKU's lifecycle state now and its units sold per show, per channel and over time."""
        if not (who.is_merchant or who.role == "host"):
            raise Forbidden("a SKU's history is for merchants and hosts")
        pool = await self.sql.by_sku(sku)
        if pool is not None and who.is_merchant and pool.merchant_id != who.user:
            raise Forbidden(f"SKU {sku} belongs to another merchant")
        history = await self.sql.sku_history(sku, bucket_s * 1000)
        if pool is None and not history["shows"]:
            raise NotFound(f"no pool and no orders for SKU {sku}")
        out: dict[str, Any] = {"sku": sku, "pool": pool.pool_id if pool else None, "bucket_s": bucket_s, **history}
        out.update(await self._lifecycle(pool))
        return out

    async def _lifecycle(self, pool: PoolRecord | None) -> dict[str, Any]:
        """``state``: ``live`` (a sale of it is open with units, or its channels can buy), ``scheduled``
        (a sale is announced and none is open), ``sold_out`` (nothing left to sell anywhere), ``ended``
        (no sale open or announced); ``restocked_at``: the last restock (ledger)."""
        if pool is None:
            return {"state": "ended", "restocked_at": None, "sales": []}
        now = await self.inventory.now_ms()
        c = await self.inventory.pools.counters(pool.pool_id)
        sales = [await self._sale_row(s) for s in await self.sql.sales_of(pool.pool_id)]
        open_sales = [r for r in sales if not r["ended"] and r.get("starts_at", 0) <= now]
        scheduled = [r for r in sales if not r["ended"] and r.get("starts_at", 0) > now]
        if any(r["available"] > 0 for r in open_sales):
            state = "live"
        elif open_sales or (c is not None and c.available == 0 and not scheduled):
            state = "sold_out"
        elif scheduled:
            state = "scheduled"
        else:
            state = "ended"
        restocks = [e.at_ms for e in await self.sql.ledger(pool.pool_id, 10_000) if e.kind == "restock"]
        return {"state": state, "restocked_at": max(restocks) if restocks else None, "pool_available":
                c.available if c else None, "sales": sales}

    # -- hosts -------------------------------------------------------------------------------------------

    async def topup(self, room_id: str, sale_id: str, req: TopUp) -> dict[str, Any]:
        """Move ``units`` more from the sale's pool into the live sale (once per request id)."""
        rec = await self.store.get_sale(sale_id)
        if rec is None or rec.room_id != room_id:
            raise NotFound(f"no sale {sale_id} in room {room_id}")
        if not rec.pool_id:
            raise InvalidInput(f"sale {sale_id} has units of its own, not from a pool")
        r = await self.inventory.pools.topup(rec.pool_id, sale_id, transfer_id("topup", sale_id, req.request_id),
                                             req.units)
        if r.code == "POOL_SHORT":
            raise Refused(ErrorCode.POOL_SHORT, f"pool {rec.pool_id} has {r.pool_available} units available; "
                                                f"the top-up asks for {req.units}")
        if r.code == "ENDED":
            raise Refused(ErrorCode.ENDED, f"sale {sale_id} has ended")
        if r.code in ("NOT_FOUND", "INVALID"):
            raise NotFound(f"sale {sale_id} is not armed")
        if r.code == "TOPPED_UP" and r.sale_available == req.units:  # it was sold out: open again
            await self.sales.restocked(room_id, sale_id, r.sale_available)
        return {"sale_id": sale_id, "pool": rec.pool_id, "units_left": r.sale_available,
                "pool_available": r.pool_available, "replayed": r.code == "REPLAYED"}

    # -- channels ------------------------------------------------------------------------------------------

    async def channel_reserve(self, viewer: Identity, channel: str, req: ChannelReserve) -> ReserveResult:
        """A channel's buyer reserves straight from the pool (the same hold / pay / settle path)."""
        if req.pool not in self._known and await self.sql.get(req.pool) is None:  # pools are never deleted:
            return ReserveResult(ReserveCode.NOT_FOUND, None, None, 0, 0)         # one SQL read per pool
        self._known.add(req.pool)
        if self.channel_guard is not None:
            await self.channel_guard(channel, req.pool)
        bucket = pool_bucket_id(req.pool)
        [r] = await self.inventory.reserve_many(bucket, [ReserveRequest(viewer.user, req.qty, req.request_id)],
                                                channel=channel)
        if r.ok and not r.replayed and r.hold_id:
            self.my_holds.note(viewer.user, r.hold_id)
        if not r.replayed and self.signals is not None:
            self.signals.record(SignalKind.TAP, viewer.user, sale=bucket, detail=channel[:64])
            if r.ok and r.hold_id:
                self.signals.record(SignalKind.HELD, viewer.user, sale=bucket, ref=r.hold_id, value=r.at_ms or 0,
                                    detail=channel[:64])
        return r

    # -- audit ---------------------------------------------------------------------------------------------

    async def audit(self, pool_id: str) -> PoolAudit:
        """The pool's invariants, in Redis (received + restocked == available + channel holds + channel
        sold + units at sales; units at sales == the sum of its sales' allocations; every sale's own
        balance) and against SQL (the ledger's sums == Redis's counters; refunds' units put back ==
        Redis's; settled orders <= units sold). The Redis numbers are one atomic snapshot of the pool and
        its sales (``pool_audit.lua``) and SQL is compared as of that instant, so an audit during a live
        show reports only real differences."""
        pool = await self.sql.get(pool_id)
        if pool is None:
            raise NotFound(f"no stock pool {pool_id}")
        sales = await self.sql.sales_of(pool_id)
        snap = await self.inventory.pools.snapshot(pool_id, [s.sale_id for s in sales])
        c = snap.counters
        if c is None:
            raise NotFound(f"stock pool {pool_id} is not open in Redis")
        problems: list[str] = []
        if not c.ok:
            problems.append(f"received {c.received} + restocked {c.restocked} != available {c.available} + held "
                            f"{c.held} + sold {c.sold} + at sales {c.out}")
        bucket = await self.inventory.check_invariant(pool_bucket_id(pool_id))  # holds and buyers of its own
        problems += [f"pool bucket: {p}" for p in bucket.problems]
        rows, allocated_sum, sold_sum = [], 0, c.sold
        for s in sales:
            counters = snap.sales[s.sale_id]
            if counters is None:
                final = await archive.get_sale(self.store, s.sale_id)
                if final is None:
                    problems.append(f"sale {s.sale_id}: in SQL, not in Redis and not archived")
                    continue
                allocated_sum += final.sold
                sold_sum += final.sold
                rows.append({"sale_id": s.sale_id, "room_id": s.room_id, "allocated": final.sold, "available": 0,
                             "held": 0, "sold": final.sold, "retired": True})
                continue
            allocated, available, held, sold = counters
            report = await self.inventory.check_invariant(s.sale_id)  # its balance, holds, buyers (atomic)
            problems += [f"sale {s.sale_id}: {p}" for p in report.problems if p != "sale not found"]
            allocated_sum += allocated
            sold_sum += sold
            rows.append({"sale_id": s.sale_id, "room_id": s.room_id, "allocated": allocated, "available": available,
                         "held": held, "sold": sold})
        if allocated_sum != c.out:
            problems.append(f"units at sales {c.out} != the sum of its sales' allocations {allocated_sum}")
        # SQL as of the snapshot: the ledger's moves before it, plus the journal it had that SQL lacks then
        # (one query: the journal's entries are counted from the snapshot, whether the reaper has copied them
        # to SQL by now or not; every other move from SQL)
        sums = await self.sql.ledger_sums(pool_id, before_ms=snap.now_ms, excluding=[e.entry_id for e in snap.journal])
        for e in snap.journal:
            sums[e.kind] = sums.get(e.kind, 0) + e.units
        received = sums.get("receive", 0) + sums.get("restock", 0) + sums.get("adjust", 0)
        out = -(sums.get("allocate", 0) + sums.get("topup", 0) + sums.get("return", 0))
        if received != c.received:
            problems.append(f"SQL ledger received {received} != Redis {c.received}")
        if sums.get("refund_restock", 0) != c.restocked:
            problems.append(f"SQL ledger refund_restock {sums.get('refund_restock', 0)} != Redis {c.restocked}")
        if out != c.out:
            problems.append(f"SQL ledger at sales {out} != Redis {c.out}")
        refunds = OrderRefundStore(self.store)
        put_back = await refunds.restocked_units(pool_id)  # SQL first, then Redis: never less than Redis's
        if put_back < c.restocked or (
                put_back != c.restocked and not await refunds.unfinished(2**62)
                and await refunds.restocked_units(pool_id, before_ms=snap.now_ms) != c.restocked):
            problems.append(f"refunded orders put {put_back} units back in SQL; the pool counts {c.restocked}")
        settled = await self.sql.settled_units(pool_id, pool_bucket_id(pool_id))
        if settled > sold_sum:
            problems.append(f"SQL has {settled} units in orders, more than the {sold_sum} sold")
        sql = {"received": received, "refund_restock": sums.get("refund_restock", 0), "at_sales": out,
               "settled_units": settled, "journal_pending": len(snap.journal)}
        return PoolAudit(pool_id, c.received, c.restocked, c.available, c.held, c.sold, c.out, tuple(rows), sql,
                         tuple(problems))

    # -- helpers -------------------------------------------------------------------------------------------

    async def _wire(self, pool: PoolRecord) -> dict[str, Any]:
        sold = 0
        for s in await self.sql.sales_of(pool.pool_id):
            c = await self.inventory.counters(s.sale_id)
            if c is not None:
                sold += c.sold
            else:
                final = await archive.get_sale(self.store, s.sale_id)
                sold += final.sold if final else 0
        return pool_wire(pool, await self.inventory.pools.counters(pool.pool_id), sold)

    async def _sale_row(self, s: SaleRecord) -> dict[str, Any]:
        c = await self.inventory.counters(s.sale_id)
        row: dict[str, Any] = {"sale_id": s.sale_id, "room_id": s.room_id, "title": s.title,
                               "unit_price": s.unit_price}
        if c is None:
            final = await archive.get_sale(self.store, s.sale_id)
            row.update(allocated=final.sold if final else 0, available=0, held=0, sold=final.sold if final else 0,
                       ended=True)
        else:
            row.update(allocated=c.allocated, available=c.available, held=c.held, sold=c.sold,
                       starts_at=c.starts_at_ms, ends_at=c.ends_at_ms,
                       ended=await self.inventory.now_ms() >= c.ends_at_ms)
        return row

    async def _get(self, pool_id: str) -> PoolRecord:
        pool = await self.sql.get(pool_id)
        if pool is None:
            raise NotFound(f"no stock pool {pool_id}")
        return pool

    async def _owned(self, who: Identity, pool_id: str) -> PoolRecord:
        if not who.is_merchant:
            raise Forbidden("changing a pool's stock needs the merchant's token")
        pool = await self._get(pool_id)
        if pool.merchant_id != who.user:
            raise Forbidden(f"pool {pool_id} belongs to another merchant")
        return pool

    async def _visible(self, who: Identity, pool_id: str) -> PoolRecord:
        pool = await self._get(pool_id)
        if who.role == "host" or (who.is_merchant and pool.merchant_id == who.user):
            return pool
        raise Forbidden(f"pool {pool_id} is visible to its merchant and to hosts")

"""Reconcile for a hot-SKU bucketed sale (``inventory/reconcile.py`` hands these over; buckets:
``inventory/buckets.py``): SQL has ONE sale row and its orders (``sale_id`` = the sale, the order id = the
hold id ``<bucket>.<token>``, which names the bucket it was sold from); Redis has K buckets.

- ``check``: every bucket's terms and sold units against SQL, every bucket's invariant, and the buckets'
  allocated units plus the units in transit between buckets against the SQL row's ``allocated``;
- ``repair``: each bucket rebuilt from SQL by ``rebuild.lua`` (one bucket per call, its own keys). A
  bucket Redis still has keeps its allocation; the units no surviving bucket accounts for (allocated or on
  their way) go to the lost buckets: each gets at least what SQL sold from it, the rest to the lowest.
  Moves into a lost bucket are dropped (its rebuilt allocation already counts them), so no unit is
  created twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from . import buckets as B
from . import keys as K
from .domain import InvalidInput, sale_of_hold

if TYPE_CHECKING:
    from .reconcile import RebuildResult, Reconciler, SaleDrift, Sold
    from .store import SaleRecord

__all__ = ["check", "repair"]

_STABLE_TRIES = 10


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _bucket_of(order_id: str, ids: Sequence[str]) -> str:
    try:
        b = sale_of_hold(order_id)
    except InvalidInput:
        return ""
    return b if b in ids else ""


async def check(rec: Reconciler, sale: SaleRecord, ids: tuple[str, ...]) -> SaleDrift:
    from .reconcile import SaleDrift

    problems: list[str] = []
    sold = await rec.sold_in_sql(sale)
    by_bucket: dict[str, list[Sold]] = {b: [] for b in ids}
    for s in sold:
        b = _bucket_of(s.order_id, ids)
        if not b:
            problems.append(f"order {s.order_id} is not of any bucket of the sale")
            continue
        by_bucket[b].append(s)
    hashes = {b: {_s(a): _s(v) for a, v in (await rec.redis.hgetall(K.sale_keys(b).sale)).items()} for b in ids}
    missing = [b for b in ids if not hashes[b]]
    if missing:
        return SaleDrift(sale.sale_id, sale.room_id, tuple(f"bucket {b}: sale hash missing in Redis (SQL: live)"
                                                           for b in missing), missing=True)
    if hashes[ids[0]].get("buckets") != B.encode_ids(ids):
        problems.append("bucket 0 does not list the sale's buckets")
    terms = {"room": sale.room_id, "sku": sale.sku, "price": str(sale.unit_price), "currency": sale.currency,
             "limit": str(sale.per_user_limit), "starts_at": str(sale.starts_at_ms), "hold_ttl": str(sale.hold_ttl_ms)}
    for b in ids:
        h = hashes[b]
        for name, want in terms.items():
            if h.get(name) != want:
                problems.append(f"bucket {b}: {name} {h.get(name)!r} in Redis, {want!r} in SQL")
        if int(h.get("ends_at", "0")) > sale.ends_at_ms:
            problems.append(f"bucket {b}: ends_at {h.get('ends_at')} in Redis is after SQL's {sale.ends_at_ms}")
        holds = {_s(a): orjson.loads(v) for a, v in (await rec.redis.hgetall(K.sale_keys(b).holds)).items()}
        for s in by_bucket[b]:
            status = (holds.get(s.order_id) or {}).get("s")
            if status == "confirmed" or (not s.in_sql and status == "held"):
                continue
            what = "order" if s.in_sql else "paid payment"
            problems.append(f"{what} {s.order_id} ({s.qty} units) is not sold in Redis ({status or 'no hold'})")
        sql_units = sum(s.qty for s in by_bucket[b])
        if int(h.get("sold", "0")) < sql_units:
            problems.append(f"bucket {b}: sold {h.get('sold')} in Redis < {sql_units} sold according to SQL")
    inv = await rec.inventory.buckets.check_invariant(sale.sale_id, ids)
    problems.extend(inv.problems)
    transit = await rec.inventory.buckets.in_transit(ids)
    if inv.allocated + transit != sale.allocated:
        problems.append(f"buckets' allocated {inv.allocated} + in transit {transit} != {sale.allocated} in SQL")
    counters = {"allocated": inv.allocated, "available": inv.available, "held": inv.held, "sold": inv.sold,
                "sql_sold": sum(s.qty for s in sold), "buckets": len(ids)}
    return SaleDrift(sale.sale_id, sale.room_id, tuple(problems), counters=counters)


async def _accounted(rec: Reconciler, present: list[str]) -> tuple[dict[str, int], int, list[tuple[str, str]]]:
    """The surviving buckets' allocated units, the units in transit between two of them, and the moves into
    a lost bucket ([(donor, transfer id)]): read twice until two reads agree (moves may run meanwhile)."""
    last: Any = None
    for _ in range(_STABLE_TRIES):
        allocated: dict[str, int] = {}
        transit, into_lost = 0, []
        for b in present:
            allocated[b] = int(_s(await rec.redis.hget(K.sale_keys(b).sale, "allocated") or "0"))
        for b in present:
            for tid, raw in (await rec.redis.hgetall(K.bucket_transfer_keys(b)[0])).items():
                to, units, _at = _s(raw).split("|")
                if to not in present:
                    into_lost.append((b, _s(tid)))
                elif not await rec.redis.hexists(K.bucket_transfer_keys(to)[1], _s(tid)):
                    transit += int(units)
        now = (allocated, transit, sorted(into_lost))
        if now == last:
            return allocated, transit, sorted(into_lost)
        last = now
    raise RuntimeError("the buckets kept moving stock while they were read; try again")


async def _needs_rebuild(rec: Reconciler, bucket: str, sold: list[Sold]) -> bool:
    """A surviving bucket drifts when SQL sold something from it that it does not have as sold."""
    holds = {_s(a): orjson.loads(v) for a, v in (await rec.redis.hgetall(K.sale_keys(bucket).holds)).items()}
    for s in sold:
        status = (holds.get(s.order_id) or {}).get("s")
        if status != "confirmed" and not (not s.in_sql and status == "held"):
            return True
    have = int(_s(await rec.redis.hget(K.sale_keys(bucket).sale, "sold") or "0"))
    return have < sum(s.qty for s in sold)


async def _floor(rec: Reconciler, bucket: str, sold: list[Sold]) -> int:
    """The least a lost bucket must be rebuilt with: what SQL sold from it, plus the holds Redis still
    has of it (held, or confirmed and not in SQL yet: rebuild.lua keeps them)."""
    known = {s.order_id for s in sold}
    units = sum(s.qty for s in sold)
    for hid, raw in (await rec.redis.hgetall(K.sale_keys(bucket).holds)).items():
        h = orjson.loads(raw)
        if h.get("s") == "held" or (h.get("s") == "confirmed" and _s(hid) not in known):
            units += int(h.get("q", 0))
    return units


async def repair(rec: Reconciler, sale: SaleRecord, room_status: str, ids: tuple[str, ...]) -> RebuildResult:
    from .reconcile import RebuildResult

    ends = sale.ends_at_ms
    if room_status == "ended":  # end_live closed it: never reopen
        ends = max(sale.starts_at_ms + 1, min(ends, await rec.inventory.now_ms()))
    sold = await rec.sold_in_sql(sale)
    by_bucket: dict[str, list[Sold]] = {b: [] for b in ids}
    for s in sold:
        by_bucket[_bucket_of(s.order_id, ids) or ids[0]].append(s)
    present = [b for b in ids if await rec.redis.exists(K.sale_keys(b).sale)]
    lost = [b for b in ids if b not in present]
    allocated, transit, into_lost = await _accounted(rec, present)
    plan = dict(allocated)
    for b in lost:
        plan[b] = await _floor(rec, b, by_bucket[b])
    left = sale.allocated - sum(plan.values()) - transit
    if lost and left > 0:  # the units no surviving bucket accounts for
        plan[lost[0]] += left
    todo = [b for b in ids if b in lost or await _needs_rebuild(rec, b, by_bucket[b])]
    added = requeued = 0
    out: list[Any] = []
    for b in todo:  # rebuild.lua keeps what Redis still has of the bucket (its holds, its outbox)
        k = K.sale_keys(b)
        args: list[Any] = [b, sale.room_id, sale.sku, sale.unit_price, sale.currency, plan[b], sale.per_user_limit,
                           sale.starts_at_ms, ends, sale.hold_ttl_ms, K.SETTLE_GROUP]
        for s in by_bucket[b]:
            args += [s.order_id, s.user_id, s.qty, s.payment_ref, s.reserved_at_ms, s.confirmed_at_ms,
                     "1" if s.in_sql else "0"]
        await rec.redis.sadd(K.OUTBOX_REGISTRY, k.outbox)
        await rec.redis.sadd(K.SALES_REGISTRY, b)
        r = await rec.inventory.rebuild(b, args)
        out.append(r)
        added += int(r[5])
        requeued += int(r[6])
    for donor, tid in into_lost:  # the rebuilt receiver's allocation counts these units already
        await rec.redis.hdel(K.bucket_transfer_keys(donor)[0], tid)
    await rec.redis.hset(K.sale_keys(ids[0]).sale, mapping={"buckets": B.encode_ids(ids),
                                                            "buckets_total": sale.allocated})
    codes = {_s(r[0]) for r in out} or {"REBUILT"}
    counters = await rec.inventory.buckets.counters(sale.sale_id, ids)
    c = (counters.allocated, counters.available, counters.held, counters.sold) if counters else (0, 0, 0, 0)
    return RebuildResult(sale.sale_id, "REBUILT" if codes == {"REBUILT"} else "|".join(sorted(codes)), *c,
                         added, requeued)

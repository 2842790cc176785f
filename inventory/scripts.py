"""Typed wrappers around the Lua scripts in ``inventory/lua``.

Scripts are loaded at start (``Inventory.load``) and reloaded on NOSCRIPT by
redis-py's ``Script`` objects (EVALSHA first, SCRIPT LOAD + retry on a flushed
cache). Every state change of a sale happens inside one script; Python only
validates input early, builds keys and maps replies to result types.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from . import buckets as B
from . import keys as K
from .acked import run_acked
from .bucket_stock import BucketStock
from .pools import PoolRedis
from .domain import (
    ArmCode, ArmResult, ConfirmCode, ConfirmResult, ExpiredDeposit, Hold, InvalidInput, InvariantReport, ReleaseCode,
    ReleaseResult, ReserveCode, ReserveRequest, ReserveResult, RetireCode, RetireResult, SaleCounters, SaleSpec,
    check_id, new_hold_ids, sale_of_hold, SLUG_RE,
)

__all__ = ["Inventory", "script_source"]

_LUA = importlib.resources.files("inventory") / "lua"
_new = tuple.__new__  # a NamedTuple made without its Python-level __new__ (per click: 0.08 vs 0.22 µs)
SCRIPT_NAMES = ("arm", "reserve", "confirm", "release", "reap", "audit", "close", "retire", "rebuild",
                "pool_open", "pool_stock", "pool_allocate", "pool_topup", "pool_return", "pool_allocate_group",
                "pool_audit", "bucket_lend", "bucket_take")


def script_source(name: str) -> str:
    """A script's full text: the shared helpers, then the script (its KEYS/ARGV header included)."""
    return (_LUA / "_lib.lua").read_text() + "\n" + (_LUA / f"{name}.lua").read_text()


_RESERVE_CODES: dict[Any, ReserveCode] = {**{c.value: c for c in ReserveCode},
                                         **{c.value.encode(): c for c in ReserveCode}}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Inventory:
    """The sale stock pools. One instance per process, sharing the Redis pool."""

    def __init__(self, redis: Redis, max_qty: int = 100, *, wait_replicas: int = 0, wait_ms: int = 1000) -> None:
        self.redis = redis
        self.max_qty = max_qty
        # holds and payments are answered once this many replicas have them (inventory/acked.py)
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self._scripts = {name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES}
        self.pools = PoolRedis(redis, self._scripts)  # stock pools (inventory/pools.py)
        self.buckets = BucketStock(self)  # hot-SKU buckets: one sale over K hash slots (inventory/bucket_stock.py)

    async def load(self) -> None:
        """SCRIPT LOAD every script now, so the first burst never pays for it."""
        for script in self._scripts.values():
            await self.redis.script_load(script.script)

    async def now_ms(self) -> int:
        sec, usec = await self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    # -- sales ---------------------------------------------------------------------------------

    async def arm(self, spec: SaleSpec, buckets: int = 1) -> ArmResult:
        """``buckets`` > 1: a hot sale armed as that many buckets in different hash slots (bucket_stock.py)."""
        if buckets > 1:
            return await self.buckets.arm(spec, buckets)
        k = K.sale_keys(spec.sale_id)
        # registered before the sale exists: a crash between the two can leave a registry entry for a
        # sale that was never armed (harmless, the worker reads an empty stream), never an armed sale
        # whose outbox nobody reads. The registries are global keys, so they can't join the script.
        await self.redis.sadd(K.OUTBOX_REGISTRY, k.outbox)
        await self.redis.sadd(K.SALES_REGISTRY, spec.sale_id)
        code, available, held, sold = await self._scripts["arm"](keys=[k.sale], args=spec.to_argv())
        result = ArmResult(ArmCode(_s(code)), int(available), int(held), int(sold))
        if result.code is ArmCode.INVALID:  # nothing is armed under this key: bad input leaves no trace
            await self.redis.srem(K.OUTBOX_REGISTRY, k.outbox)
            await self.redis.srem(K.SALES_REGISTRY, spec.sale_id)
        if result.code is ArmCode.ARMED:
            self.buckets.note_unbucketed(spec.sale_id)  # armed whole just now: no bucket list to look up
        return result

    async def counters(self, sale_id: str) -> SaleCounters | None:
        check_id("sale_id", sale_id, SLUG_RE)
        if ids := await self.buckets.of(sale_id):  # a bucketed sale: its buckets summed
            return await self.buckets.counters(sale_id, ids)
        k = K.sale_keys(sale_id)
        if await self.redis.type(k.sale) not in ("hash", b"hash"):
            return None
        h = {_s(a): _s(b) for a, b in (await self.redis.hgetall(k.sale)).items()}
        return SaleCounters(
            sale_id=sale_id, room_id=h["room"], sku=h["sku"], unit_price=int(h["price"]),
            currency=h["currency"], allocated=int(h["allocated"]), available=int(h["available"]),
            held=int(h["held"]), sold=int(h["sold"]), per_user_limit=int(h["limit"]),
            starts_at_ms=int(h["starts_at"]), ends_at_ms=int(h["ends_at"]), hold_ttl_ms=int(h["hold_ttl"]),
        )

    async def available_many(self, sale_ids: Sequence[str]) -> dict[str, int | None]:
        """Units left of each sale, in one pipelined round trip; None for a sale that is not armed.
        The ids come from room state (validated when the sale was launched), so they are not checked
        again here: this runs on every tick while a sale is open."""
        ids = list(dict.fromkeys(sale_ids))
        if not ids:
            return {}
        if any([await self.buckets.of(sid) for sid in ids]):  # a bucketed sale among them: its buckets summed
            return await self.buckets.available_many(ids)
        async with self.redis.pipeline(transaction=False) as p:
            for sid in ids:
                p.hget(K.sale_keys(sid).sale, "available")
            values = await p.execute()
        return {sid: None if v is None else int(v) for sid, v in zip(ids, values, strict=True)}

    async def close(self, sale_id: str) -> int | None:
        """End a sale now (Redis TIME); returns its ends_at ms, or None when unknown."""
        check_id("sale_id", sale_id, SLUG_RE)
        if ids := await self.buckets.of(sale_id):
            return await self.buckets.close(ids)
        code, ends = await self._scripts["close"](keys=[K.sale_keys(sale_id).sale], args=[])
        return int(ends) if _s(code) == "CLOSED" else None

    # -- buying --------------------------------------------------------------------------------

    async def reserve(self, sale_id: str, user_id: str, qty: int, request_id: str) -> ReserveResult:
        return (await self.reserve_many(sale_id, [ReserveRequest(user_id, qty, request_id)]))[0]

    async def reserve_many(self, sale_id: str, requests: Sequence[ReserveRequest],
                           channel: str = "", *, route: bool = True) -> list[ReserveResult]:
        """Reserve for many requests in one script call (the burst path); results in order. ``channel``:
        the channel the holds are for (a pool's channel holds; '' = the sale's room). A bucketed sale (or
        one of its buckets, the reserve batches' key) routes each request to its user's home bucket;
        ``route`` False: this very bucket, as it is (bucket_stock.py's own calls)."""
        if not requests:
            return []
        if not isinstance(sale_id, str) or not SLUG_RE.match(sale_id):
            return [ReserveResult(ReserveCode.INVALID, None, None, 0, 0) for _ in requests]
        if route and (ids := await self.buckets.of(B.parent_of(sale_id))):
            return await self.buckets.reserve_many(ids, requests, channel)
        k = K.sale_keys(sale_id)
        args: list[Any] = [self.max_qty, channel]
        for hold_id, r in zip(new_hold_ids(sale_id, len(requests)), requests, strict=True):
            qty = str(r.qty) if isinstance(r.qty, int) and not isinstance(r.qty, bool) else "x"
            rid = r.request_id if isinstance(r.request_id, str) else ""  # "" fails Lua's is_id: INVALID
            user = r.user_id if isinstance(r.user_id, str) else ""
            args += (hold_id, rid, user, qty)
        # flat ARGV: a JSON-encoded batch was tried and measured slower end to end (cjson.decode costs
        # the server more than redis-py saves packing; in a burst both share a core)
        replies = await run_acked(self.redis, self._scripts["reserve"], k.for_reserve, args, self.wait_replicas,
                                  self.wait_ms)
        out = []
        for code, hold_id, pay_by, available, units, replayed in replies:
            c = _RESERVE_CODES[code]
            out.append(_new(ReserveResult, (c, _s(hold_id) if c is ReserveCode.RESERVED else None,
                                            int(pay_by) or None, int(available), int(units), replayed == 1)))
        return out

    async def confirm(self, hold_id: str, payment_ref: str, user_id: str = "", discount: int = 0,
                      coupon: str = "", attribution: str = "") -> ConfirmResult:
        """Confirm a paid hold; ``discount`` / ``coupon``: a coupon locked to this hold; ``attribution``: the
        buyer's share-link attribution, ``<room>|<sharer>|<code>`` (confirm.lua)."""
        try:
            sale_id = sale_of_hold(hold_id)
        except InvalidInput:
            return ConfirmResult(ConfirmCode.INVALID, None, "", False)
        if not isinstance(payment_ref, str) or not isinstance(user_id, str):
            return ConfirmResult(ConfirmCode.INVALID, None, "", False)
        k = K.sale_keys(sale_id)
        code, order_id, status, fresh = await run_acked(
            self.redis, self._scripts["confirm"], k.for_confirm,
            [hold_id, payment_ref, user_id, discount, coupon, attribution], self.wait_replicas, self.wait_ms)
        return ConfirmResult(ConfirmCode(_s(code)), _s(order_id) or None, _s(status), bool(int(fresh)))

    async def release(self, hold_id: str, user_id: str = "") -> ReleaseResult:
        try:
            sale_id = sale_of_hold(hold_id)
        except InvalidInput:
            return ReleaseResult(ReleaseCode.INVALID, "", 0)
        if not isinstance(user_id, str):
            return ReleaseResult(ReleaseCode.INVALID, "", 0)
        k = K.sale_keys(sale_id)
        code, status, available = await self._scripts["release"](keys=k.for_release, args=[hold_id, user_id])
        return ReleaseResult(ReleaseCode(_s(code)), _s(status), int(available))

    async def reap(self, sale_id: str, limit: int = 100) -> tuple[int, int, int, int]:
        """Expire due holds: (holds expired, units restocked, available now, next deadline ms or 0)."""
        count, units, available, nxt, _deposits = await self.reap_with_deposits(sale_id, limit)
        return count, units, available, nxt

    async def reap_with_deposits(self, sale_id: str, limit: int = 100) -> tuple[int, int, int, int,
                                                                                 list[ExpiredDeposit]]:
        """``reap`` plus the pre-sale deposit holds it expired (their balance was not paid in time)."""
        k = K.sale_keys(sale_id)
        reply = await self._scripts["reap"](keys=k.for_release, args=[limit])
        count, units, available, nxt = reply[:4]
        flat = reply[4] if len(reply) > 4 else []
        deposits = [ExpiredDeposit(_s(flat[i]), _s(flat[i + 1]), int(flat[i + 2]), _s(flat[i + 3]))
                    for i in range(0, len(flat), 4)]
        return int(count), int(units), int(available), int(nxt), deposits

    async def retire(self, sale_id: str, retention_ms: int, *, expire: bool) -> RetireResult:
        """``retire.lua``: check whether an ended sale is settled (``expire=False``), or give all its keys
        the retention TTL atomically if it is (``expire=True``); a sale already retired is not extended."""
        check_id("sale_id", sale_id, SLUG_RE)
        if ids := await self.buckets.of(sale_id):  # a bucketed sale retires as one: every bucket settled
            return await self.buckets.retire(ids, retention_ms, expire=expire)
        k = K.sale_keys(sale_id)
        r = await self._scripts["retire"](keys=k.all, args=[K.SETTLE_GROUP, int(retention_ms),
                                                           "expire" if expire else "check"])
        code, allocated, available, held, sold, ends, ttl = r
        return RetireResult(RetireCode(_s(code)), int(allocated), int(available), int(held), int(sold), int(ends),
                            int(ttl))

    async def get_hold(self, hold_id: str) -> Hold | None:
        sale_id = sale_of_hold(hold_id)
        raw = await self.redis.hget(K.sale_keys(sale_id).holds, hold_id)
        if raw is None:
            return None
        return Hold.from_record(hold_id, B.parent_of(sale_id), orjson.loads(raw))  # a bucket's: the sale's id

    async def hold_lost(self, hold_id: str) -> bool:
        """True when a hold Redis does not have may have been lost with Redis data: its sale was rebuilt
        from SQL (``rebuild.lua`` set ``rebuilt_at``). Callers ask only after the hold was not found."""
        try:
            sale_id = sale_of_hold(hold_id)
        except InvalidInput:
            return False
        return bool(await self.redis.hexists(K.sale_keys(sale_id).sale, "rebuilt_at"))

    async def rebuild(self, sale_id: str, args: Sequence[Any]) -> list[Any]:
        """``rebuild.lua`` over all keys of the sale (``inventory/reconcile.py`` builds ``args`` from SQL)."""
        check_id("sale_id", sale_id, SLUG_RE)
        return list(await self._scripts["rebuild"](keys=K.sale_keys(sale_id).all, args=list(args)))

    async def check_invariant(self, sale_id: str, *, route: bool = True) -> InvariantReport:
        """available + held + sold == allocated, all >= 0, and the holds and buyers agree with them (a
        bucketed sale: each bucket's, and the buckets' sum; ``route`` False: this bucket alone)."""
        if route and (ids := await self.buckets.of(sale_id)):
            return await self.buckets.check_invariant(sale_id, ids)
        k = K.sale_keys(sale_id)
        r = [int(x) for x in await self._scripts["audit"](keys=[k.sale, k.buyers, k.holds], args=[])]
        found, allocated, available, held, sold, held_sum, sold_sum, buyers_sum, max_units, limit = r
        problems = []
        if not found:
            problems.append("sale not found")
        else:
            if available + held + sold != allocated:
                problems.append(f"available {available} + held {held} + sold {sold} != allocated {allocated}")
            if min(available, held, sold) < 0:
                problems.append("a counter is negative")
            if held_sum != held:
                problems.append(f"held holds sum to {held_sum}, counter says {held}")
            if sold_sum != sold:
                problems.append(f"confirmed holds sum to {sold_sum}, counter says {sold}")
            if buyers_sum != held + sold and K.variant_group(sale_id) is None:  # a variant sale's buyers hash
                problems.append(f"per-user units sum to {buyers_sum}, expected {held + sold}")  # is shared
            if max_units > limit:
                problems.append(f"a user holds {max_units} units, over the limit {limit}")
        return InvariantReport(sale_id, allocated, available, held, sold, tuple(problems))

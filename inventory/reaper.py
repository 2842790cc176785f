"""Return expired holds to stock, for every armed sale, on a short interval (driven by the deadlines ZSET).

The reap script is idempotent, so several reapers (one per settlement process) are safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from redis.asyncio import Redis

from . import archive
from . import buckets as B
from . import keys as K
from .domain import ExpiredDeposit, RetireCode, RetireResult, SLUG_RE
from .pools import PoolStore, flush_journal
from .scripts import Inventory
from .store import Store

__all__ = ["Reaper"]

log = logging.getLogger(__name__)

OnRestock = Callable[[str, str, int], Awaitable[None]]  # (room_id, sale_id, available)
OnRetired = Callable[[str, str], Awaitable[None]]       # (room_id, sale_id), after its keys got the TTL
OnDeposits = Callable[[str, list[ExpiredDeposit]], Awaitable[None]]  # (sale_id, deposits whose balance went unpaid)
DEFAULT_RETAIN_MS = 3_600_000  # LIVESALE_RETAIN_ENDED_S's default
# a registered sale with no sale hash is dropped only after it stayed missing this long: ``arm`` adds
# the registry entries just before the sale hash exists, and that sale must never lose them
GONE_GRACE_S = 60.0


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Reaper:
    def __init__(self, redis: Redis, inventory: Inventory, interval_ms: int,
                 on_restock: OnRestock | None = None, *, store: Store | None = None,
                 retain_ms: int = DEFAULT_RETAIN_MS, on_retired: OnRetired | None = None,
                 gone_grace_s: float = GONE_GRACE_S, on_deposits: OnDeposits | None = None) -> None:
        """``store``: where the final counters are archived (None: not archived, e.g. engine-only tests)."""
        self.redis = redis
        self.inventory = inventory
        self.interval = interval_ms / 1000
        self.on_restock = on_restock
        self.store = store
        self.retain_ms = retain_ms
        self.on_retired = on_retired
        self.on_deposits = on_deposits  # a pre-sale's deposit rule (refund or keep), applied once per hold
        self.gone_grace_s = gone_grace_s
        self._missing_since: dict[str, float] = {}  # sale id -> when its sale hash was first seen missing
        self.expired = 0  # holds expired by this reaper since it started (server/metrics.py reads it)
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reaper sweep failed: %s", exc)
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel (then run never ends)
                async with asyncio.timeout(self.interval):
                    await self._stop.wait()
            except TimeoutError:
                pass

    async def sweep(self) -> int:
        """One pass over every armed sale; returns the number of holds expired."""
        expired = 0
        armed = {_text(m) for m in await self.redis.smembers(K.SALES_REGISTRY)}
        outboxes = {_text(m) for m in await self.redis.smembers(K.OUTBOX_REGISTRY)}
        candidates = set(armed)
        for key in outboxes:
            try:
                candidates.add(K.sale_id_of_outbox(key))
            except ValueError:
                continue
        for sale_id in sorted(candidates):
            if not SLUG_RE.match(sale_id):
                continue
            try:
                expired += await self._sweep_sale(sale_id, sale_id in armed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one sale's trouble never stops the others' expiries
                log.warning("reaper: sale %s: %s: %s", sale_id, type(exc).__name__, exc)
        if self.store is not None:
            await self.flush_journals()
        return expired

    async def _sweep_sale(self, sale_id: str, armed: bool) -> int:
        """Expire one sale's due holds, give an ended pool-backed sale's units back, retire it when done."""
        expired = nxt = 0
        if armed:
            while True:
                count, units, available, nxt, deposits = await self.inventory.reap_with_deposits(sale_id, 500)
                expired += count
                self.expired += count
                if deposits and self.on_deposits is not None:
                    await self.on_deposits(sale_id, deposits)
                if units and available == units and self.on_restock is not None:  # was sold out
                    parent = B.parent_of(sale_id)  # a hot-SKU bucket: the sale it belongs to, and its total
                    whole = parent == sale_id and not await self.inventory.buckets.of(sale_id)
                    counters = await self.inventory.counters(parent)
                    if counters is not None and (whole or counters.available == units):  # the sale was sold out
                        await self.on_restock(counters.room_id, parent, available if whole else counters.available)
                if count < 500:
                    break
            if B.is_bucket_id(sale_id) or await self.inventory.buckets.of(sale_id):
                await self.inventory.buckets.recover(sale_id)  # moves between buckets a crash left half done
        pool_id = K.pool_of_sale(sale_id)
        if armed and pool_id and sale_id != K.pool_bucket_id(pool_id):
            await self.give_back(sale_id)
        if not nxt:
            try:
                await self.retire(sale_id)
            except Exception as exc:  # SQL or Redis briefly away: the next sweep tries again
                log.warning("reaper: could not retire sale %s: %s", sale_id, exc)
        return expired

    async def give_back(self, sale_id: str) -> None:
        """An ended pool-backed sale's available units (unsold, or freed since by expired holds) go back
        to its pool (``pool_return.lua``: nothing while the sale is open)."""
        code, units, pool_available = await self.inventory.pools.give_back(sale_id)
        if code == "RETURNED":
            log.info("reaper: sale %s gave %d units back to pool %s (%d available there)", sale_id, units,
                     K.pool_of_sale(sale_id), pool_available)

    async def flush_journals(self) -> None:
        """Every pool's ledger entries written to SQL (pool_ledger), then dropped from Redis."""
        assert self.store is not None
        sql = PoolStore(self.store)
        for pool_id in await self.inventory.pools.pool_ids():
            try:
                await flush_journal(self.inventory.pools, sql, pool_id)
            except Exception as exc:  # SQL briefly away: the journal stays in Redis for the next sweep
                log.warning("reaper: pool %s ledger not written yet: %s: %s", pool_id, type(exc).__name__,
                            str(exc).splitlines()[0][:300] if str(exc) else "")

    async def retire(self, sale_id: str) -> RetireCode:
        """Archive and expire the sale if it has ended and is settled; drop it from the registries once
        its keys have their TTL (or are gone). Returns what ``retire.lua`` answered."""
        parent = B.parent_of(sale_id)
        if parent != sale_id and sale_id in await self.inventory.buckets.of(parent):
            return RetireCode.OPEN  # a hot-SKU bucket retires with its sale (all buckets at once)
        ids = await self.inventory.buckets.of(sale_id) or (sale_id,)
        r = await self.inventory.retire(sale_id, self.retain_ms, expire=False)
        room_id = ""
        if r.code is RetireCode.SETTLED:
            counters = await self.inventory.counters(sale_id)
            room_id = counters.room_id if counters is not None else ""
            if self.on_deposits is not None:  # every expired deposit once more (idempotent), before its keys go
                late = await self._expired_deposits(sale_id)
                if late:
                    await self.on_deposits(sale_id, late)
            if self.store is not None and counters is not None:
                await archive.save_sale(self.store, await self._final(sale_id, room_id, r))
            r = await self.inventory.retire(sale_id, self.retain_ms, expire=True)
        if r.code is RetireCode.GONE:  # maybe being armed right now: only once it stayed missing a while
            first = self._missing_since.setdefault(sale_id, time.monotonic())
            if time.monotonic() - first < self.gone_grace_s:
                return r.code
            r = await self.inventory.retire(sale_id, self.retain_ms, expire=True)  # TTL on what is left
        self._missing_since.pop(sale_id, None)
        if r.code in (RetireCode.RETIRED, RetireCode.GONE):
            await self.redis.srem(K.SALES_REGISTRY, *ids)
            await self.redis.srem(K.OUTBOX_REGISTRY, *(K.sale_keys(b).outbox for b in ids))
            if r.code is RetireCode.RETIRED and room_id and self.on_retired is not None:
                await self.on_retired(room_id, sale_id)
        return r.code

    async def _expired_deposits(self, sale_id: str) -> list[ExpiredDeposit]:
        """A settled sale's expired pre-sale deposits (a crash between reap.lua and ``on_deposits`` lost
        none of them: this runs before the sale's keys expire)."""
        out = []
        async for hid, raw in self.redis.hscan_iter(K.sale_keys(sale_id).holds, count=1000):
            h = orjson.loads(raw)
            if h.get("s") == "expired" and h.get("dr"):
                out.append(ExpiredDeposit(_text(hid), str(h["u"]), int(h["q"]), str(h["dr"])))
        return out

    async def _final(self, sale_id: str, room_id: str, r: RetireResult) -> archive.SaleArchive:
        """The archive row of a settled sale: its keys can no longer change, so a scan is consistent (a
        bucketed sale's: every bucket's; a buyer is in one bucket only, their home)."""
        expired_units = released_units = holds = buyers = requests = 0
        for bucket in await self.inventory.buckets.of(sale_id) or (sale_id,):
            k = K.sale_keys(bucket)
            async for _hid, raw in self.redis.hscan_iter(k.holds, count=1000):
                h = orjson.loads(raw)
                holds += 1
                if h.get("s") == "expired":
                    expired_units += int(h.get("q", 0))
                elif h.get("s") == "released":
                    released_units += int(h.get("q", 0))
            buyers += int(await self.redis.hlen(k.buyers))
            requests += int(await self.redis.hlen(k.idem))
        return archive.SaleArchive(
            sale_id=sale_id, room_id=room_id, allocated=r.allocated, sold=r.sold, unsold=r.available,
            expired_units=expired_units, released_units=released_units, holds=holds, buyers=buyers,
            reserve_requests=requests, ends_at_ms=r.ends_at_ms, archived_at_ms=_now_ms())

    def stop(self) -> None:
        self._stop.set()

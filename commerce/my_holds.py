"""A buyer's holds and orders in one view (``GET /api/me/orders``): what they reserved, paid, got
settled, let expire or released, and what was refunded, with totals.

Holds live in their sale's Redis hash; to find a buyer's holds across every sale and channel, each
reservation adds its hold id to the buyer's index (``inventory.keys.user_holds_key``: a sorted set
by creation time, trimmed to about the newest ``KEEP`` and expiring after the buyer's last reservation
with the rooms' retention window, ``LIVESALE_RETAIN_ROOM_S``). The index is written after the
reservation (never on the failed clicks of a burst), gathered per loop iteration, so a crash in
between loses only that hold's line in this view, never the hold. On one server an iteration's holds go in
one script call (commerce/lua/index_holds.lua: ~2 µs a hold less of the gateway's CPU than a pipeline of
ZADD + EXPIRE per buyer), three arguments a hold; on a Redis Cluster the buyers' keys sit in many slots, so
the same commands go as a pipeline.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.asyncio import Redis

from inventory.domain import Hold, InvalidInput
from inventory.keys import user_holds_key
from inventory.redis_link import is_cluster
from inventory.scripts import Inventory

from .lua_scripts import script
from .tasks import OwnedTasks

__all__ = ["MyHolds", "hold_line", "KEEP", "TTL_S", "TRIM_EVERY"]

log = logging.getLogger(__name__)

KEEP = 200            # holds kept per buyer in the index (the newest)
TRIM_EVERY = 16       # one index write in this many also trims it to KEEP
TTL_S = 7 * 86400     # default: the index expires this long after the buyer's last reservation
CHUNK = 500           # buyers per index_holds.lua call

# a hold's status as the buyer reads it: held -> reserved, confirmed -> paid (settled once in SQL)
_STATUS = {"held": "reserved", "deposit": "deposit", "confirmed": "paid", "expired": "expired", "released": "released"}


def hold_line(h: Hold, unit_price: int | None, currency: str | None) -> dict[str, Any]:
    amount = unit_price * h.qty if unit_price is not None else None
    out: dict[str, Any] = {"hold_id": h.hold_id, "sale_id": h.sale_id, "qty": h.qty,
                           "status": _STATUS.get(h.status, h.status), "pay_by": h.pay_by_ms, "created_at": h.created_ms,
                           "amount": amount, "currency": currency}
    if h.channel:
        out["channel"] = h.channel
    if h.status == "confirmed":
        out["order_id"] = h.hold_id
    return out


class MyHolds:
    def __init__(self, redis: Redis, inventory: Inventory, ttl_s: int = TTL_S) -> None:
        self.redis = redis
        self.inventory = inventory
        self.ttl_s = ttl_s
        self._pending: list[tuple[str, str]] = []  # (user, hold id) noted in this iteration, not yet written
        self._writes = 0
        self._tasks = OwnedTasks(log, "buyers' hold index")
        self._script = None if is_cluster(redis) else script(redis, "index_holds")

    def note(self, user_id: str, hold_id: str) -> None:
        """Index a new hold: gathered with every other reservation of this loop iteration (a reserve
        batch answers hundreds at once) and written in one call, off the buy path, scored by the time of
        that write (one clock read per iteration, not per click)."""
        if not self._pending:
            self._tasks.spawn(self._flush())
        self._pending.append((user_id, hold_id))

    async def _flush(self) -> None:
        pending, self._pending = self._pending, []
        ms = int(time.time() * 1000)
        await self._write([(user_id, hold_id, ms, False) for user_id, hold_id in pending])

    async def add_many(self, holds: dict[str, dict[str, int]]) -> None:
        """Index {user: {hold id: created ms}}; a buyer given several holds at once is trimmed then too."""
        await self._write([(user_id, hold_id, ms, len(mapping) > 1) for user_id, mapping in holds.items()
                           for hold_id, ms in mapping.items()])

    async def _write(self, holds: list[tuple[str, str, int, bool]]) -> None:
        """(user, hold id, created ms, trim) into the buyers' indexes, in one script call per ``CHUNK`` (a buyer
        with two holds in it gets two ZADDs). The trim to the newest ``KEEP`` rides on one write in
        ``TRIM_EVERY`` (and on every read, and where asked): a third command per reservation was measured at
        ~3 µs of gateway CPU per click of a sold-out burst; an index may so exceed ``KEEP`` by a few."""
        if not holds:
            return
        n = self._writes
        self._writes += len(holds)
        if self._script is None:
            async with self.redis.pipeline(transaction=False) as p:
                for user_id, hold_id, ms, trim in holds:
                    n += 1
                    key = user_holds_key(user_id)
                    p.zadd(key, {hold_id: ms})
                    p.expire(key, self.ttl_s)
                    if trim or n % TRIM_EVERY == 0:
                        p.zremrangebyrank(key, 0, -KEEP - 1)
                await p.execute()
            return
        for at in range(0, len(holds), CHUNK):
            keys = []
            args: list[Any] = [self.ttl_s, KEEP]
            for user_id, hold_id, ms, trim in holds[at:at + CHUNK]:
                n += 1
                keys.append(user_holds_key(user_id))
                args += (1 if trim or n % TRIM_EVERY == 0 else 0, ms, hold_id)
            await self._script(keys=keys, args=args)

    async def aclose(self) -> None:
        """Write what is gathered (bounded)."""
        await self._tasks.drain(5.0)

    async def recent(self, user_id: str, limit: int = 50) -> list[Hold]:
        """The buyer's newest holds (newest first), as their sales hold them now (a retired sale's are gone)."""
        key = user_holds_key(user_id)
        async with self.redis.pipeline(transaction=False) as p:
            p.zremrangebyrank(key, 0, -KEEP - 1)
            p.zrevrange(key, 0, limit - 1)
            _, newest = await p.execute()
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in newest]
        out = []
        for hid in ids:
            try:
                h = await self.inventory.get_hold(hid)
            except InvalidInput:
                continue
            if h is not None and h.user_id == user_id:
                out.append(h)
        return out

    async def lines(self, user_id: str, limit: int = 50) -> list[dict[str, Any]]:
        holds = await self.recent(user_id, limit)
        prices: dict[str, tuple[int | None, str | None]] = {}
        for sid in {h.sale_id for h in holds}:
            c = await self.inventory.counters(sid)
            prices[sid] = (c.unit_price, c.currency) if c is not None else (None, None)
        return [hold_line(h, *prices[h.sale_id]) for h in holds]

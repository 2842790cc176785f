"""Return expired holds to stock, for every armed sale, on a short interval (driven by the deadlines ZSET).

The reap script is idempotent, so several reapers (one per settlement process) are safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from . import keys as K
from .scripts import Inventory

__all__ = ["Reaper"]

log = logging.getLogger(__name__)

OnRestock = Callable[[str, str, int], Awaitable[None]]  # (room_id, sale_id, available)
FORGET_AFTER_MS = 3_600_000  # stop scanning a sale an hour after it ended with no live holds


class Reaper:
    def __init__(self, redis: Redis, inventory: Inventory, interval_ms: int,
                 on_restock: OnRestock | None = None) -> None:
        self.redis = redis
        self.inventory = inventory
        self.interval = interval_ms / 1000
        self.on_restock = on_restock
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
        now = await self.inventory.now_ms()
        for raw in await self.redis.smembers(K.SALES_REGISTRY):
            sale_id = raw.decode() if isinstance(raw, bytes) else raw
            while True:
                count, units, available, nxt = await self.inventory.reap(sale_id, 500)
                expired += count
                if units and available == units and self.on_restock is not None:  # was sold out
                    counters = await self.inventory.counters(sale_id)
                    if counters is not None:
                        await self.on_restock(counters.room_id, sale_id, available)
                if count < 500:
                    break
            if not nxt:
                counters = await self.inventory.counters(sale_id)
                if counters is None or now - counters.ends_at_ms > FORGET_AFTER_MS:
                    await self.redis.srem(K.SALES_REGISTRY, sale_id)
        return expired

    def stop(self) -> None:
        self._stop.set()

"""Group commit for the burst: buys for one sale that arrive while a script call is in flight go
together in the next call (one EVALSHA reserves up to ``max_batch`` requests)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from inventory.domain import ReserveRequest, ReserveResult
from inventory.scripts import Inventory

from .tasks import OwnedTasks

__all__ = ["ReserveBatcher", "ReserveCallback"]

log = logging.getLogger(__name__)

ReserveCallback = Callable[[ReserveResult | BaseException], None]


class ReserveBatcher:
    """``submit`` takes a callback rather than returning a future: the gateway answers each click from
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
            self._inflight[sale_id] = self._inflight.get(sale_id, 0) + 1
            self._tasks.spawn(self._drain(sale_id))

    async def _drain(self, sale_id: str) -> None:
        try:
            await asyncio.sleep(0)  # let this loop iteration's other buys join the batch
            while queue := self._queues.get(sale_id):
                batch, self._queues[sale_id] = queue[: self.max_batch], queue[self.max_batch:]
                results: list[ReserveResult] | None = None
                failure: BaseException | None = None
                try:
                    results = await self.inventory.reserve_many(sale_id, [req for req, _ in batch])
                except Exception as exc:  # Redis down: every waiter gets the error, nothing is lost
                    failure = exc
                for i, (_, done) in enumerate(batch):
                    try:
                        done(failure if results is None else results[i])  # type: ignore[arg-type]
                    except Exception:
                        log.exception("reserve callback failed")
        finally:
            self._inflight[sale_id] -= 1
            if not self._inflight[sale_id]:
                del self._inflight[sale_id]
                if not self._queues.get(sale_id):
                    self._queues.pop(sale_id, None)

    async def aclose(self) -> None:
        await self._tasks.cancel(5.0)

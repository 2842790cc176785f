"""Group commit for the burst: requests for one key (a sale's buys, a coupon drop's claims) that arrive
while a script call for that key is in flight go together in the next call (one EVALSHA decides up to
``max_batch`` requests, in order, as if each were its own call)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from inventory.domain import ReserveRequest, ReserveResult
from inventory.scripts import Inventory

from .tasks import OwnedTasks

__all__ = ["Batcher", "ReserveBatcher", "ReserveCallback"]

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")
ReserveCallback = Callable[[ReserveResult | BaseException], None]


class Batcher(Generic[Req, Res]):
    """``submit`` takes a callback rather than returning a future: the gateway answers each click from
    the batch's result loop directly, so a click costs no task wake-up of its own. ``run`` decides one
    batch for one key and returns one result per request, in order."""

    def __init__(self, run: Callable[[str, Sequence[Req]], Awaitable[list[Res]]], what: str,
                 max_batch: int = 256, max_inflight: int = 2) -> None:
        self.run = run
        self.what = what
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queues: dict[str, list[tuple[Req, Callable[[Res | BaseException], None]]]] = {}
        self._inflight: dict[str, int] = {}
        self._tasks = OwnedTasks(log, what)

    def submit(self, key: str, req: Req, done: Callable[[Res | BaseException], None]) -> None:
        """Queue one request; ``done`` gets its result (or the exception that failed its batch)."""
        self._queues.setdefault(key, []).append((req, done))
        if self._inflight.get(key, 0) < self.max_inflight:
            self._inflight[key] = self._inflight.get(key, 0) + 1
            self._tasks.spawn(self._drain(key))

    async def call(self, key: str, req: Req) -> Res:
        """``submit`` for a caller that awaits its own result."""
        fut: asyncio.Future[Res] = asyncio.get_running_loop().create_future()

        def done(outcome: Res | BaseException) -> None:
            if not fut.done():
                if isinstance(outcome, BaseException):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)
        self.submit(key, req, done)
        return await fut

    async def _drain(self, key: str) -> None:
        try:
            await asyncio.sleep(0)  # let this loop iteration's other requests join the batch
            while queue := self._queues.get(key):
                batch, self._queues[key] = queue[: self.max_batch], queue[self.max_batch:]
                results: list[Res] | None = None
                failure: BaseException | None = None
                try:
                    results = await self.run(key, [req for req, _ in batch])
                except Exception as exc:  # Redis down: every waiter gets the error, nothing is lost
                    failure = exc
                for i, (_, done) in enumerate(batch):
                    try:
                        done(failure if results is None else results[i])  # type: ignore[arg-type]
                    except Exception:
                        log.exception("%s callback failed", self.what)
        finally:
            self._inflight[key] -= 1
            if not self._inflight[key]:
                del self._inflight[key]
                if not self._queues.get(key):
                    self._queues.pop(key, None)

    async def aclose(self) -> None:
        await self._tasks.cancel(5.0)


class ReserveBatcher(Batcher[ReserveRequest, ReserveResult]):
    """The buys of one sale, reserved together by ``reserve.lua``."""

    def __init__(self, inventory: Inventory, max_batch: int = 256, max_inflight: int = 2) -> None:
        super().__init__(inventory.reserve_many, "reserve batch", max_batch, max_inflight)
        self.inventory = inventory

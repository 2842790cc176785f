"""Group commit for the burst: requests for one key (a sale's buys, a coupon drop's claims) that arrive
while a script call for that key is in flight go together in the next call (one EVALSHA decides up to
``max_batch`` requests, in order, as if each were its own call).

An answer deadline (``deadline_s``, LIVESALE_ANSWER_DEADLINE_MS) bounds how long a request waits for its
answer: a request still queued when its deadline passes is answered ``UNAVAILABLE`` without being run (nothing
changed), and a batch whose script call outlives the deadline of its oldest request answers all of its requests
``UNAVAILABLE`` then -- the call goes on in the background and its outcome is kept by the scripts under each
request id, so the client's retry with the same id gets it. A failing-over shard answers slowly, not never:
without a deadline a click could wait on the cluster client's retries and slot-map reloads for many seconds."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from inventory.domain import ReserveRequest, ReserveResult
from inventory.scripts import Inventory

from .meters import BatchMeter, error_kind
from .errors import Unavailable
from .tasks import OwnedTasks

__all__ = ["Batcher", "ReserveBatcher", "ReserveCallback"]

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")
ReserveCallback = Callable[[ReserveResult | BaseException], None]
_Queued = tuple[Req, Callable[[Res | BaseException], None], float]  # request, callback, queued at (monotonic s)


class Batcher(Generic[Req, Res]):
    """``submit`` takes a callback rather than returning a future: the gateway answers each click from
    the batch's result loop directly, so a click costs no task wake-up of its own. ``run`` decides one
    batch for one key and returns one result per request, in order."""

    def __init__(self, run: Callable[[str, Sequence[Req]], Awaitable[list[Res]]], what: str,
                 max_batch: int = 256, max_inflight: int = 2, deadline_s: float = 0.0) -> None:
        self.run = run
        self.what = what
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.deadline_s = deadline_s  # 0: no deadline (a request waits for its batch however long it takes)
        self._queues: dict[str, list[_Queued[Req, Res]]] = {}  # key -> requests in arrival order
        self._inflight: dict[str, int] = {}
        self._tasks = OwnedTasks(log, what)

    def submit(self, key: str, req: Req, done: Callable[[Res | BaseException], None]) -> None:
        """Queue one request; ``done`` gets its result (or the exception that failed its batch)."""
        self._queues.setdefault(key, []).append((req, done, time.monotonic()))
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
                if self.deadline_s:
                    queue = self._queues[key] = self._expire(queue)
                    if not queue:
                        continue
                batch, self._queues[key] = queue[: self.max_batch], queue[self.max_batch:]
                outcome = await self._decide(key, batch)
                for i, (_, done, _t) in enumerate(batch):
                    try:
                        done(outcome if isinstance(outcome, BaseException) else outcome[i])
                    except Exception:
                        log.exception("%s callback failed", self.what)
        finally:
            self._inflight[key] -= 1
            if not self._inflight[key]:
                del self._inflight[key]
                if not self._queues.get(key):
                    self._queues.pop(key, None)

    async def _decide(self, key: str, batch: list[_Queued[Req, Res]]) -> list[Res] | BaseException:
        """The batch's results, or the exception every request of it is answered with."""
        call = self.run(key, [req for req, _, _ in batch])
        if not self.deadline_s:
            try:
                return await call
            except Exception as exc:  # Redis down: every waiter gets the error, nothing is lost
                return exc
        task = self._tasks.spawn(_outcome(call))
        left = batch[0][2] + self.deadline_s - time.monotonic()
        done, _ = await asyncio.wait((task,), timeout=max(0.0, left))
        if not done:  # still running: answered now, decided in the background (idempotent per request id)
            return Unavailable(f"not decided within {self.deadline_s:g} s (the stock service is slow or failing "
                               "over); retry with the same request id")
        result: list[Res] | BaseException = task.result()
        return result

    def _expire(self, queue: list[_Queued[Req, Res]]) -> list[_Queued[Req, Res]]:
        """Answers the queued requests whose deadline passed (never run: nothing changed); returns the rest."""
        cut = time.monotonic() - self.deadline_s
        if queue[0][2] > cut:  # the oldest is in time: all are
            return queue
        late = Unavailable(f"not started within {self.deadline_s:g} s (the stock service is busy or failing "
                           "over); retry with the same request id")
        keep = []
        for item in queue:
            if item[2] > cut:
                keep.append(item)
                continue
            try:
                item[1](late)
            except Exception:
                log.exception("%s callback failed", self.what)
        return keep

    async def aclose(self) -> None:
        await self._tasks.cancel(5.0)


class ReserveBatcher(Batcher[ReserveRequest, ReserveResult]):
    """The buys of one sale, reserved together by ``reserve.lua``."""

    def __init__(self, inventory: Inventory, max_batch: int = 256, max_inflight: int = 2) -> None:
        super().__init__(self._reserve, "reserve batch", max_batch, max_inflight)
        self.inventory = inventory
        self.meter = BatchMeter()  # sizes, script time, failures (server/metrics.py reads it)

    async def _reserve(self, key: str, reqs: Sequence[ReserveRequest]) -> list[ReserveResult]:
        """``reserve_many``, timed: one clock read pair per batch, not per buy."""
        meter = self.meter
        t0 = time.perf_counter()
        try:
            return await self.inventory.reserve_many(key, reqs)
        except Exception as exc:
            if error_kind(exc) == "redis":
                meter.failures += 1
            raise
        finally:
            meter.sizes.observe(len(reqs))
            meter.seconds.observe(time.perf_counter() - t0)


async def _outcome(call: Awaitable[list[Res]]) -> list[Res] | BaseException:
    """``call``'s results or the exception it raised, returned: a batch answered late has no one to raise to."""
    try:
        return await call
    except Exception as exc:
        return exc

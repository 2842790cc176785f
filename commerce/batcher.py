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


class _Late:
    """A batch's deadline timer, and whether it fired (the batch was answered UNAVAILABLE)."""

    __slots__ = ("timer", "fired")

    def __init__(self) -> None:
        self.timer: asyncio.TimerHandle | None = None
        self.fired = False


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
        self._kick(key)

    def _kick(self, key: str) -> None:
        """A drain for ``key`` if it has fewer than ``max_inflight`` running."""
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
        late: _Late | None = None
        try:
            await asyncio.sleep(0)  # let this loop iteration's other requests join the batch
            while queue := self._queues.get(key):
                if self.deadline_s:
                    queue = self._queues[key] = self._expire(queue)
                    if not queue:
                        continue
                batch, self._queues[key] = queue[: self.max_batch], queue[self.max_batch:]
                if self.deadline_s:  # one timer per batch (no task: a click costs nothing more)
                    late = _Late()
                    late.timer = asyncio.get_running_loop().call_later(
                        max(0.0, batch[0][2] + self.deadline_s - time.monotonic()), self._late, key, batch, late)
                outcome: list[Res] | BaseException
                try:
                    outcome = await self.run(key, [req for req, _, _ in batch])
                except Exception as exc:  # Redis down: every waiter gets the error, nothing is lost
                    outcome = exc
                if late is not None:
                    if late.timer is not None:
                        late.timer.cancel()
                    if late.fired:  # answered at the deadline; another drain took over the key's queue
                        return
                    late = None
                if isinstance(outcome, BaseException):
                    self._answer(batch, outcome)
                else:
                    for (_, done, _t), res in zip(batch, outcome, strict=True):
                        try:
                            done(res)
                        except Exception:
                            log.exception("%s callback failed", self.what)
        finally:
            if late is None or not late.fired:
                self._release(key)

    def _release(self, key: str) -> None:
        self._inflight[key] -= 1
        if not self._inflight[key]:
            del self._inflight[key]
            if not self._queues.get(key):
                self._queues.pop(key, None)

    def _late(self, key: str, batch: list[_Queued[Req, Res]], late: _Late) -> None:
        """A batch's deadline passed with its script call still running: every request of it is answered
        UNAVAILABLE now; the call goes on (its outcome is kept under each request id) and its drain leaves
        the key, so the requests queued behind it are decided (or expire) without waiting for it."""
        late.fired = True
        self._answer(batch, Unavailable(f"not decided within {self.deadline_s:g} s (the stock service is slow or "
                                        "failing over); retry with the same request id"))
        self._release(key)
        if self._queues.get(key):
            self._kick(key)

    def _answer(self, batch: list[_Queued[Req, Res]], error: BaseException) -> None:
        """Every request of ``batch`` answered with ``error``."""
        for _, done, _t in batch:
            try:
                done(error)
            except Exception:
                log.exception("%s callback failed", self.what)

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


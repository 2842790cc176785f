"""Settlement: confirmed orders flow from the per-sale outbox streams into SQL, exactly once in effect.

One consumer group over every outbox stream. Each batch is written in one DB transaction
(idempotent by order id), then XACKed, so a crash anywhere causes at most a redelivery that changes
nothing. A janitor reclaims idle entries of dead consumers (XAUTOCLAIM) and moves entries delivered
too often (poison) to the dead-letter stream, unless their order is already in SQL (settled by a
worker that died before the ack: then it is notified and acked). Streams are trimmed only below
every group's oldest pending and last-delivered id, so nothing unacked or undelivered is ever
trimmed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from . import keys as K
from .janitor import OutboxJanitor
from .outbox import parse_entry, text as _s
from .redis_link import by_slot, is_cluster
from .store import OrderRecord, Store

__all__ = ["SettlementWorker", "SettlementStats"]

CLUSTER_POLL_MS = 50  # on a cluster: the pause between per-slot reads that found nothing

log = logging.getLogger(__name__)

OnCommitted = Callable[[list[OrderRecord]], Awaitable[None]]
Fault = Callable[[str], None]
Entry = tuple[str, str, "dict[str, str] | None"]  # (stream key, entry id, fields)

_TRANSIENT = (SQLAlchemyError, OSError, TimeoutError)  # DB down, locked, pool exhausted: retry
_PERMANENT = (DataError, IntegrityError)                # a row the DB refuses: isolate it
_HOOK_TRANSIENT = (RedisError, OSError, TimeoutError)   # on_committed could not publish: redeliver


def _id(raw: str) -> tuple[int, int]:
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def _describe(exc: BaseException) -> str:
    """A short error description without SQL parameters or connection strings."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return f"{type(orig).__name__}: {str(orig).splitlines()[0][:200] if str(orig) else ''}"


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation a library swallowed (redis-py can, while connecting)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


@dataclass(slots=True)
class SettlementStats:
    batches: int = 0           # batches committed and acked
    settled: int = 0           # entries committed and acked (redeliveries included)
    inserted: int = 0          # order rows newly inserted
    db_failures: int = 0       # failed batch transactions (each retried)
    redis_failures: int = 0
    poison: int = 0            # deliveries of entries that could not be parsed
    reclaimed: int = 0         # entries taken over from idle consumers
    dead_lettered: int = 0


class _Backoff:
    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        d, self.delay = self.delay, min(self.cap, self.delay * 2)
        return d * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.delay = self.first


class SettlementWorker(OutboxJanitor):
    """Moves confirmed orders from the outbox streams into the ``Store``.

    ``on_committed(orders)`` is awaited after each batch's commit and before its XACK, with every
    order of the batch as stored in SQL (an order stored by an earlier delivery comes with its
    stored ``settled_at_ms``): at least once per order, so a crash between commit and ack repeats it
    rather than losing it. If the hook fails with a Redis / network error (it could not publish),
    the batch is not acked: it is read again, committed again (a no-op) and the hook repeated. Any
    other exception from the hook is a bug in it: logged, and the batch is acked (settlement must
    not stall on it; the orders are in SQL). ``settled_at_ms`` is Redis ``TIME`` at the commit
    attempt. ``fault(point)`` ("before_commit" / "after_commit") is a test hook. ``group``,
    ``registry`` and ``dead_letter`` default to the production keys.
    """

    def __init__(
        self, redis: Redis, store: Store, *, consumer: str, batch: int = 200, block_ms: int = 1000,
        claim_idle_ms: int = 30000, max_deliveries: int = 5, registry_refresh_s: float = 1.0,
        on_committed: OnCommitted | None = None, fault: Fault | None = None,
        janitor_interval_s: float | None = None, backoff_max_s: float = 5.0,
        group: str = K.SETTLE_GROUP, registry: str = K.OUTBOX_REGISTRY, dead_letter: str = K.DEAD_LETTER,
    ) -> None:
        if batch < 1 or block_ms < 1 or claim_idle_ms < 1 or max_deliveries < 1:
            raise ValueError("batch, block_ms, claim_idle_ms and max_deliveries must be positive")
        self.redis, self.store, self.consumer = redis, store, consumer
        self._cluster = is_cluster(redis)
        self.batch, self.block_ms = batch, block_ms
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self.registry_refresh_s = registry_refresh_s
        self.janitor_interval_s = (janitor_interval_s if janitor_interval_s is not None
                                   else min(5.0, max(0.05, claim_idle_ms / 2000)))
        self.on_committed, self.fault = on_committed, fault
        self.group, self.registry, self.dead_letter = group, registry, dead_letter
        self.stats = SettlementStats()
        self._backoff_max = backoff_max_s
        self._cursors: dict[str, str] = {}          # stream -> "0"-style id (own pending) or ">"
        self._poison: dict[tuple[str, str], str] = {}
        self._next_refresh = self._next_janitor = 0.0
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, *, burst: bool = False) -> None:
        """Settle until ``stop()``; with ``burst`` return once nothing is pending and nothing is new."""
        if self._task is not None:
            raise RuntimeError("this worker is already running")
        self._task = asyncio.current_task()
        self._finished.clear()
        self._cursors.clear()
        self._next_refresh = self._next_janitor = 0.0
        backoff = _Backoff(0.05, self._backoff_max)
        log.info("settlement worker %s started (group %s)", self.consumer, self.group)
        try:
            while not self._stop.is_set():
                _raise_if_cancelling()
                try:
                    progressed = await self._step(burst)
                    backoff.reset()
                    if burst and not progressed:
                        if await self._all_settled():
                            return
                        await self._pause(max(0.01, self._next_janitor - time.monotonic()))
                except RedisError as exc:
                    self.stats.redis_failures += 1
                    self._cursors.clear()  # re-discover, recreate groups, re-read own pending entries
                    self._next_refresh = 0.0
                    delay = backoff.next()
                    log.warning("settlement: redis error (%s); retrying in %.2fs", _describe(exc), delay)
                    await self._pause(delay)
                    _raise_if_cancelling()
                except Exception:  # a bug or an unexpected failure: keep settling, loudly
                    self._cursors.clear()
                    self._next_refresh = 0.0
                    delay = backoff.next()
                    log.exception("settlement: unexpected error; retrying in %.2fs", delay)
                    await self._pause(delay)
        finally:
            self._task = None
            self._finished.set()
            log.info("settlement worker %s stopped", self.consumer)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop reading, finish the batch in hand, then return (cancel the run after ``timeout`` s).

        A stopped worker stays stopped (``run`` returns at once); build a new one to run again.
        """
        self._stop.set()
        task = self._task
        if task is None or task is asyncio.current_task():
            return
        try:
            async with asyncio.timeout(timeout):
                await self._finished.wait()
        except TimeoutError:
            log.warning("settlement worker %s did not drain in %ss; cancelling", self.consumer, timeout)
            task.cancel()
            await self._finished.wait()

    async def _pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            pass

    # -- main loop -------------------------------------------------------------------------------

    async def _step(self, burst: bool) -> bool:
        now = time.monotonic()
        if now >= self._next_refresh:
            await self._refresh()
            self._next_refresh = now + self.registry_refresh_s
        progressed = False
        if now >= self._next_janitor:
            progressed = await self._janitor() > 0
            self._next_janitor = time.monotonic() + self.janitor_interval_s
        if self._stop.is_set():
            return progressed
        if not self._cursors:
            if not burst:
                await self._pause(self.block_ms / 1000)
            return progressed
        entries = await self._read(block=not burst)
        if entries:
            await self._process(entries)
        return progressed or bool(entries)

    async def _refresh(self) -> None:
        members = sorted(_s(m) for m in await self.redis.smembers(self.registry))
        for key in set(self._cursors) - set(members):  # retired by the reaper (settled, keys expiring)
            del self._cursors[key]
        for key in members:
            if key in self._cursors:
                continue
            try:
                await self.redis.xgroup_create(key, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    log.error("settlement: cannot use stream %s: %s", key, _describe(exc))
                    continue
            self._cursors[key] = "0"

    async def _forget_missing(self) -> None:
        """Drop the streams that no longer exist (a retired sale's outbox expired before the next
        registry refresh noticed it left the registry): reading them would fail with NOGROUP."""
        keys = list(self._cursors)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            found = await pipe.execute()
        for key, n in zip(keys, found, strict=True):
            if not n:
                self._cursors.pop(key, None)

    async def _read(self, block: bool) -> list[Entry]:
        try:
            return await self._read_streams(block)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._forget_missing()
            return []

    async def _read_streams(self, block: bool) -> list[Entry]:
        own = {k: c for k, c in self._cursors.items() if c != ">"}
        if own:  # start-up / after errors: our own pending entries first
            got = await self._xreadgroup(own, block=None)
            for key in own:
                ids = [i for k, i, _ in got if k == key]
                self._cursors[key] = ids[-1] if ids else ">"
            if got:
                return got
        if self._stop.is_set():
            return []
        streams = {k: ">" for k in self._cursors}
        return await self._xreadgroup(streams, block=self.block_ms if block else None)

    async def _xreadgroup(self, streams: dict[str, str], block: int | None) -> list[Entry]:
        """XREADGROUP over ``streams``: one call on a single server; on a cluster, where one call cannot
        span hash slots, one call per slot, pipelined (each shard answers its own), and a short pause
        instead of a blocking read when nothing came (a block would hold one shard's connection while
        another's outbox fills)."""
        if not self._cluster:
            return self._entries(await self.redis.xreadgroup(self.group, self.consumer, streams,  # type: ignore[arg-type]  # redis-py: invariant dict/list of its key types
                                                             count=self.batch, block=block))
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in by_slot(streams).values():
                pipe.xreadgroup(self.group, self.consumer, {k: streams[k] for k in keys}, count=self.batch)
            replies = await pipe.execute()
        out = [e for reply in replies for e in self._entries(reply)]
        if not out and block:
            await self._pause(min(block, CLUSTER_POLL_MS) / 1000)
        return out

    @staticmethod
    def _entries(reply: Any) -> list[Entry]:
        if not reply:
            return []
        pairs = reply.items() if isinstance(reply, dict) else reply
        out: list[Entry] = []
        for key, items in pairs:
            if items and isinstance(items[0], list) and isinstance(reply, dict):  # RESP3 nesting
                items = items[0]
            for entry_id, fields in items:
                if entry_id is not None:
                    out.append((_s(key), _s(entry_id), fields))
        return out

    # -- processing ------------------------------------------------------------------------------

    async def _process(self, entries: Sequence[Entry]) -> None:
        for i in range(0, len(entries), self.batch):
            await self._settle(entries[i:i + self.batch])

    async def _settle(self, chunk: Sequence[Entry]) -> None:
        settled_at = 0  # stamped in _commit (Redis TIME at the attempt that commits)
        items: list[tuple[str, str, OrderRecord]] = []
        for key, entry_id, fields in chunk:
            try:
                if fields is None:
                    raise ValueError("entry has no fields")
                items.append((key, entry_id, parse_entry(key, entry_id, fields, settled_at)))
            except ValueError as exc:
                self._mark_poison(key, entry_id, str(exc))
        if not items:
            return
        if self.fault is not None:
            self.fault("before_commit")
        committed = await self._commit(items)
        if not committed:
            return
        if self.fault is not None:
            self.fault("after_commit")
        records = [r for _, _, r in committed]
        await self._notify(records)
        ids: dict[str, list[str]] = {}
        for key, entry_id, _ in committed:
            ids.setdefault(key, []).append(entry_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, key_ids in ids.items():
                pipe.xack(key, self.group, *key_ids)
            await pipe.execute()
        self.stats.batches += 1
        self.stats.settled += len(records)
        for key in ids:
            await self._trim(key)

    async def _notify(self, records: list[OrderRecord]) -> None:
        """Run ``on_committed``; a Redis / network failure propagates so the entries are not acked."""
        if self.on_committed is None:
            return
        try:
            await self.on_committed(records)
        except _HOOK_TRANSIENT as exc:  # not acked: read again, committed again (no-op), hook repeated
            log.warning("settlement: %d order(s) committed but on_committed failed (%s); left pending "
                        "to be notified again", len(records), _describe(exc))
            raise
        except Exception:
            log.exception("settlement: on_committed hook failed (a bug in the hook); acked anyway")

    def _mark_poison(self, key: str, entry_id: str, reason: str) -> None:
        self.stats.poison += 1
        if len(self._poison) > 10_000:
            self._poison.clear()
        self._poison[(key, entry_id)] = reason
        log.warning("settlement: poison entry %s %s left pending: %s", key, entry_id, reason)

    async def _commit(self, items: list[tuple[str, str, OrderRecord]]) -> list[tuple[str, str, OrderRecord]]:
        """One DB transaction for the batch, retried with backoff while the DB fails.

        Returns the items now stored, with the records as stored (``settled_at_ms`` is stamped
        with Redis ``TIME`` at each attempt; an order stored earlier keeps its stored values): all
        of them, or (when the DB refuses a row) all but the refused ones, or none if the worker is
        stopping while the DB is down.
        """
        backoff = _Backoff(0.05, self._backoff_max)
        while True:
            sec, usec = await self.redis.time()
            settled_at = int(sec) * 1000 + int(usec) // 1000
            items = [(k, i, dataclasses.replace(r, settled_at_ms=settled_at)) for k, i, r in items]
            try:
                inserted = set(await self.store.insert_new_orders([r for _, _, r in items]))
                self.stats.inserted += len(inserted)
                earlier = [r.order_id for _, _, r in items if r.order_id not in inserted]
                if not earlier:
                    return items
                stored = await self.store.get_orders(earlier)
                return [(k, i, stored.get(r.order_id, r) if r.order_id not in inserted else r)
                        for k, i, r in items]
            except _PERMANENT as exc:
                if len(items) == 1:
                    self._mark_poison(items[0][0], items[0][1], f"refused by the database: {_describe(exc)}")
                    return []
                kept: list[tuple[str, str, OrderRecord]] = []
                for item in items:  # isolate the refused row; the others still settle
                    kept += await self._commit([item])
                return kept
            except _TRANSIENT as exc:
                self.stats.db_failures += 1
                if self._stop.is_set():
                    log.warning("settlement: batch of %d not committed (%s); left pending on stop",
                                len(items), _describe(exc))
                    return []
                delay = backoff.next()
                log.warning("settlement: batch of %d not committed (%s); retrying in %.2fs",
                            len(items), _describe(exc), delay)
                await asyncio.sleep(delay)
                await self._keep_claimed(items)

    async def _keep_claimed(self, items: list[tuple[str, str, OrderRecord]]) -> None:
        """While retrying, reset the entries' idle time (JUSTID: no delivery count) so no one reclaims them."""
        ids: dict[str, list[str]] = {}
        for key, entry_id, _ in items:
            ids.setdefault(key, []).append(entry_id)
        for key, key_ids in ids.items():
            await self.redis.xclaim(key, self.group, self.consumer, self.claim_idle_ms // 2, key_ids, justid=True)  # type: ignore[arg-type]  # redis-py: invariant dict/list of its key types

    async def _trim(self, key: str) -> None:
        """XTRIM MINID below every group's oldest pending and last-delivered id."""
        floor: tuple[int, int] | None = None
        for g in await self.redis.xinfo_groups(key):
            g = {_s(k): v for k, v in g.items()}
            last = _id(_s(g["last-delivered-id"]))
            if int(g["pending"]):
                oldest = (await self.redis.xpending(key, _s(g["name"])))["min"]
                bound = min(last, _id(_s(oldest))) if oldest is not None else last
            else:
                bound = (last[0], last[1] + 1)  # everything delivered is acked
            floor = bound if floor is None else min(floor, bound)
        if floor is not None and floor > (0, 0):
            await self.redis.xtrim(key, minid=f"{floor[0]}-{floor[1]}", approximate=False)

    async def _all_settled(self) -> bool:
        """Nothing pending in the group on any known stream."""
        for key in list(self._cursors):
            try:
                if int((await self.redis.xpending(key, self.group))["pending"]):
                    return False
            except ResponseError as exc:  # the stream expired (retired sale): nothing pending in it
                if "NOGROUP" not in str(exc):
                    raise
                self._cursors.pop(key, None)
        return True

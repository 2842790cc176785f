"""The signal sink: interest signals flow from the ``ls:signals`` stream into the ``signals`` table.

The settlement worker's pattern: one consumer group; each batch of entries is written in ONE
transaction, insert-or-ignore by (entry id, index), then XACKed and deleted from the stream, so a
crash anywhere repeats a batch and changes nothing. Entries pending on a consumer that went away are
taken over (XAUTOCLAIM) after ``claim_idle_ms``. An entry that cannot be decoded is logged and acked
(a signal is an observation: one malformed entry must not stall the rest). Rows older than
``retention_ms`` are deleted every ``prune_every_s``.

Signals naming a sale get its ``product_id`` and ``sku`` here, from the ``sales`` table (a pool's
channel holds, sale ``<pool>--pool``, from ``pools``), cached per process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from .keys import POOL_BUCKET_SUFFIX
from .signal_log import SIGNAL_GROUP, SIGNAL_STREAM, SINK_STATS, Signal, decode_batch, signals
from .store import Store, sales

__all__ = ["SignalSink", "SinkStats"]

log = logging.getLogger(__name__)

_CHUNK = 500


@dataclass(slots=True)
class SinkStats:
    entries: int = 0     # stream entries written and acked
    rows: int = 0        # signals in them (redeliveries included)
    malformed: int = 0   # entries that could not be decoded (acked, skipped)
    failures: int = 0    # failed rounds (retried)
    reclaimed: int = 0
    pruned: int = 0
    lag_ms: int = 0      # age of the oldest signal of the last batch, at its commit (ms)


class SignalSink:
    def __init__(self, redis: Redis, store: Store, *, consumer: str, batch: int = 200, block_ms: int = 1000,
                 claim_idle_ms: int = 30000, retention_ms: int = 90 * 86_400_000, prune_every_s: float = 600.0,
                 stream: str = SIGNAL_STREAM, group: str = SIGNAL_GROUP,
                 on_batch: Callable[[list[Signal]], Awaitable[None]] | None = None) -> None:
        self.redis, self.store, self.consumer = redis, store, consumer
        self.batch, self.block_ms, self.claim_idle_ms = batch, block_ms, claim_idle_ms
        self.retention_ms, self.prune_every_s = retention_ms, prune_every_s
        self.stream, self.group = stream, group
        self.on_batch = on_batch  # after each batch is committed and acked: its signals (the shelf's scores)
        self.stats = SinkStats()
        self._products: dict[str, tuple[str, str]] = {}  # sale id -> (product id, sku)
        self._stop = asyncio.Event()
        self._next_claim = self._next_prune = 0.0
        self._own_pending = True  # read our own pending entries first (a restart, or entries just reclaimed)
        self._lags: deque[int] = deque(maxlen=2000)  # per batch: the oldest signal's age at commit (ms)
        self._next_report = 0.0

    def stop(self) -> None:
        self._stop.set()

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, *, burst: bool = False) -> None:
        """Write signals until ``stop()``; with ``burst``, return once the stream has nothing left for us."""
        delay = 0.05
        grouped = False
        self._own_pending = True
        while not self._stop.is_set():
            try:
                if not grouped:
                    await self._ensure_group()
                    grouped = True
                now = time.monotonic()
                if now >= self._next_claim:
                    self._next_claim = now + max(0.05, self.claim_idle_ms / 2000)
                    await self._reclaim()
                if now >= self._next_report:
                    self._next_report = now + 2.0
                    await self.report()
                if self.retention_ms and now >= self._next_prune:
                    self._next_prune = now + self.prune_every_s
                    await self.prune()
                pending = self._own_pending
                got = await self._read("0" if pending else ">", 0 if burst or pending else self.block_ms)
                if pending and not got:
                    self._own_pending = False
                    continue
                if got:
                    await self._write(got)
                elif burst:
                    return
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisError, SQLAlchemyError, OSError, TimeoutError) as exc:
                self.stats.failures += 1
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    grouped = False
                log.warning("signal sink round failed (retrying): %s", exc)
                try:
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                except TimeoutError:
                    pass
                delay = min(5.0, delay * 2)
                self._own_pending = True

    async def _read(self, cursor: str, block_ms: int) -> list[tuple[str, dict[Any, Any]]]:
        reply = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: cursor}, count=self.batch,
                                            block=block_ms or None)
        out: list[tuple[str, dict[Any, Any]]] = []
        streams: list[Any] = list(reply or [])
        for _stream, entries in streams:
            for raw_id, fields in entries:
                eid = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                if fields:  # an entry deleted while pending comes back without fields: just ack it
                    out.append((eid, fields))
                else:
                    await self.redis.xack(self.stream, self.group, eid)
        return out

    async def _reclaim(self) -> None:
        """Take over entries idle on a consumer that went away (the next reads of our own pending, "0",
        deliver them; redis-py answers ``justid`` claims with the ids only)."""
        ids = await self.redis.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                          start_id="0-0", count=1000, justid=True)
        if ids:
            self.stats.reclaimed += len(ids)
            self._own_pending = True

    async def _write(self, entries: list[tuple[str, dict[Any, Any]]]) -> None:
        rows: list[dict[str, Any]] = []
        written: list[Signal] = []
        oldest = 0
        for eid, fields in entries:
            raw = fields.get(b"d", fields.get("d"))
            try:
                batch = decode_batch(raw if isinstance(raw, bytes) else str(raw or "").encode())
            except ValueError as exc:
                self.stats.malformed += 1
                log.warning("signal entry %s skipped: %s", eid, exc)
                continue
            await self._enrich(batch)
            written.extend(batch)
            if batch:
                first = min(s.at_ms for s in batch)
                oldest = first if not oldest else min(oldest, first)
            for i, s in enumerate(batch):
                product, sku = self._products.get(s.sale_id, ("", "")) if s.sale_id else ("", "")
                rows.append({"entry": eid, "idx": i, "kind": s.kind, "user_id": s.user_id, "room_id": s.room_id,
                             "sale_id": s.sale_id, "product_id": s.product_id or product, "sku": sku, "ref": s.ref,
                             "detail": s.detail, "value": s.value, "at_ms": s.at_ms})
        if rows:
            ins = self.store._insert
            # the rows as parameters of one statement (executemany): compiled once, not a VALUES list per chunk
            # (measured: 10-25x less CPU per row on SQLite and PostgreSQL; docs/BENCHMARKS.md)
            stmt = ins(signals).on_conflict_do_nothing(index_elements=[signals.c.entry, signals.c.idx])
            async with self.store.engine.begin() as conn:
                for i in range(0, len(rows), _CHUNK):
                    await conn.execute(stmt, rows[i:i + _CHUNK])
        ids = [eid for eid, _ in entries]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()
        self.stats.entries += len(ids)
        self.stats.rows += len(rows)
        if oldest:
            self.stats.lag_ms = max(0, int(time.time() * 1000) - oldest)
            self._lags.append(self.stats.lag_ms)
        if self.on_batch is not None and written:
            try:
                await self.on_batch(written)
            except Exception as exc:  # derived data (scores): never stalls the sink; the rows are in SQL
                log.warning("signal sink: on_batch failed: %s", exc)

    def lag_percentiles(self) -> tuple[int, int]:
        """(p50, p99) of the recent batches' lag: a signal's age when its batch committed, ms."""
        if not self._lags:
            return 0, 0
        ordered = sorted(self._lags)
        return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, (len(ordered) * 99) // 100)]

    async def report(self) -> None:
        """This sink's stats in Redis (``ls:signal-sink:stats``, field per consumer, JSON; expires after 60 s
        without a report): benchmarks and operators read the lag and the counts there."""
        p50, p99 = self.lag_percentiles()
        st = self.stats
        value = json.dumps({"entries": st.entries, "rows": st.rows, "malformed": st.malformed,
                            "failures": st.failures, "lag_ms": st.lag_ms, "lag_p50_ms": p50, "lag_p99_ms": p99,
                            "at": int(time.time() * 1000)})
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(SINK_STATS, self.consumer, value)
            pipe.expire(SINK_STATS, 60)
            await pipe.execute()

    async def _enrich(self, batch: list[Signal]) -> None:
        missing = {s.sale_id for s in batch if s.sale_id and s.sale_id not in self._products}
        if not missing:
            return
        from .pools import pools  # the pools table (a channel hold's sale is its pool's bucket)
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(select(sales.c.sale_id, sales.c.product_id, sales.c.sku)
                                       .where(sales.c.sale_id.in_(list(missing))))).all()
            for sale_id, product, sku in rows:
                self._products[sale_id] = (product, sku)
            buckets = {sid[:-len(POOL_BUCKET_SUFFIX)]: sid for sid in missing
                       if sid.endswith(POOL_BUCKET_SUFFIX) and sid not in self._products}
            if buckets:
                for pool_id, sku in (await conn.execute(select(pools.c.pool_id, pools.c.sku)
                                                        .where(pools.c.pool_id.in_(list(buckets))))).all():
                    self._products[buckets[pool_id]] = ("", sku)
        if len(self._products) > 100_000:
            self._products.clear()

    async def prune(self) -> int:
        """Delete signals older than the retention; returns how many."""
        cutoff = int(time.time() * 1000) - self.retention_ms
        async with self.store.engine.begin() as conn:
            n = (await conn.execute(delete(signals).where(signals.c.at_ms < cutoff))).rowcount or 0
        self.stats.pruned += n
        return n

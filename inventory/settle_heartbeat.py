"""Settlement heartbeats: each settlement worker says, every few seconds, that it is alive, what it has
done and how far settlement lags; ``livesale settle --check`` reads them (docs/OPERATIONS.md).

Keys (``inventory/keys.py``), all in the hash slot ``{settle}`` (one shard on Redis Cluster):
``ls:{settle}:alive:<consumer>`` HASH per worker, expiring 3 intervals after its last beat, with
``consumer pid host started_ms beat_ms interval_ms settled batches dead_lettered pending behind lag_ms
streams``; ``ls:{settle}:workers`` ZSET consumer -> last beat ms, so readers find the hashes without SCAN.

The lag is the whole consumer group's (every worker measures the same): ``pending`` entries delivered and
not yet acked, ``behind`` entries not yet delivered (XINFO GROUPS ``lag``), ``lag_ms`` the age of the
oldest of either (entry ids are Redis time at XADD). ``verdict`` (pure) turns beats into the check's
answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import keys as K
from .outbox import text as _s

__all__ = ["Lag", "Beat", "SettleHeartbeat", "measure_lag", "read_beats", "verdict", "EXPIRE_BEATS"]

log = logging.getLogger(__name__)

EXPIRE_BEATS = 3                 # a worker silent for this many intervals is dead
_FORGET_AFTER_MS = 3_600_000     # registry members older than this are pruned (their hash expired long ago)


class _Counted(Protocol):
    """What the heartbeat reads of the worker (``SettlementWorker``)."""

    consumer: str
    group: str
    registry: str
    stats: Any


@dataclass(frozen=True, slots=True)
class Lag:
    pending: int = 0   # delivered to a worker, not acked
    behind: int = 0    # not yet delivered to any worker
    lag_ms: int = 0    # age of the oldest entry pending or not yet delivered (0: nothing waits)
    streams: int = 0   # outbox streams in the registry


def _ms(entry_id: Any) -> int | None:
    return int(_s(entry_id).partition("-")[0]) if entry_id is not None else None


async def measure_lag(redis: Redis, *, group: str = K.SETTLE_GROUP, registry: str = K.OUTBOX_REGISTRY,
                      now_ms: int) -> Lag:
    """The consumer group's lag over every registered outbox stream: two pipelined rounds."""
    keys = sorted(_s(m) for m in await redis.smembers(registry))
    if not keys:
        return Lag()
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.xinfo_groups(key)
        infos = await pipe.execute(raise_on_error=False)
    pending = behind = 0
    probes: list[str] = []  # what each reply of the second round is: "pending" | "next" | "first" | "len"
    async with redis.pipeline(transaction=False) as pipe:
        for key, info in zip(keys, infos, strict=True):
            if isinstance(info, Exception):  # the stream expired (a retired sale): nothing waits in it
                continue
            groups = [{_s(k): v for k, v in g.items()} for g in info]
            g = next((g for g in groups if _s(g.get("name")) == group), None)
            if g is None:  # no worker has read it yet: all of it waits
                pipe.xrange(key, "-", "+", count=1)
                pipe.xlen(key)
                probes += ["first", "len"]
                continue
            if int(g["pending"]):
                pending += int(g["pending"])
                pipe.xpending(key, group)
                probes.append("pending")
            lag = g.get("lag")
            if lag is None or int(lag) > 0:  # None: Redis cannot tell (entries deleted); look
                behind += int(lag or 0)
                pipe.xrange(key, "(" + _s(g["last-delivered-id"]), "+", count=1)
                probes.append("next")
        replies = await pipe.execute(raise_on_error=False) if probes else []
    oldest: int | None = None
    for kind, reply in zip(probes, replies, strict=True):
        if isinstance(reply, Exception):
            continue
        if kind == "len":
            behind += int(reply)
            continue
        at = _ms(reply.get("min")) if kind == "pending" else (_ms(reply[0][0]) if reply else None)
        if at is not None:
            oldest = at if oldest is None else min(oldest, at)
    return Lag(pending, behind, max(0, now_ms - oldest) if oldest is not None else 0, len(keys))


async def _redis_ms(redis: Redis) -> int:
    sec, usec = await redis.time()
    return int(sec) * 1000 + int(usec) // 1000


class SettleHeartbeat:
    """Writes ``worker``'s heartbeat every ``interval_s`` until ``stop()``; ``forget()`` removes it (a clean
    stop: the worker is gone at once, not after 3 intervals). A failed beat is logged and retried at the
    next interval (the worker's own loop reports Redis outages)."""

    def __init__(self, redis: Redis, worker: _Counted, interval_s: float, *,
                 workers_key: str = K.SETTLE_WORKERS) -> None:
        self.redis, self.worker, self.interval_s = redis, worker, interval_s
        self.workers_key = workers_key
        self.key = K.settle_alive_key(worker.consumer)
        self.started_ms = int(time.time() * 1000)
        self._stop = asyncio.Event()
        self._failing = False

    async def beat(self) -> None:
        now = await _redis_ms(self.redis)
        lag = await measure_lag(self.redis, group=self.worker.group, registry=self.worker.registry, now_ms=now)
        stats = self.worker.stats
        interval_ms = int(self.interval_s * 1000)
        fields: Mapping[str, str | int] = {
            "consumer": self.worker.consumer, "pid": os.getpid(), "host": socket.gethostname(),
            "started_ms": self.started_ms, "beat_ms": now, "interval_ms": interval_ms,
            "settled": stats.settled, "batches": stats.batches, "dead_lettered": stats.dead_lettered,
            "pending": lag.pending, "behind": lag.behind, "lag_ms": lag.lag_ms, "streams": lag.streams,
        }
        async with self.redis.pipeline(transaction=False) as pipe:  # one slot: one shard, one round trip
            pipe.hset(self.key, mapping=dict(fields))  # type: ignore[arg-type]  # redis-py: invariant key type
            pipe.pexpire(self.key, EXPIRE_BEATS * interval_ms)
            pipe.zadd(self.workers_key, {self.worker.consumer: now})
            pipe.zremrangebyscore(self.workers_key, "-inf", now - _FORGET_AFTER_MS)
            await pipe.execute()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.beat()
                if self._failing:
                    log.info("settlement heartbeat %s written again", self.key)
                self._failing = False
            except (RedisError, OSError, TimeoutError) as exc:
                if not self._failing:
                    log.warning("settlement heartbeat not written (%s); retrying every %gs", type(exc).__name__,
                                self.interval_s)
                self._failing = True
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._stop.wait()
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    async def forget(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.key)
            pipe.zrem(self.workers_key, self.worker.consumer)
            await pipe.execute()


# -- reading (livesale settle --check) -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Beat:
    consumer: str
    pid: int
    host: str
    started_ms: int
    beat_ms: int
    interval_ms: int
    settled: int
    batches: int
    dead_lettered: int
    pending: int
    behind: int
    lag_ms: int
    streams: int

    @classmethod
    def parse(cls, raw: Mapping[Any, Any]) -> Beat | None:
        """A heartbeat hash as read; None when it is missing (expired) or incomplete."""
        f = {_s(k): _s(v) for k, v in raw.items()}
        try:
            return cls(consumer=f["consumer"], host=f["host"],
                       **{n: int(f[n]) for n in ("pid", "started_ms", "beat_ms", "interval_ms", "settled", "batches",
                                                 "dead_lettered", "pending", "behind", "lag_ms", "streams")})
        except (KeyError, ValueError):
            return None


async def read_beats(redis: Redis, *, workers_key: str = K.SETTLE_WORKERS) -> tuple[list[Beat], int]:
    """Every heartbeat still in Redis, and Redis time (ms)."""
    now = await _redis_ms(redis)
    consumers = [_s(c) for c in await redis.zrange(workers_key, 0, -1)]
    if not consumers:
        return [], now
    async with redis.pipeline(transaction=False) as pipe:
        for consumer in consumers:
            pipe.hgetall(K.settle_alive_key(consumer))
        raws = await pipe.execute()
    beats = [b for b in (Beat.parse(raw) for raw in raws) if b is not None]
    return beats, now


def verdict(beats: Sequence[Beat], now_ms: int, max_lag_s: float) -> tuple[bool, str]:
    """Healthy when at least one worker beat within its last 3 intervals and the lag (as the freshest
    beat measured it) is at most ``max_lag_s``; with a one-line reason either way."""
    alive = sorted((b for b in beats if now_ms - b.beat_ms <= EXPIRE_BEATS * b.interval_ms),
                   key=lambda b: b.beat_ms, reverse=True)
    if not alive:
        return False, ("unhealthy: no settlement worker alive (no heartbeat under "
                       f"{K.settle_alive_key('<consumer>')} in its last {EXPIRE_BEATS} intervals)")
    fresh = alive[0]
    lag_s = fresh.lag_ms / 1000
    workers = f"{len(alive)} worker{'s' if len(alive) != 1 else ''} alive ({', '.join(b.consumer for b in alive)})"
    waits = f"{fresh.pending} pending, {fresh.behind} not yet delivered, {fresh.streams} streams"
    if lag_s > max_lag_s:
        return False, f"unhealthy: settlement lags {lag_s:.1f} s, over the {max_lag_s:g} s bound ({waits}); {workers}"
    return True, f"ok: {workers}; lag {lag_s:.1f} s ({waits}); settled {sum(b.settled for b in alive)}"

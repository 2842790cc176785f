"""How far settlement is behind: read-only, from the outbox streams' consumer group and the dead letter.

Two pipelined rounds whatever the number of outbox streams (one ``XINFO GROUPS`` + ``XLEN`` per stream,
then ``XPENDING`` / one ``XRANGE`` entry for the streams that have something waiting), so a metrics
sampler or a health check may call it every few seconds. An entry id's first part is the Redis time
it was added (ms), so the oldest unsettled entry's age needs no extra field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from . import keys as K
from .outbox import text as _s

__all__ = ["SettleLag", "settle_lag"]


@dataclass(frozen=True, slots=True)
class SettleLag:
    now_ms: int               # Redis TIME when measured
    streams: int              # outbox streams registered
    pending: int              # delivered to a settlement worker, not acked yet
    undelivered: int          # not read by the settlement group yet
    oldest_ms: int | None     # when the oldest entry not settled yet was added (None: nothing waiting)
    dead_letter: int          # entries in the dead-letter stream

    @property
    def backlog(self) -> int:
        return self.pending + self.undelivered

    @property
    def age_s(self) -> float:
        """Age of the oldest entry not settled yet, seconds (0 when nothing waits)."""
        return 0.0 if self.oldest_ms is None else max(0, self.now_ms - self.oldest_ms) / 1000


def _ms(entry_id: Any) -> int:
    return int(_s(entry_id).partition("-")[0])


async def settle_lag(redis: Redis, *, group: str = K.SETTLE_GROUP, registry: str = K.OUTBOX_REGISTRY,
                     dead_letter: str = K.DEAD_LETTER) -> SettleLag:
    sec, usec = await redis.time()
    now_ms = int(sec) * 1000 + int(usec) // 1000
    keys = sorted(_s(m) for m in await redis.smembers(registry))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(dead_letter)
        for key in keys:
            pipe.xlen(key)
            pipe.xinfo_groups(key)
        first = await pipe.execute(raise_on_error=False)
    dead = first[0] if isinstance(first[0], int) else 0
    pending = undelivered = 0
    oldest: int | None = None
    follow: list[str] = []  # what the second round asks, per command: range / pending / after / unknown
    async with redis.pipeline(transaction=False) as pipe:
        for i, key in enumerate(keys):
            length, groups = first[1 + 2 * i], first[2 + 2 * i]
            if not isinstance(length, int) or not length:
                continue  # gone (retired) or empty
            info = None
            if isinstance(groups, list):
                for g in groups:
                    g = {_s(k): v for k, v in g.items()}
                    if _s(g["name"]) == group:
                        info = g
            if info is None:  # the group is not created yet: every entry waits
                undelivered += length
                pipe.xrange(key, count=1)
                follow.append("range")
                continue
            if int(info["pending"]):
                pending += int(info["pending"])
                pipe.xpending(key, group)
                follow.append("pending")
            lag = info.get("lag")
            if lag is None or int(lag):  # None: Redis cannot tell (a deleted entry): look
                pipe.xrange(key, min=f"({_s(info['last-delivered-id'])}", count=1)
                follow.append("after" if lag is not None else "unknown")
                undelivered += int(lag or 0)
        second = await pipe.execute(raise_on_error=False) if follow else []
    for kind, reply in zip(follow, second, strict=True):
        if isinstance(reply, Exception):
            continue
        at: int | None = None
        if kind == "pending":
            at = _ms(reply["min"]) if reply.get("min") is not None else None
        elif reply:
            at = _ms(reply[0][0])
            undelivered += kind == "unknown"  # the group's lag was unknown: at least this one
        if at is not None and (oldest is None or at < oldest):
            oldest = at
    return SettleLag(now_ms, len(keys), pending, undelivered, oldest, dead)

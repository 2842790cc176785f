"""Who is online, and in which room: each gateway reports the viewers connected to it every 10 s, and each
second in between the ones who joined since its last report (stream_gateway/ticker.py).

A report writes ``user -> room`` into the hash of the current 15 s bucket (``ls:online:<bucket>``, expiring
45 s after its last write); ``where`` reads the current and the previous bucket, so a viewer reported in the
last 15-30 s is online. No entry is ever deleted: a viewer who left is offline once two buckets passed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from redis.asyncio import Redis

from inventory.keys import PREFIX

__all__ = ["Online", "online_key", "BUCKET_S", "KEEP_S", "REPORT_EVERY_S"]

BUCKET_S = 15         # width of one bucket
KEEP_S = 45           # a bucket's hash expires this long after its last report
REPORT_EVERY_S = 10   # how often each gateway reports (stream_gateway's ticker)
_CHUNK = 1000         # fields per HSET / HMGET


def online_key(bucket: int) -> str:
    return f"{PREFIX}:online:{bucket}"


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Online:
    def __init__(self, redis: Redis, *, bucket_s: int = BUCKET_S, keep_s: int = KEEP_S) -> None:
        self.redis = redis
        self.bucket_s = bucket_s
        self.keep_s = keep_s

    def _bucket(self, now_s: float | None) -> int:
        return int((time.time() if now_s is None else now_s) // self.bucket_s)

    async def report(self, gateway_id: str, users_by_room: Mapping[str, Iterable[str]],
                     now_s: float | None = None) -> int:
        """This gateway's viewers by room (``gateway_id`` for the caller's logs; the hash has one field per
        user: a viewer in two rooms is kept in one of them). Returns how many fields were written."""
        pairs = [(user, room) for room, users in users_by_room.items() for user in users if user]
        if not pairs:
            return 0
        key = online_key(self._bucket(now_s))
        async with self.redis.pipeline(transaction=False) as p:
            for i in range(0, len(pairs), _CHUNK):
                p.hset(key, mapping=dict(pairs[i:i + _CHUNK]))
            p.expire(key, self.keep_s)
            await p.execute()
        return len(pairs)

    async def where(self, users: Sequence[str], now_s: float | None = None) -> dict[str, str]:
        """The online users among ``users`` and the room each is in (the latest report wins)."""
        if not users:
            return {}
        bucket = self._bucket(now_s)
        chunks = [list(users[i:i + _CHUNK]) for i in range(0, len(users), _CHUNK)]
        async with self.redis.pipeline(transaction=False) as p:
            for chunk in chunks:
                p.hmget(online_key(bucket - 1), chunk)
                p.hmget(online_key(bucket), chunk)
            got = await p.execute()
        out: dict[str, str] = {}
        for n, chunk in enumerate(chunks):
            previous, current = got[2 * n], got[2 * n + 1]
            for user, before, now in zip(chunk, previous, current, strict=True):
                room = now if now is not None else before
                if room is not None:
                    out[user] = _text(room)
        return out

"""The cross-process room bus over Redis: sequenced events, ambient events, user messages, loading.

Sequenced events go through ``publish.lua`` (seq + log + state + SPUBLISH in one script), so every
gateway receives them in seq order on the room's channel. Room channels are sharded channels (SPUBLISH /
SSUBSCRIBE, Redis 7+) in both modes: on a cluster a room's messages stay on the shard of its hash tag.
Channel payloads are prefixed with one byte: ``E`` sequenced event json, ``A`` ambient json, ``U`` user-targeted json.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from typing import Any

import orjson
from redis.asyncio import Redis

from inventory.keys import room_keys
from .room_state import COMMENTS_KEPT, RoomState

__all__ = ["RoomBus"]

_PUBLISH = (importlib.resources.files("commerce") / "lua" / "publish.lua").read_text()


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else v


class RoomBus:
    def __init__(self, redis: Redis, replay_keep: int = 1024, *, retain_room_s: int = 7 * 86400,
                 retain_ended_s: int = 3600) -> None:
        """``retain_room_s``: a room's keys expire this long after its last activity (every publish,
        comment, like, viewer report and funnel flush refreshes it); ``retain_ended_s``: the window
        of an ended room's keys (``end_live``)."""
        self.redis = redis
        self.replay_keep = replay_keep
        self.retain_room_ms = retain_room_s * 1000
        self.retain_ended_ms = retain_ended_s * 1000
        self._publish = redis.register_script(_PUBLISH)

    async def load_script(self) -> None:
        await self.redis.script_load(self._publish.script)

    async def publish(self, room_id: str, event: Mapping[str, Any] | None,
                      state: dict[str, Any] | None = None, once: str = "", ended: bool | None = None) -> int:
        """Publish a sequenced event (and/or state changes). Returns its seq, 0 if none was published.

        ``state`` maps state-hash fields to a json-able value, or None to delete the field. Every call
        refreshes the TTL of all the room's keys; ``ended`` True / False marks the room ended (its keys
        get the ended window from now on) / live again.
        """
        k = room_keys(room_id)
        flag = "" if ended is None else "1" if ended else "0"
        args: list[Any] = [k.channel, orjson.dumps(event) if event else "", self.replay_keep, once,
                           self.retain_room_ms, self.retain_ended_ms, flag, len(state or {})]
        for f, v in (state or {}).items():
            args += [f, "" if v is None else orjson.dumps(v)]
        seq, _epoch = await self._publish(keys=k.for_publish, args=args)
        return int(seq)

    async def state_field(self, room_id: str, field: str) -> Any:
        """One field of the room's state hash, decoded (None when absent)."""
        raw = await self.redis.hget(room_keys(room_id).state, field)
        return orjson.loads(raw) if raw else None

    async def ambient(self, room_id: str, payload: dict[str, Any]) -> None:
        await self.redis.spublish(room_keys(room_id).channel, b"A" + orjson.dumps(payload))

    async def comment(self, room_id: str, comment: dict[str, Any]) -> None:
        k = room_keys(room_id)
        raw = orjson.dumps(comment)
        async with self.redis.pipeline(transaction=True) as p:
            p.lpush(k.comments, raw)
            p.ltrim(k.comments, 0, COMMENTS_KEPT - 1)
            p.pexpire(k.comments, self.retain_room_ms)
            p.spublish(k.channel, b"A" + orjson.dumps({"k": "c", "c": comment}))
            await p.execute()

    async def to_user(self, room_id: str, user: str, message: dict[str, Any]) -> None:
        await self.redis.spublish(room_keys(room_id).channel, b"U" + orjson.dumps({"u": user, "m": message}))

    async def add_likes(self, room_id: str, n: int) -> int:
        k = room_keys(room_id)
        async with self.redis.pipeline(transaction=False) as p:
            p.incrby(k.likes, n)
            p.pexpire(k.likes, self.retain_room_ms)
            total = int((await p.execute())[0])
        await self.redis.spublish(k.channel, b"A" + orjson.dumps({"k": "l", "n": total}))
        return total

    async def count(self, room_id: str, field: str, n: int = 1) -> None:
        k = room_keys(room_id)
        async with self.redis.pipeline(transaction=False) as p:
            p.hincrby(k.funnel, field, n)
            p.pexpire(k.funnel, self.retain_room_ms)
            await p.execute()

    async def funnel(self, room_id: str) -> dict[str, int]:
        raw = await self.redis.hgetall(room_keys(room_id).funnel)
        return {_text(a): int(b) for a, b in raw.items()}

    async def snapshot(self, room_id: str) -> dict[str, Any] | None:
        """What only Redis knows of a room, for ``inventory.archive``: likes, funnel counts, events
        published and the kept comments (oldest first); None when the room has no keys left."""
        k = room_keys(room_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hget(k.meta, "seq")
            p.exists(k.meta, k.comments, k.likes, k.funnel)
            p.get(k.likes)
            p.hgetall(k.funnel)
            p.lrange(k.comments, 0, COMMENTS_KEPT - 1)
            seq, present, likes, funnel, comments = await p.execute()
        if not present:
            return None
        return {"events": int(seq or 0), "likes": int(likes or 0),
                "funnel": {_text(a): int(b) for a, b in funnel.items()},
                "comments": [orjson.loads(c) for c in reversed(comments)]}

    async def new_epoch(self, room_id: str) -> None:
        """Start the room's sequence again under a new epoch (the next publish picks it): every gateway
        that sees it resyncs from the room state, and no client resumes across it (commerce/recovery.py,
        after the room state was rebuilt from SQL). The replay log of the old epoch goes with it."""
        k = room_keys(room_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hdel(k.meta, "epoch", "seq")
            p.delete(k.log)
            await p.execute()

    async def load(self, room_id: str) -> tuple[RoomState, list[tuple[int, bytes]]]:
        """Atomically read seq/epoch, state, recent comments, likes and the replay log."""
        k = room_keys(room_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hmget(k.meta, "seq", "epoch")
            p.hgetall(k.state)
            p.lrange(k.comments, 0, COMMENTS_KEPT - 1)
            p.get(k.likes)
            p.lrange(k.log, 0, -1)
            (seq, epoch), state, comments, likes, log = await p.execute()
        rs = RoomState.load(
            room_id, _text(epoch) or "", int(seq or 0), {_text(a): _text(b) for a, b in state.items()},
            [_text(c) for c in comments], int(likes or 0),
        )
        ring = []
        for raw in log:
            data = raw if isinstance(raw, bytes) else raw.encode()
            ring.append((orjson.loads(data)["seq"], data))
        return rs, ring

    async def report_viewers(self, room_id: str, gateway_id: str, count: int, now_ms: int) -> int:
        """Record this gateway's local viewers; return the room total over live gateways."""
        k = room_keys(room_id)
        async with self.redis.pipeline(transaction=False) as p:
            if count:
                p.hset(k.viewers, gateway_id, f"{count}:{now_ms}")
            else:
                p.hdel(k.viewers, gateway_id)
            p.hgetall(k.viewers)
            if count:
                p.pexpire(k.viewers, self.retain_room_ms)
            allv = (await p.execute())[1]
        total, stale = 0, []
        for gw, val in allv.items():
            c, _, ts = _text(val).partition(":")
            if now_ms - int(ts or 0) > 10_000:
                stale.append(gw)
            else:
                total += int(c)
        if stale:
            await self.redis.hdel(k.viewers, *stale)
        return total

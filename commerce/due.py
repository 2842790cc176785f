"""Deadlines of the interaction features, kept in Redis so that any process finishes them: a poll's
close, a coupon drop's claim window, a draw's entry window and its redraw rounds. One sorted set
(``INTERACTION_DUE``: "<kind>:<id>" -> due ms, Redis TIME); every gateway and settlement process
runs ``run_due`` a few times a second (server/app.py ``Upkeep``). Handlers are idempotent (their
scripts decide once), so two processes handling the same deadline publish one result. A handler
returns the next deadline of the same item (a draw's next redraw round) or None when it is done."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from inventory.keys import INTERACTION_DUE
from inventory.scripts import Inventory

__all__ = ["DueTimers", "Handler"]

log = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[int | None]]  # (id) -> the next due ms, or None: done


class DueTimers:
    def __init__(self, redis: Redis, inventory: Inventory) -> None:
        self.redis = redis
        self.inventory = inventory
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    async def schedule(self, kind: str, ident: str, at_ms: int) -> None:
        await self.redis.zadd(INTERACTION_DUE, {f"{kind}:{ident}": at_ms})

    async def run_due(self, limit: int = 100) -> int:
        """Handle what is due now; returns how many were handled."""
        now = await self.inventory.now_ms()
        due = await self.redis.zrangebyscore(INTERACTION_DUE, "-inf", now, start=0, num=limit)
        done = 0
        for raw in due:
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            kind, _, ident = member.partition(":")
            handler = self._handlers.get(kind)
            if handler is None:
                continue
            try:
                nxt = await handler(ident)
            except Exception as exc:  # stays due: the next round retries
                log.warning("deadline %s failed: %s", member, exc)
                continue
            if nxt is None:
                await self.redis.zrem(INTERACTION_DUE, member)
            else:
                await self.redis.zadd(INTERACTION_DUE, {member: nxt})
            done += 1
        return done

"""The settlement worker's janitor: entries stuck in the consumer group get moved on.

Entries delivered more than ``max_deliveries`` times go to the dead-letter stream, unless their
order is already in SQL (settled by a worker that died between commit and ack: then the buyer is
notified and the entry acked). Entries idle longer than ``claim_idle_ms`` in a dead consumer's
pending list are claimed (XAUTOCLAIM) and settled here. Mixed into ``SettlementWorker``, whose
state (Redis, store, group, batch processing) it uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .outbox import parse_entry, text as _s
from .store import OrderRecord, Store

if TYPE_CHECKING:
    import asyncio

    from .settlement import Entry, SettlementStats

__all__ = ["OutboxJanitor"]

log = logging.getLogger(__name__)

_PAGE = 100          # XPENDING page size
_MAX_PAGES = 10      # per stream and janitor pass


class OutboxJanitor:
    redis: Redis
    store: Store
    group: str
    consumer: str
    batch: int
    claim_idle_ms: int
    max_deliveries: int
    dead_letter: str
    stats: SettlementStats
    _cursors: dict[str, str]
    _poison: dict[tuple[str, str], str]
    _stop: asyncio.Event

    if TYPE_CHECKING:  # provided by SettlementWorker
        async def _process(self, entries: Sequence[Entry]) -> None: ...
        async def _notify(self, records: list[OrderRecord]) -> None: ...
        async def _trim(self, key: str) -> None: ...

    async def _janitor(self) -> int:
        """Dead-letter over-delivered entries, then reclaim idle ones; returns entries handled."""
        handled = 0
        for key in list(self._cursors):
            if self._stop.is_set():
                break
            try:
                handled += await self._dead_letter_overdue(key)
                handled += await self._reclaim(key)
            except ResponseError as exc:  # the stream expired (a retired sale's outbox): forget it
                if "NOGROUP" not in str(exc):
                    raise
                self._cursors.pop(key, None)
        return handled

    async def _dead_letter_overdue(self, key: str) -> int:
        moved, start = 0, "-"
        for _ in range(_MAX_PAGES):
            rows = await self.redis.xpending_range(key, self.group, min=start, max="+", count=_PAGE,
                                                   idle=self.claim_idle_ms)
            for row in rows:
                if int(row["times_delivered"]) > self.max_deliveries:
                    await self._move_to_dead_letter(key, _s(row["message_id"]), int(row["times_delivered"]))
                    moved += 1
            if len(rows) < _PAGE:
                break
            start = "(" + _s(rows[-1]["message_id"])
        if moved:
            await self._trim(key)
        return moved

    async def _move_to_dead_letter(self, key: str, entry_id: str, deliveries: int) -> None:
        found = await self.redis.xrange(key, entry_id, entry_id)
        fields = {_s(k): _s(v) for k, v in (found[0][1] or {}).items()} if found else {}
        if fields and await self._ack_if_settled(key, entry_id, fields, deliveries):
            return
        reason = self._poison.pop((key, entry_id), None) or (
            f"delivered {deliveries} times without settling" if found else "entry missing from the stream")
        extra = {"source_stream": key, "source_id": entry_id, "reason": reason, "deliveries": str(deliveries)}
        payload = {("field." + k if k in extra else k): v for k, v in fields.items()}
        payload.update(extra)
        await self.redis.xadd(self.dead_letter, payload)  # type: ignore[arg-type]  # redis-py: invariant dict/list of its key types
        await self.redis.xack(key, self.group, entry_id)
        self.stats.dead_lettered += 1
        log.error("settlement: entry %s %s moved to %s after %d deliveries: %s",
                  key, entry_id, self.dead_letter, deliveries, reason)

    async def _ack_if_settled(self, key: str, entry_id: str, fields: dict[str, str], deliveries: int) -> bool:
        """An over-delivered entry whose order is already in SQL was settled (its workers died between
        commit and ack): notify its buyer (``on_committed``, errors propagate: left pending) and ack
        it, rather than dead-lettering it and never sending its order_confirmed."""
        try:
            order_id = parse_entry(key, entry_id, fields, 0).order_id
        except ValueError:
            return False
        stored = (await self.store.get_orders([order_id])).get(order_id)
        if stored is None:
            return False
        await self._notify([stored])
        await self.redis.xack(key, self.group, entry_id)
        self.stats.settled += 1
        log.warning("settlement: entry %s %s delivered %d times was already settled; notified and acked",
                    key, entry_id, deliveries)
        return True

    async def _reclaim(self, key: str) -> int:
        claimed, start = 0, "0-0"
        for _ in range(_MAX_PAGES):
            reply = await self.redis.xautoclaim(key, self.group, self.consumer, self.claim_idle_ms,
                                                start_id=start, count=self.batch)
            # Redis 7: [next, entries, deleted ids]; 6.2: [next, entries] (deleted entries as nil)
            nxt, items = _s(reply[0]), reply[1]
            entries = [(key, _s(i), f) for i, f in items if i is not None]
            if entries:
                self.stats.reclaimed += len(entries)
                log.info("settlement: reclaimed %d idle entries of %s", len(entries), key)
                await self._process(entries)
                claimed += len(entries)
            if nxt == "0-0" or self._stop.is_set():
                break
            start = nxt
        return claimed


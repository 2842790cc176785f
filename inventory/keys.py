"""Every Redis key and pub/sub channel livesale uses, built in one place.

This module sits in the lowest package so every layer can use it (``server`` -> ``stream_gateway``
-> ``commerce`` -> ``inventory``). The load generators keep their own copy of the sale layout they
need (``loadtest/engine.py``); tests/unit/test_keys.py checks that copy against this module.

- All keys of one sale share the hash tag ``{sale:<id>}`` and all keys of one room the tag
  ``{room:<id>}``, so every script (which touches the keys of one sale, or of one room) runs on
  Redis Cluster unchanged.
- The registries are global keys, read by the settlement worker and the reaper, never by a script.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PREFIX", "SaleKeys", "sale_keys", "sale_id_of_outbox", "RoomKeys", "room_keys",
    "OUTBOX_REGISTRY", "SALES_REGISTRY", "DEAD_LETTER", "SETTLE_GROUP",
]

PREFIX = "ls"
OUTBOX_REGISTRY = f"{PREFIX}:outboxes"   # SET of outbox stream keys the settlement worker reads
SALES_REGISTRY = f"{PREFIX}:sales"       # SET of armed sale ids (for the reaper)
DEAD_LETTER = f"{PREFIX}:dead-letter"    # STREAM of settlement entries that kept failing
SETTLE_GROUP = "settle"                  # consumer group on every outbox stream
RECONCILE_LOCK = f"{PREFIX}:reconcile:lock"  # STRING: which process runs this round of the comparison


# -- sales (inventory/lua/*.lua) -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SaleKeys:
    sale_id: str
    sale: str        # HASH config + counters: available, held, sold, allocated, starts_at, ends_at, ...
    buyers: str      # HASH user -> units held or bought
    holds: str       # HASH hold id -> hold record (inventory/holds.py documents its fields)
    idem: str        # HASH user|request id -> the remembered answer of a reserve request
    deadlines: str   # ZSET hold id -> pay-by ms (the reaper's work list)
    outbox: str      # STREAM of confirmed orders for settlement

    @property
    def for_reserve(self) -> list[str]:
        return [self.sale, self.buyers, self.holds, self.idem, self.deadlines]

    @property
    def for_confirm(self) -> list[str]:
        return [self.sale, self.buyers, self.holds, self.deadlines, self.outbox]

    @property
    def for_release(self) -> list[str]:
        return [self.sale, self.buyers, self.holds, self.deadlines]

    @property
    def all(self) -> list[str]:
        return [self.sale, self.buyers, self.holds, self.idem, self.deadlines, self.outbox]


def sale_keys(sale_id: str) -> SaleKeys:
    tag = f"{PREFIX}:{{sale:{sale_id}}}"
    return SaleKeys(sale_id=sale_id, sale=f"{tag}:sale", buyers=f"{tag}:buyers", holds=f"{tag}:holds",
                    idem=f"{tag}:idem", deadlines=f"{tag}:deadlines", outbox=f"{tag}:outbox")


def sale_id_of_outbox(stream_key: str) -> str:
    start = stream_key.index("{sale:") + len("{sale:")
    return stream_key[start:stream_key.index("}", start)]


# -- rooms (commerce/lua/publish.lua, commerce/room_bus.py) -------------------------------------------------

@dataclass(frozen=True, slots=True)
class RoomKeys:
    room_id: str
    channel: str    # pub/sub channel: E<event json> | A<ambient json> | U<user-targeted json>
    meta: str       # HASH seq, epoch
    log: str        # LIST of the last N sequenced events (replay for resume)
    state: str      # HASH field -> json (room, pinned, product:<id>, sale:<id>, hidden:<id>, muted:<id>)
    once: str       # SET of dedup names (sale open/close published once across gateways)
    comments: str   # LIST of recent comments, newest first
    likes: str      # STRING counter
    viewers: str    # HASH gateway id -> "count:ms"
    funnel: str     # HASH tapped / reserved / paid counters (dashboard)

    @property
    def for_publish(self) -> list[str]:
        """publish.lua: the four it writes, then the four whose TTL it refreshes (all of the room's keys)."""
        return [self.meta, self.log, self.state, self.once, self.comments, self.likes, self.viewers, self.funnel]


def room_keys(room_id: str) -> RoomKeys:
    tag = f"{PREFIX}:room:{{room:{room_id}}}"
    return RoomKeys(room_id=room_id, channel=f"{tag}:ch", meta=f"{tag}:meta", log=f"{tag}:log",
                    state=f"{tag}:state", once=f"{tag}:once", comments=f"{tag}:comments",
                    likes=f"{tag}:likes", viewers=f"{tag}:viewers", funnel=f"{tag}:funnel")

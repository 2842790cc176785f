"""Every Redis key and pub/sub channel livesale uses, built in one place.

This module sits in the lowest package so every layer can use it (``server`` -> ``stream_gateway``
-> ``commerce`` -> ``inventory``). The load generators keep their own copy of the sale layout they
need (``loadtest/engine.py``); tests/unit/test_keys.py checks that copy against this module.

- All keys of one sale share the hash tag ``{sale:<id>}`` and all keys of one room the tag
  ``{room:<id>}``, so every script (which touches the keys of one sale, or of one room) runs on
  Redis Cluster unchanged. A sale drawn from a stock pool (id ``<pool>--<suffix>``) and the pool's
  own bucket (``<pool>--pool``) share the pool's tag ``{pool:<pool>}``: a move between pool and sale
  is one atomic script (docs/ARCHITECTURE.md, "Stock pools").
- The registries are global keys, read by the settlement worker and the reaper, never by a script.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PREFIX", "SaleKeys", "sale_keys", "sale_id_of_outbox", "RoomKeys", "room_keys",
    "OUTBOX_REGISTRY", "SALES_REGISTRY", "DEAD_LETTER", "SETTLE_GROUP", "RECONCILE_LOCK", "POOL_SEP", "pool_of_sale",
    "POOLS_REGISTRY", "PoolKeys", "pool_keys", "pool_bucket_id", "POOL_BUCKET_SUFFIX", "user_holds_key",
    "FAMILY_SEP", "GROUP_PREFIX", "slot_family", "variant_group", "attribution_key", "share_rate_key",
    "bucket_transfer_keys", "SETTLE_WORKERS", "settle_alive_key",
]

PREFIX = "ls"
OUTBOX_REGISTRY = f"{PREFIX}:outboxes"   # SET of outbox stream keys the settlement worker reads
SALES_REGISTRY = f"{PREFIX}:sales"       # SET of armed sale ids (for the reaper)
DEAD_LETTER = f"{PREFIX}:dead-letter"    # STREAM of settlement entries that kept failing
SETTLE_GROUP = "settle"                  # consumer group on every outbox stream
RECONCILE_LOCK = f"{PREFIX}:reconcile:lock"  # STRING: which process runs this round of the comparison
# settlement heartbeats (inventory/settle_heartbeat.py), all in the hash slot {settle}: a HASH per worker
# expiring 3 beats after its last, and a ZSET consumer -> last beat ms to find them without SCAN
SETTLE_WORKERS = f"{PREFIX}:{{settle}}:workers"


def settle_alive_key(consumer: str) -> str:
    """HASH: one settlement worker's heartbeat (consumer, pid, host, started, beat ms, counters, lag)."""
    return f"{PREFIX}:{{settle}}:alive:{consumer}"


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
    # a pool-backed sale (and a pool's bucket): HASH user -> units held or bought of the pool's SKU in every
    # room and channel, for the pool's optional per-user limit per SKU (the sale's `sku_limit`); '' otherwise
    sku_buyers: str = ""

    @property
    def for_reserve(self) -> list[str]:
        keys = [self.sale, self.buyers, self.holds, self.idem, self.deadlines]
        return keys + [self.sku_buyers] if self.sku_buyers else keys

    @property
    def for_confirm(self) -> list[str]:
        keys = [self.sale, self.buyers, self.holds, self.deadlines, self.outbox]
        return keys + [self.sku_buyers] if self.sku_buyers else keys

    @property
    def for_release(self) -> list[str]:
        keys = [self.sale, self.buyers, self.holds, self.deadlines]
        return keys + [self.sku_buyers] if self.sku_buyers else keys

    @property
    def all(self) -> list[str]:
        return [self.sale, self.buyers, self.holds, self.idem, self.deadlines, self.outbox]


POOL_SEP = "--"  # "<pool id>--<rest>": a sale drawn from a pool, its keys in the pool's hash slot


def pool_of_sale(sale_id: str) -> str | None:
    """The pool whose hash slot holds a sale's keys: ``<pool id>--...`` sales (pool-backed sales and a
    pool's own bucket) live with their pool, so pool <-> sale moves are one script; others: None."""
    pool, sep, rest = sale_id.partition(POOL_SEP)
    return pool if sep and pool and rest else None


FAMILY_SEP = "__"  # "<product>__<variant>": the pools of one product's variants share the product's slot
GROUP_PREFIX = "g-"  # "<pool>--g-<hex>": the sales of one variant sale (one per variant), one buyers hash


def slot_family(pool_id: str) -> str:
    """The hash-slot family of a pool: a variant pool ``<product>__<variant>`` lives with its product's
    other variants (so a sale of several variants is one atomic script); any other pool, alone."""
    family, sep, variant = pool_id.partition(FAMILY_SEP)
    return family if sep and family and variant else pool_id


def variant_group(sale_id: str) -> str | None:
    """The variant sale a sale belongs to (``<family>:<g-suffix>``), or None for a sale of one SKU."""
    pool = pool_of_sale(sale_id)
    if pool is None:
        return None
    suffix = sale_id[len(pool) + len(POOL_SEP):]
    return f"{slot_family(pool)}:{suffix}" if suffix.startswith(GROUP_PREFIX) else None


def sale_keys(sale_id: str) -> SaleKeys:
    pool = pool_of_sale(sale_id)
    if pool is None:
        tag = f"{PREFIX}:{{sale:{sale_id}}}"
        buyers = f"{tag}:buyers"
    else:
        family = slot_family(pool)
        tag = f"{PREFIX}:{{pool:{family}}}:{sale_id}"
        group = variant_group(sale_id)
        # the variants of one sale count a buyer's units together: the per-user limit holds across the sale
        buyers = f"{PREFIX}:{{pool:{family}}}:group:{group.split(':', 1)[1]}:buyers" if group else f"{tag}:buyers"
        pool_tag = f"{PREFIX}:{{pool:{pool}}}" if family == pool else f"{PREFIX}:{{pool:{family}}}:{pool}"
        return SaleKeys(sale_id=sale_id, sale=f"{tag}:sale", buyers=buyers, holds=f"{tag}:holds",
                        idem=f"{tag}:idem", deadlines=f"{tag}:deadlines", outbox=f"{tag}:outbox",
                        sku_buyers=f"{pool_tag}:sku-buyers")
    return SaleKeys(sale_id=sale_id, sale=f"{tag}:sale", buyers=buyers, holds=f"{tag}:holds",
                    idem=f"{tag}:idem", deadlines=f"{tag}:deadlines", outbox=f"{tag}:outbox")


def sale_id_of_outbox(stream_key: str) -> str:
    if "{pool:" in stream_key:  # ls:{pool:<pool>}:<sale id>:outbox
        start = stream_key.index("}:") + 2
        return stream_key[start:stream_key.rindex(":outbox")]
    start = stream_key.index("{sale:") + len("{sale:")
    return stream_key[start:stream_key.index("}", start)]


def bucket_transfer_keys(bucket_id: str) -> tuple[str, str]:
    """A hot-SKU bucket's moves of stock (inventory/buckets.py), in the bucket's slot: ``lent`` HASH transfer
    id -> "to|units|ms" (lent by bucket_lend.lua, deleted once the receiver has them) and ``borrowed`` HASH
    transfer id -> "from|units|ms" (taken once by bucket_take.lua)."""
    tag = f"{PREFIX}:{{sale:{bucket_id}}}"
    return f"{tag}:lent", f"{tag}:borrowed"


# -- buyers -----------------------------------------------------------------------------------------------

def user_holds_key(user_id: str) -> str:
    """ZSET hold id -> created ms: a buyer's recent holds in every sale and channel (``GET /api/me/orders``);
    written after each reservation (commerce/my_holds.py), trimmed and expiring."""
    return f"{PREFIX}:user:{{u:{user_id}}}:holds"


# -- pools (inventory/lua/pool_*.lua, inventory/pools.py) ----------------------------------------------------

POOLS_REGISTRY = f"{PREFIX}:pools"       # SET of pool ids (the reaper writes their journals to SQL)


@dataclass(frozen=True, slots=True)
class PoolKeys:
    pool_id: str
    bucket: SaleKeys  # the pool's own stock, a sale-like bucket (id "<pool>--pool"): channel holds
    transfers: str    # HASH transfer id -> remembered answer (every move into or out of the pool, once)
    journal: str      # HASH transfer id -> ledger entry JSON not yet written to SQL (pool_ledger)

    def with_sale(self, sale_id: str) -> list[str]:
        """pool_allocate / pool_topup / pool_return: the pool's four keys, then the sale's hash."""
        return [self.bucket.sale, self.transfers, self.journal, sale_keys(sale_id).sale]


POOL_BUCKET_SUFFIX = f"{POOL_SEP}pool"


def pool_bucket_id(pool_id: str) -> str:
    return f"{pool_id}{POOL_BUCKET_SUFFIX}"


def pool_keys(pool_id: str) -> PoolKeys:
    family = slot_family(pool_id)
    tag = f"{PREFIX}:{{pool:{pool_id}}}" if family == pool_id else f"{PREFIX}:{{pool:{family}}}:{pool_id}"
    return PoolKeys(pool_id=pool_id, bucket=sale_keys(pool_bucket_id(pool_id)), transfers=f"{tag}:transfers",
                    journal=f"{tag}:journal")


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


# -- interaction (docs/PROTOCOL.md Interaction): each drop, poll and draw in its own hash slot ------------

INTERACTION_DUE = f"{PREFIX}:interaction:due"  # ZSET "<kind>:<id>" -> when it is due (ms): poll close, drop end,
                                               # draw close, a draw's redraw; read by commerce/due.py, no script


@dataclass(frozen=True, slots=True)
class TeamKeys:
    """A room's fan teams, in the room's slot: ``members`` hash user -> json {t: team, at: joined ms};
    ``stats`` hash "<team>:<likes|orders|gmv:<currency>>" -> int; ``present`` hash gateway -> json."""
    members: str
    stats: str
    present: str


def team_keys(room_id: str) -> TeamKeys:
    tag = f"{PREFIX}:room:{{room:{room_id}}}"
    return TeamKeys(members=f"{tag}:team:members", stats=f"{tag}:team:stats", present=f"{tag}:team:present")


@dataclass(frozen=True, slots=True)
class PollKeys:
    """A poll: ``meta`` hash (room, options, ends_at, state, ...); ``votes`` hash user -> option;
    ``counts`` hash option -> votes."""
    meta: str
    votes: str
    counts: str


def poll_keys(poll_id: str) -> PollKeys:
    tag = f"{PREFIX}:poll:{{poll:{poll_id}}}"
    return PollKeys(meta=f"{tag}:meta", votes=f"{tag}:votes", counts=f"{tag}:counts")


@dataclass(frozen=True, slots=True)
class DropKeys:
    """A coupon drop: ``meta`` hash (terms, count, claimed, redeemed, times, state); ``claims`` hash
    user -> json coupon state; ``applying`` zset user -> when the coupon's lock to a hold lapses."""
    meta: str
    claims: str
    applying: str


def drop_keys(drop_id: str) -> DropKeys:
    tag = f"{PREFIX}:drop:{{drop:{drop_id}}}"
    return DropKeys(meta=f"{tag}:meta", claims=f"{tag}:claims", applying=f"{tag}:applying")


def wallet_key(user_id: str) -> str:
    """ZSET drop id -> claimed at (ms): the drops a viewer holds a coupon of (GET /api/me/coupons)."""
    return f"{PREFIX}:wallet:{{user:{user_id}}}"


@dataclass(frozen=True, slots=True)
class DrawKeys:
    """A lucky draw: ``meta`` hash (terms, commitment, secret seed until revealed, state, ...);
    ``entrants`` hash user -> entry id; ``present`` zset user -> last seen in the room (ms)."""
    meta: str
    entrants: str
    present: str


def draw_keys(draw_id: str) -> DrawKeys:
    tag = f"{PREFIX}:draw:{{draw:{draw_id}}}"
    return DrawKeys(meta=f"{tag}:meta", entrants=f"{tag}:entrants", present=f"{tag}:present")


def attribution_key(user_id: str) -> str:
    """STRING ``<room>|<sharer>|<code>``: the share link a viewer arrived through (first touch), set with
    NX and the attribution window as its TTL (commerce/growth.py)."""
    return f"{PREFIX}:attr:{{user:{user_id}}}"


def share_rate_key(user_id: str, minute: int) -> str:
    """STRING counter: share links and shops a viewer created in one minute (expires after two)."""
    return f"{PREFIX}:share-rate:{{user:{user_id}}}:{minute}"

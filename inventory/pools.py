"""Stock pools: one pool of goods per SKU, shared by many rooms' sales and by sales channels.

Redis (``inventory/lua/pool_*.lua``): a pool is a sale-like *bucket* (id ``<pool>--pool``) whose
counters the channel holds use exactly as a room's holds use a sale's (reserve / confirm / release /
reap run on it unchanged), plus ``received``, ``restocked`` and ``out``. A pool-backed sale's keys share
the pool's hash slot (``inventory.keys.pool_of_sale``), so every move between pool and sale (launch,
top-up, return at the end) is ONE atomic script, and each is remembered under a transfer id in the
pool's ``transfers`` hash, so a retried command moves nothing twice. Each move also writes a ledger
entry to the pool's ``journal`` hash; ``flush_journal`` copies the journal to SQL (``pool_ledger``,
primary key = the transfer id, so a repeated copy inserts nothing) and then deletes what was copied.

SQL (docs/DATABASE.md): ``pools`` (the pool's terms and owner) and ``pool_ledger`` (every unit in
or out of the pool: receive, restock, adjust, allocate, topup, return, refund_restock).

Invariants (``PoolAudit``): per pool, received + restocked == available + held + sold + out, and
``out`` == the sum of its sales' allocated units (available + held + sold of each); per sale,
available + held + sold == allocated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite

from . import keys as K
from .domain import InvalidInput, PresaleTerms, SaleSpec, check_id
from .store import SaleRecord, Store, metadata, orders, sales

__all__ = [
    "POOL_ID_RE", "PoolRecord", "PoolCounters", "PoolSnapshot", "LedgerEntry", "PoolRedis", "PoolStore",
    "MoveResult", "pools", "pool_ledger", "LEDGER_KINDS",
]

POOL_ID_RE = re.compile(r"^(?!.*--)[A-Za-z0-9_-]{1,40}\Z")  # a slug without "--" (the pool/sale separator)
_LEDGER_CHUNK = 500  # rows per INSERT (8 parameters each)
LEDGER_KINDS = ("receive", "restock", "adjust", "allocate", "topup", "return", "refund_restock")

pools = Table(
    "pools", metadata,
    Column("pool_id", String(64), primary_key=True),
    Column("sku", String(128), nullable=False, unique=True),
    Column("merchant_id", String(128), nullable=False),
    Column("title", String(256), nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("per_user_limit", Integer, nullable=False),
    Column("hold_ttl_ms", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("sku_user_limit", Integer, nullable=False, default=0, server_default="0"),
)

pool_ledger = Table(
    "pool_ledger", metadata,
    Column("entry_id", String(160), primary_key=True),  # the transfer id: one row per move, ever
    Column("pool_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("units", BigInteger, nullable=False),         # signed, as the pool sees it (+ in, - out)
    Column("sale_id", String(64), nullable=False, default=""),
    Column("ref", String(128), nullable=False, default=""),
    Column("reason", String(200), nullable=False, default=""),
    Column("at_ms", BigInteger, nullable=False),
    Index("ix_pool_ledger_pool", "pool_id", "at_ms"),
)


@dataclass(frozen=True, slots=True)
class PoolRecord:
    pool_id: str
    sku: str
    merchant_id: str
    title: str
    unit_price: int
    currency: str
    per_user_limit: int
    hold_ttl_ms: int
    created_at_ms: int
    sku_user_limit: int = 0  # units one user may hold or buy of the SKU over every room and channel (0: none)


@dataclass(frozen=True, slots=True)
class PoolCounters:
    pool_id: str
    available: int
    held: int      # channel holds
    sold: int      # sold through channels
    received: int  # opening stock + restocks +- adjustments
    restocked: int  # refunded units put back
    out: int       # units at sales (allocated, not returned)

    @property
    def ok(self) -> bool:
        return (self.received + self.restocked == self.available + self.held + self.sold + self.out
                and min(self.available, self.held, self.sold, self.out) >= 0)


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """A pool at one instant (Redis TIME ``now_ms``): its counters, its journal not yet in SQL, and each
    sale's (allocated, available, held, sold), None for a sale whose keys are gone (retired)."""

    now_ms: int
    counters: PoolCounters | None
    journal: list[LedgerEntry]
    sales: dict[str, tuple[int, ...] | None]


@dataclass(frozen=True, slots=True)
class MoveResult:
    code: str
    sale_available: int
    pool_available: int


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: str
    pool_id: str
    kind: str
    units: int
    sale_id: str
    ref: str
    reason: str
    at_ms: int


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def check_pool_id(pool_id: Any) -> str:
    if not isinstance(pool_id, str) or not POOL_ID_RE.match(pool_id):
        raise InvalidInput("pool_id", "pool_id must be 1-40 characters of [A-Za-z0-9_-], without '--'")
    return pool_id


class PoolRedis:
    """The pool scripts, over the inventory's registered scripts."""

    def __init__(self, redis: Redis, scripts: dict[str, Any]) -> None:
        self.redis = redis
        self._scripts = scripts

    async def open(self, rec: PoolRecord, units: int) -> tuple[str, int]:
        k = K.pool_keys(rec.pool_id)
        await self.redis.sadd(K.POOLS_REGISTRY, rec.pool_id)
        await self.redis.sadd(K.OUTBOX_REGISTRY, k.bucket.outbox)  # channel orders settle like a sale's
        await self.redis.sadd(K.SALES_REGISTRY, k.bucket.sale_id)  # the reaper expires channel holds
        code, available = await self._scripts["pool_open"](
            keys=[k.bucket.sale, k.transfers, k.journal],
            args=[rec.pool_id, rec.sku, rec.unit_price, rec.currency, units, rec.per_user_limit, rec.hold_ttl_ms,
                  rec.sku_user_limit])
        return _s(code), int(available)

    async def stock(self, pool_id: str, transfer_id: str, kind: str, units: int, reason: str,
                    ref: str = "") -> tuple[str, int]:
        k = K.pool_keys(pool_id)
        code, available = await self._scripts["pool_stock"](
            keys=[k.bucket.sale, k.transfers, k.journal], args=[transfer_id, kind, str(units), reason, ref])
        return _s(code), int(available)

    async def allocate(self, pool_id: str, spec: SaleSpec,
                       presale: PresaleTerms | None = None) -> tuple[str, int, int]:
        """Arm ``spec`` with its units taken from the pool (a pre-sale with ``presale``'s deposit terms):
        (code, sale available, pool available)."""
        k = K.pool_keys(pool_id)
        sale = K.sale_keys(spec.sale_id)
        await self.redis.sadd(K.OUTBOX_REGISTRY, sale.outbox)
        await self.redis.sadd(K.SALES_REGISTRY, spec.sale_id)
        args = [f"allocate:{spec.sale_id}", *spec.to_argv(), *(presale.to_argv() if presale else [])]
        code, available, _held, _sold, pool_available = await self._scripts["pool_allocate"](
            keys=k.with_sale(spec.sale_id), args=args)
        return _s(code), int(available), int(pool_available)

    async def allocate_group(self, variants: list[tuple[str, SaleSpec]]) -> tuple[str, int, int]:
        """Arm a sale of several variants, each (pool id, spec), all or nothing (``pool_allocate_group.lua``):
        (code, the 1-based variant a refusal is about or 0, that variant's pool available)."""
        keys: list[str] = []
        args: list[Any] = [len(variants)]
        for pool_id, spec in variants:
            keys += K.pool_keys(pool_id).with_sale(spec.sale_id)
            args += spec.to_argv()
            await self.redis.sadd(K.OUTBOX_REGISTRY, K.sale_keys(spec.sale_id).outbox)
            await self.redis.sadd(K.SALES_REGISTRY, spec.sale_id)
        code, which, available = await self._scripts["pool_allocate_group"](keys=keys, args=args)
        return _s(code), int(which), int(available)

    async def topup(self, pool_id: str, sale_id: str, transfer_id: str, units: int) -> MoveResult:
        code, sale_available, pool_available = await self._scripts["pool_topup"](
            keys=K.pool_keys(pool_id).with_sale(sale_id), args=[transfer_id, units])
        return MoveResult(_s(code), int(sale_available), int(pool_available))

    async def give_back(self, sale_id: str) -> tuple[str, int, int]:
        """``pool_return.lua`` for a pool-backed sale: (code, units returned now, pool available)."""
        pool_id = K.pool_of_sale(sale_id)
        if pool_id is None:
            return "NOT_FOUND", 0, 0
        code, units, pool_available = await self._scripts["pool_return"](
            keys=K.pool_keys(pool_id).with_sale(sale_id), args=[])
        return _s(code), int(units), int(pool_available)

    async def counters(self, pool_id: str) -> PoolCounters | None:
        k = K.pool_keys(pool_id)
        vals = await self.redis.hmget(k.bucket.sale, ["pool", "available", "held", "sold", "received",
                                                      "restocked", "out"])
        if vals[0] is None:
            return None
        a, h, sold, rec, rst, out = (int(_s(v)) for v in vals[1:])
        return PoolCounters(pool_id, a, h, sold, rec, rst, out)

    async def snapshot(self, pool_id: str, sale_ids: list[str]) -> PoolSnapshot:
        """``pool_audit.lua``: the pool, its journal and its sales' counters at one instant."""
        k = K.pool_keys(pool_id)
        reply = await self._scripts["pool_audit"](keys=[k.bucket.sale, k.journal,
                                                         *(K.sale_keys(s).sale for s in sale_ids)], args=[])
        now, c, flat = int(reply[0]), reply[1], reply[2]
        counters = (PoolCounters(pool_id, *(int(x) for x in c)) if c else None)
        journal = []
        for i in range(0, len(flat), 2):
            e = orjson.loads(flat[i + 1])
            journal.append(LedgerEntry(_s(flat[i]), pool_id, str(e["k"]), int(e["u"]), str(e.get("s") or ""),
                                       str(e.get("r") or ""), str(e.get("why") or ""), int(e["t"])))
        sales = {sid: (tuple(int(x) for x in row[1:]) if int(row[0]) else None)
                 for sid, row in zip(sale_ids, reply[3:], strict=True)}
        return PoolSnapshot(now, counters, journal, sales)

    async def journal(self, pool_id: str) -> list[LedgerEntry]:
        raw = await self.redis.hgetall(K.pool_keys(pool_id).journal)
        out = []
        for tid, val in raw.items():
            e = orjson.loads(val)
            out.append(LedgerEntry(_s(tid), pool_id, str(e["k"]), int(e["u"]), str(e.get("s") or ""),
                                   str(e.get("r") or ""), str(e.get("why") or ""), int(e["t"])))
        return out

    async def forget_journal(self, pool_id: str, entry_ids: list[str]) -> None:
        if entry_ids:
            await self.redis.hdel(K.pool_keys(pool_id).journal, *entry_ids)

    async def pool_ids(self) -> list[str]:
        return sorted(_s(p) for p in await self.redis.smembers(K.POOLS_REGISTRY))


class PoolStore:
    """The pool tables, over the store's engine."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert

    async def add(self, rec: PoolRecord) -> PoolRecord:
        """Insert the pool, or return the existing one with this id (or this SKU)."""
        async with self.engine.begin() as conn:
            await conn.execute(self._insert(pools).values(dataclasses.asdict(rec)).on_conflict_do_nothing())
            row = (await conn.execute(select(pools).where(pools.c.pool_id == rec.pool_id))).first()
            if row is None:
                row = (await conn.execute(select(pools).where(pools.c.sku == rec.sku))).first()
        assert row is not None
        return PoolRecord(**{f.name: row._mapping[f.name] for f in dataclasses.fields(PoolRecord)})

    async def get(self, pool_id: str) -> PoolRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(pools).where(pools.c.pool_id == pool_id))).first()
        return None if row is None else PoolRecord(**{f.name: row._mapping[f.name]
                                                      for f in dataclasses.fields(PoolRecord)})

    async def all(self, merchant_id: str | None = None, limit: int = 500) -> list[PoolRecord]:
        q = select(pools).order_by(pools.c.created_at_ms).limit(limit)
        if merchant_id is not None:
            q = q.where(pools.c.merchant_id == merchant_id)
        async with self.engine.connect() as conn:
            return [PoolRecord(**{f.name: r._mapping[f.name] for f in dataclasses.fields(PoolRecord)})
                    for r in await conn.execute(q)]

    async def sales_of(self, pool_id: str) -> list[SaleRecord]:
        q = select(sales).where(sales.c.pool_id == pool_id).order_by(sales.c.created_at_ms)
        async with self.engine.connect() as conn:
            return [SaleRecord(**{f.name: r._mapping[f.name] for f in dataclasses.fields(SaleRecord)})
                    for r in await conn.execute(q)]

    async def channel_sales(self, bucket_id: str) -> list[dict[str, Any]]:
        """Settled orders of a pool's channels: [{channel, orders, units}]."""
        q = (select(orders.c.channel, func.count(), func.sum(orders.c.qty)).where(orders.c.sale_id == bucket_id)
             .group_by(orders.c.channel).order_by(orders.c.channel))
        async with self.engine.connect() as conn:
            return [{"channel": str(ch), "orders": int(n), "units": int(u or 0)} for ch, n, u in await conn.execute(q)]

    async def settled_units(self, pool_id: str, bucket_id: str) -> int:
        """Units in settled orders of the pool: its sales' and its channels'."""
        of_pool = select(sales.c.sale_id).where(sales.c.pool_id == pool_id)
        q = select(func.coalesce(func.sum(orders.c.qty), 0)).where(
            (orders.c.sale_id == bucket_id) | orders.c.sale_id.in_(of_pool))
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def sku_history(self, sku: str, bucket_ms: int) -> dict[str, Any]:
        """Units sold of a SKU (settled orders): per sale (a show), per channel, and per time bucket of
        ``bucket_ms`` and channel (oldest first)."""
        by_sale = (select(orders.c.sale_id, orders.c.room_id, orders.c.channel, func.count(), func.sum(orders.c.qty),
                          func.min(orders.c.confirmed_at_ms), func.max(orders.c.confirmed_at_ms))
                   .where(orders.c.sku == sku).group_by(orders.c.sale_id, orders.c.room_id, orders.c.channel)
                   .order_by(func.min(orders.c.confirmed_at_ms)))
        bucket = (orders.c.confirmed_at_ms / bucket_ms).cast(BigInteger) * bucket_ms
        timeline = (select(bucket.label("t"), orders.c.channel, orders.c.room_id, func.sum(orders.c.qty))
                    .where(orders.c.sku == sku).group_by("t", orders.c.channel, orders.c.room_id).order_by("t"))
        async with self.engine.connect() as conn:
            sold = list(await conn.execute(by_sale))
            shows = [{"sale_id": str(sid), "room_id": str(room), "channel": str(ch or room), "orders": int(n),
                      "units": int(u or 0), "first_at": int(first), "last_at": int(last)}
                     for sid, room, ch, n, u, first, last in sold]
            points = [{"t": int(t), "channel": str(ch or room), "units": int(u or 0)}
                      for t, ch, room, u in await conn.execute(timeline)]
        channels: dict[str, int] = {}
        for _sid, room, ch, _n, u, _first, _last in sold:
            channels[str(ch or room)] = channels.get(str(ch or room), 0) + int(u or 0)
        return {"shows": shows, "channels": [{"channel": c, "units": u} for c, u in sorted(channels.items())],
                "timeline": points}

    async def by_sku(self, sku: str) -> PoolRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(pools).where(pools.c.sku == sku))).first()
        return None if row is None else PoolRecord(**{f.name: row._mapping[f.name]
                                                      for f in dataclasses.fields(PoolRecord)})

    async def write_ledger(self, entries: list[LedgerEntry]) -> None:
        """Insert-or-ignore by entry id, in one transaction of statements of at most ``_LEDGER_CHUNK`` rows
        (PostgreSQL takes at most 32,767 parameters per statement)."""
        if not entries:
            return
        rows = [dataclasses.asdict(e) for e in entries]
        async with self.engine.begin() as conn:
            for i in range(0, len(rows), _LEDGER_CHUNK):
                await conn.execute(self._insert(pool_ledger).values(rows[i:i + _LEDGER_CHUNK])
                                   .on_conflict_do_nothing(index_elements=[pool_ledger.c.entry_id]))

    async def ledger(self, pool_id: str, limit: int = 1000) -> list[LedgerEntry]:
        """The pool's newest ``limit`` ledger entries, newest first."""
        q = (select(pool_ledger).where(pool_ledger.c.pool_id == pool_id)
             .order_by(pool_ledger.c.at_ms.desc(), pool_ledger.c.entry_id.desc()).limit(limit))
        async with self.engine.connect() as conn:
            return [LedgerEntry(**{f.name: r._mapping[f.name] for f in dataclasses.fields(LedgerEntry)})
                    for r in await conn.execute(q)]

    async def ledger_sums(self, pool_id: str, before_ms: int | None = None,
                          excluding: list[str] | None = None) -> dict[str, int]:
        """Units per ledger kind (signed, as the pool sees them), of the moves before ``before_ms`` other
        than the entries ``excluding`` names."""
        q = (select(pool_ledger.c.kind, func.sum(pool_ledger.c.units)).where(pool_ledger.c.pool_id == pool_id)
             .group_by(pool_ledger.c.kind))
        if before_ms is not None:
            q = q.where(pool_ledger.c.at_ms < before_ms)
        if excluding:
            q = q.where(pool_ledger.c.entry_id.not_in(excluding))
        async with self.engine.connect() as conn:
            return {str(k): int(v or 0) for k, v in await conn.execute(q)}


async def flush_journal(redis: PoolRedis, sql: PoolStore, pool_id: str) -> int:
    """Copy the pool's journal to ``pool_ledger`` (idempotent by entry id), then drop what was copied."""
    entries = await redis.journal(pool_id)
    if entries:
        await sql.write_ledger(entries)
        await redis.forget_journal(pool_id, [e.entry_id for e in entries])
    return len(entries)


def now_ms() -> int:
    return int(time.time() * 1000)


def transfer_id(kind: str, scope: str, request_id: str) -> str:
    """The transfer id of a client-requested move: ``<kind>:<scope>:<request id>``, or, when that is
    longer than an id may be (128), ``<kind>:<sha256 of scope and request id>``."""
    check_id("request_id", request_id)
    tid = f"{kind}:{scope}:{request_id}"
    if len(tid) <= 128:
        return tid
    return f"{kind}:" + hashlib.sha256(f"{scope}|{request_id}".encode()).hexdigest()[:48]

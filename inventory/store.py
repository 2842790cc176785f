"""The SQL system of record (SQLAlchemy Core, async): rooms, products, sales and settled orders.

SQLite (aiosqlite, WAL + busy timeout so several processes can write) or PostgreSQL (asyncpg).
Orders are written in batches, idempotently by ``order_id``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Column, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table,
    Text, and_, event, false, func, inspect, or_, select, update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


__all__ = [
    "Store", "RoomRecord", "ProductRecord", "SaleRecord", "OrderRecord", "SaleConflict", "async_url",
    "ROOM_STATUSES", "metadata",
]

log = logging.getLogger(__name__)

ROOM_STATUSES = ("scheduled", "live", "ended")
_CHUNK = 500  # rows per INSERT statement (keeps bound parameters far below driver limits)
_STARTUP_ATTEMPTS = 20

metadata = MetaData()

rooms = Table(
    "rooms", metadata,
    Column("room_id", String(64), primary_key=True),
    Column("title", String(256), nullable=False),
    Column("host_id", String(128), nullable=False),
    Column("player_url", String(2048), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    CheckConstraint("status IN ('scheduled', 'live', 'ended')", name="ck_rooms_status"),
)

products = Table(
    "products", metadata,
    Column("room_id", String(64), nullable=False),
    Column("product_id", String(128), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("title", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("image_url", String(2048), nullable=False, default=""),
    Column("unit_price", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    # its variants (size, colour), each a SKU with its own stock pool: JSON [{variant_id, sku, label}]
    Column("variants", Text, nullable=False, default="[]", server_default="[]"),
    PrimaryKeyConstraint("room_id", "product_id", name="pk_products"),
)

sales = Table(
    "sales", metadata,
    Column("sale_id", String(64), primary_key=True),
    Column("room_id", String(64), nullable=False),
    Column("product_id", String(128), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("title", String(256), nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("allocated", BigInteger, nullable=False),
    Column("per_user_limit", BigInteger, nullable=False),
    Column("starts_at_ms", BigInteger, nullable=False),
    Column("ends_at_ms", BigInteger, nullable=False),
    Column("hold_ttl_ms", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("members_only", Boolean, nullable=False, default=False, server_default=false()),
    Column("pool_id", String(64), nullable=False, default="", server_default=""),  # '' = units of its own
    # a pre-sale: deposit per unit (0: an ordinary sale), the balance window, the rule for an unpaid balance
    Column("deposit", BigInteger, nullable=False, default=0, server_default="0"),
    Column("balance_from_ms", BigInteger, nullable=False, default=0, server_default="0"),
    Column("balance_by_ms", BigInteger, nullable=False, default=0, server_default="0"),
    Column("deposit_rule", String(8), nullable=False, default="", server_default=""),
    Column("variant", String(64), nullable=False, default="", server_default=""),
    Index("ix_sales_room", "room_id"),
)

orders = Table(
    "orders", metadata,
    Column("order_id", String(128), primary_key=True),
    Column("sale_id", String(64), nullable=False),
    Column("room_id", String(64), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_ref", String(128), nullable=False),
    Column("reserved_at_ms", BigInteger, nullable=False),
    Column("confirmed_at_ms", BigInteger, nullable=False),
    Column("settled_at_ms", BigInteger, nullable=False),
    Column("stream_id", String(64), nullable=False, default=""),
    # the room or channel that sold it: the room id for a room's sale, the channel id (web-shop,
    # store:17) for a pool's channel hold (room_id is then '')
    Column("channel", String(64), nullable=False, default="", server_default=""),
    # a coupon applied at pay (docs/PROTOCOL.md Coupon drops): `total` = qty x unit_price - discount
    Column("discount", BigInteger, nullable=False, default=0, server_default="0"),
    Column("coupon", String(64), nullable=False, default="", server_default=""),
    # where the buyer came from (docs/PROTOCOL.md Share-to-earn): `direct`, `link` (a share link's
    # attribution: `sharer` and `ref_code` the link), `shop` (a shopkeeper's mini-shop: `sharer` its owner,
    # `ref_code` the shop), `channel` (another channel's hold)
    Column("source", String(16), nullable=False, default="direct", server_default="direct"),
    Column("sharer", String(128), nullable=False, default="", server_default=""),
    Column("ref_code", String(64), nullable=False, default="", server_default=""),
    Index("ix_orders_room_confirmed", "room_id", "confirmed_at_ms"),
    Index("ix_orders_sale", "sale_id"),
    Index("ix_orders_user_settled", "user_id", "settled_at_ms"),
)
# columns added after their table was first created: ``Store.open`` adds the missing ones
# (ALTER TABLE ... ADD COLUMN, with the column's server default) to an existing database
# (pools.sku_user_limit is added by inventory/pools.py, which defines that table)
_ADDED_COLUMNS = ((sales, "members_only"), (sales, "pool_id"), (sales, "deposit"), (sales, "balance_from_ms"),
                  (sales, "balance_by_ms"), (sales, "deposit_rule"), (sales, "variant"), (products, "variants"),
                  (orders, "channel"), ("pools", "sku_user_limit"), (orders, "discount"), (orders, "coupon"),
                  ("payments", "coupon"), ("payments", "discount"), (orders, "source"), (orders, "sharer"),
                  (orders, "ref_code"))  # a name: a table defined in another module


class SaleConflict(Exception):
    """A sale with this id already exists with different content."""

    def __init__(self, sale_id: str) -> None:
        super().__init__(f"sale {sale_id} already exists with different settings")
        self.sale_id = sale_id


@dataclass(frozen=True, slots=True)
class RoomRecord:
    room_id: str
    title: str
    host_id: str
    player_url: str
    status: str
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class ProductRecord:
    room_id: str
    product_id: str
    sku: str
    title: str
    description: str
    image_url: str
    unit_price: int
    currency: str
    variants: str = "[]"  # JSON [{variant_id, sku, label}]: each variant a SKU with its own pool


@dataclass(frozen=True, slots=True)
class SaleRecord:
    sale_id: str
    room_id: str
    product_id: str
    sku: str
    title: str
    unit_price: int
    currency: str
    allocated: int
    per_user_limit: int
    starts_at_ms: int
    ends_at_ms: int
    hold_ttl_ms: int
    created_at_ms: int
    members_only: bool = False  # guest viewer tokens may not buy
    pool_id: str = ""           # the stock pool its units came from ('' = units of its own)
    deposit: int = 0            # a pre-sale's deposit per unit (0: not a pre-sale)
    balance_from_ms: int = 0    # a pre-sale's balance window [from, by)
    balance_by_ms: int = 0
    deposit_rule: str = ""      # refund | keep: what happens to the deposit of an unpaid balance
    variant: str = ""           # one variant of a sale of several (its label, e.g. "Red / M"); '' otherwise

    def same_content(self, other: SaleRecord) -> bool:
        """Equal in everything but ``created_at_ms``."""
        return dataclasses.replace(self, created_at_ms=0) == dataclasses.replace(other, created_at_ms=0)


@dataclass(frozen=True, slots=True)
class OrderRecord:
    order_id: str
    sale_id: str
    room_id: str
    sku: str
    user_id: str
    qty: int
    unit_price: int
    total: int
    currency: str
    payment_ref: str
    reserved_at_ms: int
    confirmed_at_ms: int
    settled_at_ms: int
    stream_id: str
    channel: str = ""  # the room id, or the channel id of a pool's channel hold
    discount: int = 0  # a coupon's discount (minor units): total = qty x unit_price - discount
    coupon: str = ""   # the coupon's drop id, '' = none
    source: str = "direct"  # direct | link | shop | channel (docs/PROTOCOL.md Share-to-earn)
    sharer: str = ""        # the sharer credited (a link's creator, a mini-shop's owner), '' = none
    ref_code: str = ""      # the share link's code or the mini-shop's id


def async_url(url: str) -> str:
    """A DATABASE_URL in the async driver's dialect (sqlite+aiosqlite / postgresql+asyncpg)."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://"):]
    return url


def _now_ms() -> int:
    return int(time.time() * 1000)


_R = TypeVar("_R")


def _row(cls: type, row: Any) -> Any:
    return cls(**{f.name: row._mapping[f.name] for f in dataclasses.fields(cls)})


def _add_missing_columns(sync_conn: Any) -> None:
    """ALTER TABLE ... ADD COLUMN for each of ``_ADDED_COLUMNS`` an existing table lacks (SQLite and
    PostgreSQL; NOT NULL with the column's server default, so existing rows get the default)."""
    from sqlalchemy.schema import CreateColumn

    have: dict[str, set[str]] = {}
    for ref, name in _ADDED_COLUMNS:
        if isinstance(ref, str) and ref not in metadata.tables:  # its module is not loaded: nor is its table
            continue
        table = metadata.tables[ref] if isinstance(ref, str) else ref
        if table.name not in have:
            have[table.name] = {c["name"] for c in inspect(sync_conn).get_columns(table.name)}
        if name not in have[table.name]:
            ddl = CreateColumn(table.c[name]).compile(dialect=sync_conn.dialect)
            sync_conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            have[table.name].add(name)


def _is_startup_race(exc: DBAPIError) -> bool:
    """Another process created a table first, or (SQLite) held the lock while the file was new."""
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return any(m in text for m in ("already exists", "duplicate key", "pg_type_typname_nsp_index",
                                   "database is locked", "duplicate column"))


class Store:
    """Async access to the SQL system of record. Build with ``await Store.open(url)``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert
        # run inside the orders' transaction (inventory/growth.py CommissionHook): ``prepare(conn, records)``
        # before the insert, ``inserted(conn, newly inserted records, insert)`` after it
        self.order_hooks: list[Any] = []

    @classmethod
    async def open(cls, url: str, *, busy_timeout_ms: int = 5000, pool_size: int = 5) -> Store:
        """Connect and create the tables if needed (safe when several processes do it at once)."""
        url = async_url(url)
        if url.startswith("sqlite"):
            engine = create_async_engine(url, hide_parameters=True)

            @event.listens_for(engine.sync_engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
                try:  # WAL is persistent in the file: one success is enough (``_ensure_wal`` checks)
                    cur.execute("PRAGMA journal_mode=WAL")
                except Exception as exc:  # another connection holds the lock while the file is new
                    log.debug("journal_mode=WAL deferred: %s", exc)
                cur.close()
        else:
            engine = create_async_engine(url, pool_size=pool_size, pool_pre_ping=True, hide_parameters=True)
        store = cls(engine)
        try:
            await store._create_all()
            if engine.dialect.name == "sqlite":
                await store._ensure_wal()
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def _create_all(self) -> None:
        from . import payments as _payments  # noqa: F401  # its tables join `metadata` (payments, refunds)
        from . import archive as _archive  # noqa: F401  # its tables join `metadata` (sale_archive, room_archive)
        from . import signal_log as _signals  # noqa: F401  # the signals table
        from . import growth as _growth  # noqa: F401  # share links, shops, commissions
        from . import audiences as _audiences, offers as _offers  # noqa: F401  # audiences, offers
        from . import reengage as _reengage  # noqa: F401  # reminders, notices, webhook deliveries
        for attempt in range(_STARTUP_ATTEMPTS):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(metadata.create_all, checkfirst=True)
                    for index in orders.indexes:  # indexes added after a table was first created
                        await conn.run_sync(index.create, checkfirst=True)
                    await conn.run_sync(_add_missing_columns)
                return
            except DBAPIError as exc:  # another process created a table (or held the lock) meanwhile
                if not _is_startup_race(exc) or attempt == _STARTUP_ATTEMPTS - 1:
                    raise
                log.debug("create_all raced with another connection; retrying")
                await asyncio.sleep(0.02 * (attempt + 1))

    async def _ensure_wal(self) -> None:
        """SQLite: WAL journal so readers and several writing processes get along."""
        for attempt in range(_STARTUP_ATTEMPTS):
            try:
                async with self.engine.connect() as conn:
                    mode = (await conn.exec_driver_sql("PRAGMA journal_mode=WAL")).scalar()
                if str(mode).lower() == "wal" or str(mode).lower() == "memory":
                    return
            except DBAPIError as exc:
                if not _is_startup_race(exc) or attempt == _STARTUP_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(0.02 * (attempt + 1))
        log.warning("SQLite journal mode is not WAL; concurrent writers may see 'database is locked'")

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        """``SELECT 1`` on a pooled connection (readiness, ``/readyz``): raises when the database cannot answer."""
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    # -- orders ----------------------------------------------------------------------------------

    async def insert_new_orders(self, records: Sequence[OrderRecord]) -> list[str]:
        """Insert orders in ONE transaction, skipping order ids already stored (insert-or-ignore, never
        an update); returns the order ids newly inserted."""
        unique: dict[str, dict[str, Any]] = {}
        for r in records:
            unique.setdefault(r.order_id, dataclasses.asdict(r))
        if not unique:
            return []
        inserted: list[str] = []
        async with self.engine.begin() as conn:
            recs = [OrderRecord(**row) for row in unique.values()]
            for hook in self.order_hooks:
                recs = await hook.prepare(conn, recs)
            rows = [dataclasses.asdict(r) for r in recs]
            for i in range(0, len(rows), _CHUNK):
                stmt = (self._insert(orders).values(rows[i:i + _CHUNK])
                        .on_conflict_do_nothing(index_elements=[orders.c.order_id])
                        .returning(orders.c.order_id))
                inserted.extend((await conn.execute(stmt)).scalars().all())
            if self.order_hooks and inserted:
                fresh = set(inserted)
                new = [r for r in recs if r.order_id in fresh]
                for hook in self.order_hooks:
                    await hook.inserted(conn, new, self._insert)
        return inserted

    async def get_order(self, order_id: str) -> OrderRecord | None:
        return await self._one(OrderRecord, select(orders).where(orders.c.order_id == order_id))

    async def orders_for_room(self, room_id: str, limit: int = 100) -> list[OrderRecord]:
        q = (select(orders).where(orders.c.room_id == room_id)
             .order_by(orders.c.confirmed_at_ms.desc(), orders.c.order_id).limit(limit))
        return await self._all(OrderRecord, q)

    async def get_orders(self, order_ids: Sequence[str]) -> dict[str, OrderRecord]:
        """The stored orders among ``order_ids``, by id."""
        out: dict[str, OrderRecord] = {}
        ids = list(dict.fromkeys(order_ids))
        for i in range(0, len(ids), _CHUNK):
            q = select(orders).where(orders.c.order_id.in_(ids[i:i + _CHUNK]))
            for o in await self._all(OrderRecord, q):
                out[o.order_id] = o
        return out

    async def orders_settled_for_user(self, user_id: str, since_ms: int = 0, after: tuple[int, str] | None = None,
                                      limit: int = 100) -> list[OrderRecord]:
        """A user's orders with ``settled_at_ms >= since_ms``, oldest first (ties by order id), after
        the ``(settled_at_ms, order_id)`` position ``after`` when given (keyset paging)."""
        q = select(orders).where(orders.c.user_id == user_id, orders.c.settled_at_ms >= since_ms)
        if after is not None:
            at, order_id = after
            q = q.where(or_(orders.c.settled_at_ms > at,
                            and_(orders.c.settled_at_ms == at, orders.c.order_id > order_id)))
        q = q.order_by(orders.c.settled_at_ms, orders.c.order_id).limit(limit)
        return await self._all(OrderRecord, q)

    async def sold_units(self, sale_id: str) -> int:
        q = select(func.coalesce(func.sum(orders.c.qty), 0)).where(orders.c.sale_id == sale_id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def room_totals(self, room_id: str) -> tuple[int, int, dict[str, int]]:
        """(orders, units, gross merchandise value in minor units by currency) of a room."""
        q = (select(orders.c.currency, func.count(), func.sum(orders.c.qty), func.sum(orders.c.total))
             .where(orders.c.room_id == room_id).group_by(orders.c.currency))
        count = units = 0
        gmv: dict[str, int] = {}
        async with self.engine.connect() as conn:
            for currency, n, u, total in await conn.execute(q):
                count += int(n)
                units += int(u or 0)
                gmv[currency] = int(total or 0)
        return count, units, gmv

    async def orders_per_minute(self, room_id: str, since_ms: int) -> list[tuple[int, int, int]]:
        """(minute start ms, orders, gmv in minor units, all currencies) per minute since ``since_ms``."""
        minute = (orders.c.confirmed_at_ms - orders.c.confirmed_at_ms % 60000).label("minute")
        q = (select(minute, func.count(), func.sum(orders.c.total))
             .where(orders.c.room_id == room_id, orders.c.confirmed_at_ms >= since_ms)
             .group_by(minute).order_by(minute))
        async with self.engine.connect() as conn:
            return [(int(m), int(n), int(g or 0)) for m, n, g in await conn.execute(q)]

    # -- rooms -----------------------------------------------------------------------------------

    async def upsert_room(self, room: RoomRecord) -> None:
        """Create a room or update its title, host, player URL and status (created_at is kept)."""
        _check_status(room.status)
        stmt = self._insert(rooms).values(dataclasses.asdict(room))
        stmt = stmt.on_conflict_do_update(
            index_elements=[rooms.c.room_id],
            set_={c: stmt.excluded[c] for c in ("title", "host_id", "player_url", "status", "updated_at_ms")},
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def get_room(self, room_id: str) -> RoomRecord | None:
        return await self._one(RoomRecord, select(rooms).where(rooms.c.room_id == room_id))

    async def list_rooms(self, status: str | None = None, limit: int = 100) -> list[RoomRecord]:
        q = select(rooms).order_by(rooms.c.created_at_ms.desc(), rooms.c.room_id).limit(limit)
        if status is not None:
            _check_status(status)
            q = q.where(rooms.c.status == status)
        return await self._all(RoomRecord, q)

    async def set_room_status(self, room_id: str, status: str, at_ms: int | None = None) -> bool:
        """Set a room's status; False if there is no such room."""
        _check_status(status)
        stmt = (update(rooms).where(rooms.c.room_id == room_id)
                .values(status=status, updated_at_ms=_now_ms() if at_ms is None else at_ms))
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount > 0

    # -- products --------------------------------------------------------------------------------

    async def upsert_product(self, product: ProductRecord) -> None:
        stmt = self._insert(products).values(dataclasses.asdict(product))
        stmt = stmt.on_conflict_do_update(
            index_elements=[products.c.room_id, products.c.product_id],
            set_={c: stmt.excluded[c] for c in ("sku", "title", "description", "image_url", "unit_price",
                                                 "currency", "variants")},
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def list_products(self, room_id: str) -> list[ProductRecord]:
        q = select(products).where(products.c.room_id == room_id).order_by(products.c.product_id)
        return await self._all(ProductRecord, q)

    async def get_product(self, room_id: str, product_id: str) -> ProductRecord | None:
        q = select(products).where(products.c.room_id == room_id, products.c.product_id == product_id)
        return await self._one(ProductRecord, q)

    # -- sales -----------------------------------------------------------------------------------

    async def insert_sale(self, sale: SaleRecord) -> bool:
        """Store a sale: True if new, False if an identical one exists; ``SaleConflict`` if it differs."""
        stmt = (self._insert(sales).values(dataclasses.asdict(sale))
                .on_conflict_do_nothing(index_elements=[sales.c.sale_id]).returning(sales.c.sale_id))
        async with self.engine.begin() as conn:
            if (await conn.execute(stmt)).first() is not None:
                return True
            existing = _row(SaleRecord, (await conn.execute(
                select(sales).where(sales.c.sale_id == sale.sale_id))).one())
        if not existing.same_content(sale):
            raise SaleConflict(sale.sale_id)
        return False

    async def get_sale(self, sale_id: str) -> SaleRecord | None:
        return await self._one(SaleRecord, select(sales).where(sales.c.sale_id == sale_id))

    async def list_sales(self, room_id: str) -> list[SaleRecord]:
        q = select(sales).where(sales.c.room_id == room_id).order_by(sales.c.starts_at_ms, sales.c.sale_id)
        return await self._all(SaleRecord, q)

    # -- helpers ---------------------------------------------------------------------------------

    async def _one(self, cls: type[_R], q: Any) -> _R | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        record: _R = _row(cls, row)
        return record

    async def _all(self, cls: type, q: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return [_row(cls, r) for r in await conn.execute(q)]


def _check_status(status: str) -> None:
    if status not in ROOM_STATUSES:
        raise ValueError(f"room status must be one of {', '.join(ROOM_STATUSES)}")

"""Share-to-earn in SQL: share links, shopkeepers' mini-shops, commission rates and the commission ledger.

The ledger is written by the settlement worker in the SAME transaction as the orders it settles
(``CommissionHook``, registered on the ``Store``): an order attributed to a sharer (a share link's
attribution, carried by the order's outbox entry, or a mini-shop's channel ``shop:<shop>``) gets one
``commissions`` row keyed by its order id, so a redelivered batch, a crash or a kill -9 anywhere
inserts nothing twice and loses nothing. A refund of the order reverses its row in the refund's own
transaction (inventory/order_refunds.py).

Rounding rule (docs/PROTOCOL.md Share-to-earn): commission = floor((total x rate_bps + 5,000) / 10,000)
per order, in the order's minor units: half a minor unit rounds up.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, Column, Index, Integer, PrimaryKeyConstraint, String, Table, and_, func, select, update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from .keys import POOL_BUCKET_SUFFIX
from .store import OrderRecord, Store, metadata, orders, sales

__all__ = ["share_links", "shops", "shop_items", "shop_pools", "product_rates", "commissions", "commission_of",
           "CommissionHook", "GrowthStore", "ShareLink", "Shop", "SHOP_CHANNEL_PREFIX", "shop_of_channel"]

SHOP_CHANNEL_PREFIX = "shop:"

share_links = Table(
    "share_links", metadata,
    Column("code", String(32), primary_key=True),
    Column("sharer", String(128), nullable=False),
    Column("room_id", String(64), nullable=False),
    Column("product_id", String(128), nullable=False, default=""),  # '' = the room
    Column("created_at_ms", BigInteger, nullable=False),
    Index("ix_share_links_sharer", "sharer"),
)

shops = Table(
    "shops", metadata,
    Column("shop_id", String(48), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("title", String(200), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Index("ix_shops_owner", "owner"),
)

shop_items = Table(
    "shop_items", metadata,
    Column("shop_id", String(48), nullable=False),
    Column("pool_id", String(64), nullable=False),
    Column("added_at_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("shop_id", "pool_id", name="pk_shop_items"),
)

# a merchant opens a pool to shopkeepers, with the commission it pays them
shop_pools = Table(
    "shop_pools", metadata,
    Column("pool_id", String(64), primary_key=True),
    Column("merchant_id", String(128), nullable=False),
    Column("open", Boolean, nullable=False),
    Column("commission_bps", Integer, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)

# a host's commission rate for a product of its room (share links)
product_rates = Table(
    "product_rates", metadata,
    Column("room_id", String(64), nullable=False),
    Column("product_id", String(128), nullable=False),
    Column("commission_bps", Integer, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("room_id", "product_id", name="pk_product_rates"),
)

commissions = Table(
    "commissions", metadata,
    Column("order_id", String(128), primary_key=True),
    Column("sharer", String(128), nullable=False),
    Column("source", String(16), nullable=False),        # link | shop
    Column("ref_code", String(64), nullable=False),      # the link's code or the shop's id
    Column("room_id", String(64), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("buyer", String(128), nullable=False),
    Column("sale_id", String(64), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("base", BigInteger, nullable=False),          # the order's paid total
    Column("rate_bps", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("state", String(12), nullable=False),         # earned | reversed
    Column("settled_at_ms", BigInteger, nullable=False),
    Column("reversed_at_ms", BigInteger, nullable=False, default=0),
    Index("ix_commissions_sharer", "sharer", "settled_at_ms"),
    Index("ix_commissions_room", "room_id"),
)


def commission_of(total: int, rate_bps: int) -> int:
    """The documented rounding: half a minor unit rounds up."""
    return (total * rate_bps + 5000) // 10000


def shop_of_channel(channel: str) -> str:
    return channel[len(SHOP_CHANNEL_PREFIX):] if channel.startswith(SHOP_CHANNEL_PREFIX) else ""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class ShareLink:
    code: str
    sharer: str
    room_id: str
    product_id: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Shop:
    shop_id: str
    owner: str
    title: str
    created_at_ms: int


class CommissionHook:
    """Runs inside the settlement worker's order transaction (``Store.order_hooks``).

    ``prepare`` fills the source and sharer of orders from mini-shops (their channel names the shop;
    its owner is the sharer); ``inserted`` writes one commission per newly inserted attributed order."""

    def __init__(self, default_bps: int) -> None:
        self.default_bps = default_bps

    async def prepare(self, conn: AsyncConnection, records: Sequence[OrderRecord]) -> list[OrderRecord]:
        shop_ids = {shop_of_channel(r.channel) for r in records if shop_of_channel(r.channel)}
        owners: dict[str, str] = {}
        if shop_ids:
            rows = (await conn.execute(select(shops.c.shop_id, shops.c.owner)
                                       .where(shops.c.shop_id.in_(list(shop_ids))))).all()
            owners = {a: b for a, b in rows}
        out: list[OrderRecord] = []
        for r in records:
            shop = shop_of_channel(r.channel)
            if r.sharer and r.sharer != r.user_id:
                out.append(dataclasses.replace(r, source="link"))
            elif shop:
                owner = owners.get(shop, "")
                out.append(dataclasses.replace(r, source="shop", sharer=owner if owner != r.user_id else "",
                                               ref_code=shop))
            elif r.channel and r.channel != r.room_id:
                out.append(dataclasses.replace(r, source="channel", sharer="", ref_code=""))
            else:
                out.append(dataclasses.replace(r, source="direct", sharer="", ref_code=""))
        return out

    async def inserted(self, conn: AsyncConnection, records: Sequence[OrderRecord], insert: Any) -> None:
        attributed = [r for r in records if r.sharer and r.sharer != r.user_id and r.source in ("link", "shop")]
        if not attributed:
            return
        rates = await self._rates(conn, attributed)
        rows = []
        for r in attributed:
            bps = rates.get(r.order_id, self.default_bps)
            rows.append({"order_id": r.order_id, "sharer": r.sharer, "source": r.source, "ref_code": r.ref_code,
                         "room_id": r.room_id, "channel": r.channel, "buyer": r.user_id, "sale_id": r.sale_id,
                         "sku": r.sku, "base": r.total, "rate_bps": bps, "amount": commission_of(r.total, bps),
                         "currency": r.currency, "state": "earned", "settled_at_ms": r.settled_at_ms,
                         "reversed_at_ms": 0})
        await conn.execute(insert(commissions).values(rows)
                           .on_conflict_do_nothing(index_elements=[commissions.c.order_id]))

    async def _rates(self, conn: AsyncConnection, records: Sequence[OrderRecord]) -> dict[str, int]:
        """Each order's rate: a shop order's from its pool (``shop_pools``), a link order's from its product
        (``product_rates``, the product of its sale); else the default."""
        out: dict[str, int] = {}
        pool_of = {r.order_id: r.sale_id[:-len(POOL_BUCKET_SUFFIX)] for r in records
                   if r.source == "shop" and r.sale_id.endswith(POOL_BUCKET_SUFFIX)}
        if pool_of:
            rows = (await conn.execute(select(shop_pools.c.pool_id, shop_pools.c.commission_bps)
                                       .where(shop_pools.c.pool_id.in_(set(pool_of.values()))))).all()
            by_pool = {a: b for a, b in rows}
            out.update({oid: by_pool[p] for oid, p in pool_of.items() if p in by_pool})
        link_sales = {r.sale_id for r in records if r.source == "link"}
        if link_sales:
            rows = (await conn.execute(
                select(sales.c.sale_id, product_rates.c.commission_bps)
                .select_from(sales.join(product_rates, and_(product_rates.c.room_id == sales.c.room_id,
                                                            product_rates.c.product_id == sales.c.product_id)))
                .where(sales.c.sale_id.in_(list(link_sales))))).all()
            by_sale = {a: b for a, b in rows}
            out.update({r.order_id: by_sale[r.sale_id] for r in records
                        if r.source == "link" and r.sale_id in by_sale})
        return out


class GrowthStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine
        self._insert = store._insert

    # -- links and shops -------------------------------------------------------------------------------

    async def add_link(self, link: ShareLink) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(self._insert(share_links).values(dataclasses.asdict(link)))

    async def link(self, code: str) -> ShareLink | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(share_links).where(share_links.c.code == code))).first()
        return ShareLink(**row._mapping) if row is not None else None

    async def links_of(self, sharer: str, limit: int = 200) -> list[ShareLink]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(share_links).where(share_links.c.sharer == sharer)
                                       .order_by(share_links.c.created_at_ms.desc()).limit(limit))).all()
        return [ShareLink(**r._mapping) for r in rows]

    async def add_shop(self, shop: Shop, pools: Sequence[str]) -> bool:
        """Insert the shop and its items; False when the id is taken."""
        async with self.engine.begin() as conn:
            got = (await conn.execute(self._insert(shops).values(dataclasses.asdict(shop))
                                      .on_conflict_do_nothing(index_elements=[shops.c.shop_id])
                                      .returning(shops.c.shop_id))).first()
            if got is None:
                return False
            if pools:
                await conn.execute(self._insert(shop_items).values(
                    [{"shop_id": shop.shop_id, "pool_id": p, "added_at_ms": shop.created_at_ms} for p in pools]))
        return True

    async def shop(self, shop_id: str) -> tuple[Shop, list[str]] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(shops).where(shops.c.shop_id == shop_id))).first()
            if row is None:
                return None
            items = (await conn.execute(select(shop_items.c.pool_id).where(shop_items.c.shop_id == shop_id)
                                        .order_by(shop_items.c.added_at_ms, shop_items.c.pool_id))).scalars().all()
        return Shop(**row._mapping), list(items)

    async def set_shop_items(self, shop_id: str, pools: Sequence[str]) -> None:
        now = _now_ms()
        async with self.engine.begin() as conn:
            await conn.execute(shop_items.delete().where(shop_items.c.shop_id == shop_id))
            if pools:
                await conn.execute(self._insert(shop_items).values(
                    [{"shop_id": shop_id, "pool_id": p, "added_at_ms": now + i} for i, p in enumerate(pools)]))

    async def shops_of(self, owner: str) -> list[Shop]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(shops).where(shops.c.owner == owner)
                                       .order_by(shops.c.created_at_ms.desc()))).all()
        return [Shop(**r._mapping) for r in rows]

    # -- rates -----------------------------------------------------------------------------------------

    async def open_pool(self, pool_id: str, merchant_id: str, is_open: bool, bps: int) -> None:
        row = {"pool_id": pool_id, "merchant_id": merchant_id, "open": is_open, "commission_bps": bps,
               "updated_at_ms": _now_ms()}
        async with self.engine.begin() as conn:
            await conn.execute(self._insert(shop_pools).values(row).on_conflict_do_update(
                index_elements=[shop_pools.c.pool_id],
                set_={"open": is_open, "commission_bps": bps, "updated_at_ms": row["updated_at_ms"]}))

    async def open_pools(self, pool_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        q = select(shop_pools).where(shop_pools.c.open == True)  # noqa: E712
        if pool_ids is not None:
            q = q.where(shop_pools.c.pool_id.in_(list(pool_ids)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return {r.pool_id: dict(r._mapping) for r in rows}

    async def set_product_rate(self, room_id: str, product_id: str, bps: int) -> None:
        row = {"room_id": room_id, "product_id": product_id, "commission_bps": bps, "updated_at_ms": _now_ms()}
        async with self.engine.begin() as conn:
            await conn.execute(self._insert(product_rates).values(row).on_conflict_do_update(
                index_elements=[product_rates.c.room_id, product_rates.c.product_id],
                set_={"commission_bps": bps, "updated_at_ms": row["updated_at_ms"]}))

    async def product_rates(self, room_id: str) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(product_rates.c.product_id, product_rates.c.commission_bps)
                                       .where(product_rates.c.room_id == room_id))).all()
        return {a: b for a, b in rows}

    # -- the ledger ------------------------------------------------------------------------------------

    async def commissions_of(self, sharer: str, limit: int = 500) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(commissions).where(commissions.c.sharer == sharer)
                                       .order_by(commissions.c.settled_at_ms.desc(), commissions.c.order_id)
                                       .limit(limit))).all()
        return [dict(r._mapping) for r in rows]

    async def ledger(self, *, sharer: str | None = None, room_id: str | None = None, ref_codes: Sequence[str] = (),
                     since_ms: int = 0, until_ms: int | None = None) -> list[dict[str, Any]]:
        q = select(commissions).where(commissions.c.settled_at_ms >= since_ms)
        if until_ms is not None:
            q = q.where(commissions.c.settled_at_ms < until_ms)
        if sharer is not None:
            q = q.where(commissions.c.sharer == sharer)
        if room_id is not None:
            q = q.where(commissions.c.room_id == room_id)
        if ref_codes:
            q = q.where(commissions.c.ref_code.in_(list(ref_codes)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(commissions.c.settled_at_ms, commissions.c.order_id))).all()
        return [dict(r._mapping) for r in rows]

    async def orders_by_source(self, room_id: str) -> list[dict[str, Any]]:
        q = (select(orders.c.source, orders.c.currency, func.count().label("orders"),
                    func.sum(orders.c.qty).label("units"), func.sum(orders.c.total).label("gmv"))
             .where(orders.c.room_id == room_id).group_by(orders.c.source, orders.c.currency))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [{"source": r.source, "currency": r.currency, "orders": int(r.orders), "units": int(r.units or 0),
                 "gmv": int(r.gmv or 0)} for r in rows]

    async def top_sharers(self, room_id: str, limit: int = 20) -> list[dict[str, Any]]:
        q = (select(commissions.c.sharer, commissions.c.currency, func.count().label("orders"),
                    func.sum(commissions.c.base).label("sales"), func.sum(commissions.c.amount).label("commission"))
             .where(commissions.c.room_id == room_id, commissions.c.state == "earned")
             .group_by(commissions.c.sharer, commissions.c.currency)
             .order_by(func.sum(commissions.c.base).desc()).limit(limit))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [{"sharer": r.sharer, "currency": r.currency, "orders": int(r.orders), "sales": int(r.sales or 0),
                 "commission": int(r.commission or 0)} for r in rows]


async def reverse_commission(conn: AsyncConnection, order_id: str, at_ms: int) -> None:
    """A refund's own transaction reverses the order's commission (once: only an earned one)."""
    await conn.execute(update(commissions).where(commissions.c.order_id == order_id, commissions.c.state == "earned")
                       .values(state="reversed", reversed_at_ms=at_ms))

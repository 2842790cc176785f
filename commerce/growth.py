"""Share-to-earn: share links, first-touch attribution, shopkeepers' mini-shops, commission rates and
the sharers' earnings (docs/PROTOCOL.md Share-to-earn; the SQL side is inventory/growth.py).

Attribution: a signed-in viewer who joins a room through a share link (``join.ref``) is attributed to
the link's sharer for ``window_s``: one Redis ``SET NX PX`` per arrival (first touch wins; one sharer
per buyer per window; never the viewer's own link; a code that is unknown or of another room
attributes nothing). When that buyer pays a hold of the same room inside the window, the attribution
rides into ``confirm.lua`` (``attribution``) and onto the order, and settlement writes the commission in
the order's own transaction. A mini-shop is a channel (``shop:<shop>``): its orders are the shop's
owner's, found by settlement from the channel, so nothing is attributed at join for them.
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from typing import Any

from inventory.growth import SHOP_CHANNEL_PREFIX, GrowthStore, ShareLink, Shop, shop_of_channel
from inventory.keys import attribution_key, share_rate_key
from inventory.pools import PoolStore
from inventory.scripts import Inventory
from inventory.store import Store

from .catalogue import Catalogue
from .errors import Conflict, Forbidden, InvalidInput, NotFound, RateLimited, Unauthorized
from .identity import Identity

__all__ = ["Growth", "status_of"]

_MAX_SHOP_ITEMS = 100
_CODE_CACHE = 10_000


def status_of(row: dict[str, Any], now_ms: int, pending_ms: int) -> str:
    """A commission's status: ``reversed`` (its order was refunded), ``pending`` (inside the return
    window after settlement), else ``confirmed`` (payable)."""
    if row["state"] == "reversed":
        return "reversed"
    return "pending" if now_ms < int(row["settled_at_ms"]) + pending_ms else "confirmed"


def _money(rows: list[dict[str, Any]], now_ms: int, pending_ms: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        cur = out.setdefault(r["currency"], {"pending": 0, "confirmed": 0, "reversed": 0, "orders": 0})
        cur[status_of(r, now_ms, pending_ms)] += int(r["amount"])
        cur["orders"] += 1
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


class Growth:
    def __init__(self, store: Store, inventory: Inventory, catalogue: Catalogue, *, window_s: int = 604_800,
                 default_bps: int = 500, pending_s: int = 1_209_600, link_rate: float = 20.0) -> None:
        self.sql = GrowthStore(store)
        self.pools = PoolStore(store)
        self.redis = inventory.redis
        self.catalogue = catalogue
        self.window_ms = window_s * 1000
        self.default_bps = default_bps
        self.pending_ms = pending_s * 1000
        self.link_rate = max(1, int(link_rate))
        self._codes: dict[str, ShareLink] = {}  # links are immutable: cached per process

    # -- links -----------------------------------------------------------------------------------------

    async def _rate(self, viewer: Identity) -> None:
        key = share_rate_key(viewer.user, int(time.time() // 60))
        async with self.redis.pipeline(transaction=False) as p:
            p.incr(key)
            p.expire(key, 120)
            n, _ = await p.execute()
        if int(n) > self.link_rate:
            raise RateLimited(f"at most {self.link_rate} share links and shops a minute; retry shortly")

    async def create_link(self, viewer: Identity, room_id: str, product_id: str | None) -> dict[str, Any]:
        if not viewer.is_viewer:
            raise Unauthorized("creating a share link needs a signed-in viewer token")
        await self.catalogue.room(room_id)  # NOT_FOUND for an unknown room
        if product_id:
            await self.catalogue.product(room_id, product_id)
        await self._rate(viewer)
        link = ShareLink(secrets.token_urlsafe(9), viewer.user, room_id, product_id or "", _now_ms())
        await self.sql.add_link(link)
        return self.link_wire(link)

    def link_wire(self, link: ShareLink) -> dict[str, Any]:
        url = f"/rooms/{link.room_id}?ref={link.code}" + (f"&product={link.product_id}" if link.product_id else "")
        return {"code": link.code, "room_id": link.room_id, "product_id": link.product_id or None,
                "sharer": link.sharer, "url": url, "created_at": link.created_at_ms}

    async def _link(self, code: str) -> ShareLink | None:
        link = self._codes.get(code)
        if link is None:
            link = await self.sql.link(code)
            if link is not None:
                if len(self._codes) >= _CODE_CACHE:
                    self._codes.clear()
                self._codes[code] = link
        return link

    async def get_link(self, code: str) -> dict[str, Any]:
        link = await self._link(code)
        if link is None:
            raise NotFound(f"no share link {code}")
        return self.link_wire(link)

    async def my_links(self, viewer: Identity) -> list[dict[str, Any]]:
        return [self.link_wire(link) for link in await self.sql.links_of(viewer.user)]

    # -- attribution -----------------------------------------------------------------------------------

    async def arrived(self, viewer: Identity, code: str, room_id: str) -> bool:
        """A signed-in viewer joined ``room_id`` through ``code``: attribute them to its sharer unless they
        are attributed already (first touch), it is their own link, or the link is of another room."""
        if not viewer.is_viewer:
            return False
        link = await self._link(code)
        if link is None or link.room_id != room_id or link.sharer == viewer.user:
            return False
        return bool(await self.redis.set(attribution_key(viewer.user), f"{room_id}|{link.sharer}|{code}",
                                         nx=True, px=self.window_ms))

    async def attribution(self, user: str) -> str:
        """``<room>|<sharer>|<code>`` for confirm.lua, or '' (it keeps it only for a hold of that room)."""
        if not user:
            return ""
        raw = await self.redis.get(attribution_key(user))
        return raw.decode() if isinstance(raw, bytes) else (raw or "")

    # -- mini-shops ------------------------------------------------------------------------------------

    async def open_pool(self, merchant: Identity, pool_id: str, is_open: bool, bps: int | None) -> dict[str, Any]:
        if not merchant.is_merchant:
            raise Forbidden("opening a pool to shopkeepers needs the pool's merchant token")
        pool = await self.pools.get(pool_id)
        if pool is None:
            raise NotFound(f"no stock pool {pool_id}")
        if pool.merchant_id != merchant.user:
            raise Forbidden("this pool belongs to another merchant")
        rate = self.default_bps if bps is None else bps
        await self.sql.open_pool(pool_id, merchant.user, is_open, rate)
        return {"pool_id": pool_id, "open": is_open, "commission_bps": rate}

    async def shelf(self) -> list[dict[str, Any]]:
        """The pools merchants opened to shopkeepers, with their commission."""
        opened = await self.sql.open_pools()
        out = []
        for pool_id, row in sorted(opened.items()):
            pool = await self.pools.get(pool_id)
            if pool is not None:
                out.append({"pool_id": pool_id, "sku": pool.sku, "title": pool.title, "unit_price": pool.unit_price,
                            "currency": pool.currency, "merchant_id": pool.merchant_id,
                            "commission_bps": int(row["commission_bps"])})
        return out

    async def _sellable(self, pools: list[str]) -> None:
        """A shop's list: 1-100 distinct pools, each open to shopkeepers (INVALID / FORBIDDEN otherwise)."""
        if not 1 <= len(pools) <= _MAX_SHOP_ITEMS or len(set(pools)) != len(pools):
            raise InvalidInput(f"pools must list 1-{_MAX_SHOP_ITEMS} distinct pool ids")
        opened = await self.sql.open_pools(pools)
        closed = [p for p in pools if p not in opened]
        if closed:
            raise Forbidden(f"not open to shopkeepers: {', '.join(closed[:5])}")

    async def create_shop(self, viewer: Identity, shop_id: str | None, title: str, pools: list[str]) -> dict[str, Any]:
        if not viewer.is_viewer:
            raise Unauthorized("opening a mini-shop needs a signed-in viewer token")
        await self._sellable(pools)
        await self._rate(viewer)
        shop = Shop(shop_id or "sh-" + secrets.token_hex(5), viewer.user, title, _now_ms())
        if not await self.sql.add_shop(shop, pools):
            found = await self.sql.shop(shop.shop_id)
            if found is not None and found[0].owner == viewer.user and found[1] == pools and found[0].title == title:
                return await self.shop_view(shop.shop_id)  # the same shop again: idempotent
            raise Conflict(f"shop id {shop.shop_id} is taken")
        return await self.shop_view(shop.shop_id)

    async def set_shop_items(self, viewer: Identity, shop_id: str, pools: list[str]) -> dict[str, Any]:
        found = await self.sql.shop(shop_id)
        if found is None:
            raise NotFound(f"no shop {shop_id}")
        if found[0].owner != viewer.user:
            raise Forbidden("this is another shopkeeper's shop")
        await self._sellable(pools)
        await self.sql.set_shop_items(shop_id, pools)
        return await self.shop_view(shop_id)

    async def shop_view(self, shop_id: str) -> dict[str, Any]:
        found = await self.sql.shop(shop_id)
        if found is None:
            raise NotFound(f"no shop {shop_id}")
        shop, items = found
        opened = await self.sql.open_pools(items)
        products = []
        for pool_id in items:
            pool = await self.pools.get(pool_id)
            if pool is None:
                continue
            products.append({"pool_id": pool_id, "sku": pool.sku, "title": pool.title, "unit_price": pool.unit_price,
                             "currency": pool.currency, "open": pool_id in opened})
        return {"shop_id": shop.shop_id, "owner": shop.owner, "title": shop.title, "created_at": shop.created_at_ms,
                "channel": SHOP_CHANNEL_PREFIX + shop.shop_id, "url": f"/shop/{shop.shop_id}", "products": products}

    async def my_shops(self, viewer: Identity) -> list[dict[str, Any]]:
        return [await self.shop_view(s.shop_id) for s in await self.sql.shops_of(viewer.user)]

    async def check_channel(self, channel: str, pool_id: str) -> None:
        """A mini-shop's channel hold: the shop must exist and sell that pool, still open to shopkeepers."""
        shop_id = shop_of_channel(channel)
        if not shop_id and channel.startswith(SHOP_CHANNEL_PREFIX[:-1]):
            raise NotFound(f"no shop in channel {channel}")
        if not shop_id:
            return
        found = await self.sql.shop(shop_id)
        if found is None:
            raise NotFound(f"no shop {shop_id}")
        if pool_id not in found[1] or pool_id not in await self.sql.open_pools([pool_id]):
            raise NotFound(f"shop {shop_id} does not sell pool {pool_id}")

    # -- rates -----------------------------------------------------------------------------------------

    async def set_product_rate(self, host: Identity, room_id: str, product_id: str, bps: int) -> dict[str, Any]:
        if not host.hosts(room_id):
            raise Forbidden("setting a commission needs a host token for this room")
        await self.catalogue.product(room_id, product_id)
        await self.sql.set_product_rate(room_id, product_id, bps)
        return {"room_id": room_id, "product_id": product_id, "commission_bps": bps}

    # -- earnings and reports --------------------------------------------------------------------------

    def ledger_wire(self, row: dict[str, Any], now_ms: int) -> dict[str, Any]:
        return {"order_id": row["order_id"], "source": row["source"], "ref_code": row["ref_code"],
                "room_id": row["room_id"], "channel": row["channel"], "sku": row["sku"], "base": int(row["base"]),
                "rate_bps": int(row["rate_bps"]), "amount": int(row["amount"]), "currency": row["currency"],
                "status": status_of(row, now_ms, self.pending_ms), "settled_at": int(row["settled_at_ms"]),
                "reversed_at": int(row["reversed_at_ms"]) or None}

    async def earnings(self, viewer: Identity) -> dict[str, Any]:
        if not viewer.is_viewer:
            raise Unauthorized("this needs a viewer token")
        rows = await self.sql.commissions_of(viewer.user)
        now = _now_ms()
        return {"sharer": viewer.user, "totals": _money(rows, now, self.pending_ms),
                "commissions": [self.ledger_wire(r, now) for r in rows],
                "pending_days": self.pending_ms / 86_400_000}

    async def room_sharing(self, host: Identity, room_id: str) -> dict[str, Any]:
        if not host.hosts(room_id):
            raise Forbidden("this needs a host token for this room")
        await self.catalogue.room(room_id)
        return {"room_id": room_id, "by_source": await self.sql.orders_by_source(room_id),
                "top_sharers": await self.sql.top_sharers(room_id),
                "rates": await self.sql.product_rates(room_id), "default_bps": self.default_bps}

    async def payouts_csv(self, who: Identity, room_id: str | None, since_ms: int, until_ms: int | None) -> str:
        """Per sharer and currency: orders, pending, confirmed (payable) and reversed commission. A host
        gets its room's (``room_id``); a merchant the commissions on its pools' mini-shop orders; a
        viewer its own."""
        if room_id is not None:
            if not who.hosts(room_id):
                raise Forbidden("this needs a host token for this room")
            rows = await self.sql.ledger(room_id=room_id, since_ms=since_ms, until_ms=until_ms)
        elif who.is_merchant:
            pools = {p.pool_id for p in await self.pools.all(merchant_id=who.user)}
            rows = [r for r in await self.sql.ledger(since_ms=since_ms, until_ms=until_ms)
                    if r["source"] == "shop" and r["sale_id"].rsplit("--", 1)[0] in pools]
        elif who.is_viewer:
            rows = await self.sql.ledger(sharer=who.user, since_ms=since_ms, until_ms=until_ms)
        else:
            raise Forbidden("payouts need a host, merchant or viewer token")
        now = _now_ms()
        agg: dict[tuple[str, str], dict[str, int]] = {}
        for r in rows:
            cell = agg.setdefault((r["sharer"], r["currency"]), {"orders": 0, "pending": 0, "confirmed": 0,
                                                                  "reversed": 0})
            cell["orders"] += 1
            cell[status_of(r, now, self.pending_ms)] += int(r["amount"])
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["sharer", "currency", "orders", "pending", "confirmed", "reversed"])
        for (sharer, currency), c in sorted(agg.items()):
            w.writerow([sharer, currency, c["orders"], c["pending"], c["confirmed"], c["reversed"]])
        return out.getvalue()

"""Online-to-offline offers: a merchant's price for one SKU to the members of one of its audiences,
redeemed at a store's till (``offers``, ``offer_redemptions``, ``offer_uses``).

A redemption is one row, idempotent by ``(offer_id, request_id)``; ``offer_uses`` counts the units
each viewer redeemed of each offer, raised in the SAME transaction by a conditional upsert
(``used + qty <= per_user``), so two tills redeeming for one viewer at once never exceed the offer.
A redemption moves no stock: the till sells from the store's own units (taken from the pool earlier
through the store's channel holds). ``room_id`` / ``sharer`` record the show and the sharer that
caused it (``attribution``); reports read ``offer_redemptions`` (room_id, qty, total, currency, channel).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger, Column, Index, Integer, PrimaryKeyConstraint, String, Table, UniqueConstraint, func, select,
)

from .audiences import sku_matches
from .signal_log import signals
from .store import Store, metadata, orders

__all__ = ["OfferRecord", "RedemptionRecord", "OfferStore", "UsedUp", "offers", "offer_redemptions", "offer_uses"]

offers = Table(
    "offers", metadata,
    Column("offer_id", String(64), primary_key=True),
    Column("merchant_id", String(128), nullable=False),
    Column("audience_id", String(64), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("price", BigInteger, nullable=False),           # per unit, minor units
    Column("currency", String(3), nullable=False),
    Column("valid_until_ms", BigInteger, nullable=False),
    Column("valid_s", Integer, nullable=False, default=0),  # as asked (0: valid_until was given)
    Column("per_user", Integer, nullable=False),           # units one viewer may redeem
    Column("created_at_ms", BigInteger, nullable=False),
    Index("ix_offers_merchant", "merchant_id", "valid_until_ms"),
)

offer_redemptions = Table(
    "offer_redemptions", metadata,
    Column("redemption_id", String(64), primary_key=True),
    Column("offer_id", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("channel", String(64), nullable=False),         # the till's channel, e.g. store:17
    Column("sku", String(128), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),           # qty x price
    Column("currency", String(3), nullable=False),
    Column("audience_id", String(64), nullable=False),
    Column("room_id", String(64), nullable=False),         # the show that caused it ('' = none known)
    Column("sharer", String(128), nullable=False),         # the sharer of the viewer's last link/shop order
    Column("request_id", String(128), nullable=False),
    Column("redeemed_at_ms", BigInteger, nullable=False),
    UniqueConstraint("offer_id", "request_id", name="uq_offer_redemptions_request"),
    Index("ix_offer_redemptions_room", "room_id"),
    Index("ix_offer_redemptions_user", "user_id", "offer_id"),
)

offer_uses = Table(
    "offer_uses", metadata,
    Column("offer_id", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("used", Integer, nullable=False),               # units redeemed so far
    PrimaryKeyConstraint("offer_id", "user_id", name="pk_offer_uses"),
)


@dataclass(frozen=True, slots=True)
class OfferRecord:
    offer_id: str
    merchant_id: str
    audience_id: str
    sku: str
    price: int
    currency: str
    valid_until_ms: int
    valid_s: int
    per_user: int
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class RedemptionRecord:
    redemption_id: str
    offer_id: str
    user_id: str
    channel: str
    sku: str
    qty: int
    price: int
    total: int
    currency: str
    audience_id: str
    room_id: str
    sharer: str
    request_id: str
    redeemed_at_ms: int


class UsedUp(Exception):
    """The viewer has redeemed this offer's ``per_user`` units already; nothing was written."""


def _of(cls: type, row: Any) -> Any:
    m = row._mapping
    return cls(**{f.name: m[f.name] for f in dataclasses.fields(cls)})


class OfferStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = store._insert

    async def add(self, rec: OfferRecord) -> tuple[bool, OfferRecord]:
        """Insert the offer: ``(True, rec)``; or ``(False, the one stored under its id)``."""
        async with self.engine.begin() as conn:
            got = (await conn.execute(self._insert(offers).values(dataclasses.asdict(rec)).on_conflict_do_nothing()
                                      .returning(offers.c.offer_id))).first()
            if got is not None:
                return True, rec
            row = (await conn.execute(select(offers).where(offers.c.offer_id == rec.offer_id))).first()
        assert row is not None
        return False, _of(OfferRecord, row)

    async def get(self, offer_id: str) -> OfferRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(offers).where(offers.c.offer_id == offer_id))).first()
        return None if row is None else _of(OfferRecord, row)

    async def of_merchant(self, merchant_id: str, valid_at_ms: int | None = None,
                          limit: int = 1000) -> list[OfferRecord]:
        """The merchant's offers, newest first; with ``valid_at_ms`` only those valid then."""
        q = select(offers).where(offers.c.merchant_id == merchant_id)
        if valid_at_ms is not None:
            q = q.where(offers.c.valid_until_ms > valid_at_ms)
        q = q.order_by(offers.c.created_at_ms.desc(), offers.c.offer_id).limit(limit)
        async with self.engine.connect() as conn:
            return [_of(OfferRecord, r) for r in await conn.execute(q)]

    async def used(self, offer_ids: Sequence[str], user_id: str) -> dict[str, int]:
        """Units ``user_id`` redeemed of each offer (absent: none)."""
        if not offer_ids:
            return {}
        q = select(offer_uses.c.offer_id, offer_uses.c.used).where(offer_uses.c.user_id == user_id,
                                                                    offer_uses.c.offer_id.in_(list(offer_ids)))
        async with self.engine.connect() as conn:
            return {str(o): int(n) for o, n in await conn.execute(q)}

    async def redemption(self, offer_id: str, request_id: str) -> RedemptionRecord | None:
        q = select(offer_redemptions).where(offer_redemptions.c.offer_id == offer_id,
                                            offer_redemptions.c.request_id == request_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _of(RedemptionRecord, row)

    async def redeem(self, rec: RedemptionRecord, per_user: int) -> tuple[bool, RedemptionRecord]:
        """Record the redemption and count its units, in one transaction: ``(True, rec)``; its
        ``request_id`` used before: ``(False, that redemption)``; past ``per_user`` units: ``UsedUp``."""
        ins = self._insert
        async with self.engine.begin() as conn:
            got = (await conn.execute(ins(offer_redemptions).values(dataclasses.asdict(rec)).on_conflict_do_nothing(
                index_elements=[offer_redemptions.c.offer_id, offer_redemptions.c.request_id])
                .returning(offer_redemptions.c.redemption_id))).first()
            if got is None:
                row = (await conn.execute(select(offer_redemptions).where(
                    offer_redemptions.c.offer_id == rec.offer_id,
                    offer_redemptions.c.request_id == rec.request_id))).first()
                assert row is not None
                return False, _of(RedemptionRecord, row)
            if rec.qty > per_user:
                raise UsedUp(rec.offer_id)
            counted = (await conn.execute(ins(offer_uses).values(offer_id=rec.offer_id, user_id=rec.user_id,
                                                                 used=rec.qty)
                                          .on_conflict_do_update(
                                              index_elements=[offer_uses.c.offer_id, offer_uses.c.user_id],
                                              set_={"used": offer_uses.c.used + rec.qty},
                                              where=offer_uses.c.used + rec.qty <= per_user)
                                          .returning(offer_uses.c.used))).first()
            if counted is None:
                raise UsedUp(rec.offer_id)  # leaves the transaction: the redemption row is rolled back
        return True, rec

    async def attribution(self, user_id: str, sku: str) -> tuple[str, str]:
        """``(room_id, sharer)``: the room of the viewer's newest signal about ``sku`` (any kind, in a room),
        and the sharer of the viewer's newest order that came through a share link or a mini-shop."""
        room_q = (select(signals.c.room_id)
                  .where(signals.c.user_id == user_id, signals.c.room_id != "", sku_matches(signals, sku))
                  .order_by(signals.c.at_ms.desc()).limit(1))
        sharer_q = (select(orders.c.sharer)
                    .where(orders.c.user_id == user_id, orders.c.source.in_(("link", "shop")), orders.c.sharer != "")
                    .order_by(orders.c.settled_at_ms.desc(), orders.c.order_id.desc()).limit(1))
        async with self.engine.connect() as conn:
            room = (await conn.execute(room_q)).scalar()
            sharer = (await conn.execute(sharer_q)).scalar()
        return str(room or ""), str(sharer or "")

    async def redemptions_of(self, offer_id: str, limit: int = 1000) -> list[RedemptionRecord]:
        q = (select(offer_redemptions).where(offer_redemptions.c.offer_id == offer_id)
             .order_by(offer_redemptions.c.redeemed_at_ms, offer_redemptions.c.redemption_id).limit(limit))
        async with self.engine.connect() as conn:
            return [_of(RedemptionRecord, r) for r in await conn.execute(q)]

    async def total_used(self, offer_id: str) -> int:
        q = select(func.coalesce(func.sum(offer_uses.c.used), 0)).where(offer_uses.c.offer_id == offer_id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

"""Online to offline (docs/PROTOCOL.md, Interest audiences: offers at a store's till).

A merchant makes an **offer** to one of its audiences: a price for one of its pools' SKUs, valid until
a time, ``per_user`` units per viewer ("held this SKU last night, did not pay: the same price for 24
hours"). A store's till (a token of the same merchant, naming its channel, e.g. ``store:17``) asks
which offers a viewer holds now (valid, the viewer in the audience now, units left), and redeems one:
idempotent by ``request_id``; refused when expired (``EXPIRED``), the viewer not in the audience
(``NOT_ELIGIBLE``) or its units used (``CONFLICT``). The redemption records the show that caused it
(the room of the viewer's newest signal about the SKU) and the sharer of the viewer's last link or
mini-shop order, so reports count the offline sales a show caused. It moves no stock: the store sells
its own units, taken from the pool earlier through its channel holds.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from inventory.offers import OfferRecord, OfferStore, RedemptionRecord, UsedUp
from inventory.pools import PoolStore
from inventory.store import Store

from .audiences import AUDIENCE_ID_RULE, AudienceId, Audiences
from .errors import Conflict, ErrorCode, Forbidden, InvalidInput, NotFound, Refused
from .identity import Identity
from .requests import Channel, Price
from .validation import ID_RE, ID_RULE, Id, Match, Range

__all__ = ["Offers", "CreateOffer", "RedeemOffer", "offer_wire", "redemption_wire", "OFFER_ID_RULE", "MAX_VALID_S"]

OFFER_ID_RULE = AUDIENCE_ID_RULE
MAX_VALID_S = 31_536_000    # an offer lasts at most a year
MAX_UNITS = 1_000           # per viewer, and per redemption
_CURRENCY = Match(re.compile(r"^[A-Z]{3}\Z"), "a 3-letter ISO 4217 code such as EUR")


@dataclass(frozen=True, slots=True)
class CreateOffer:
    """``POST /api/offers``: exactly one of ``valid_until`` (server time, ms) and ``valid_s``."""
    audience_id: AudienceId
    sku: Annotated[str, Match(ID_RE, ID_RULE)]
    price: Price                                              # per unit, minor units
    currency: Annotated[str, _CURRENCY] | None = None        # default: the pool's
    valid_until: Annotated[int, Range(0, 10**14)] | None = None
    valid_s: Annotated[int, Range(60, MAX_VALID_S)] | None = None
    per_user: Annotated[int, Range(1, MAX_UNITS)] = 1         # units one viewer may redeem
    offer_id: Annotated[str, OFFER_ID_RULE] | None = None


@dataclass(frozen=True, slots=True)
class RedeemOffer:
    """``POST /api/offers/{offer}/redeem``."""
    user: Id
    channel: Channel
    request_id: Id
    qty: Annotated[int, Range(1, MAX_UNITS)] = 1


def offer_wire(o: OfferRecord) -> dict[str, Any]:
    return {"offer_id": o.offer_id, "merchant_id": o.merchant_id, "audience_id": o.audience_id, "sku": o.sku,
            "price": o.price, "currency": o.currency, "valid_until": o.valid_until_ms, "per_user": o.per_user,
            "created_at": o.created_at_ms}


def redemption_wire(r: RedemptionRecord) -> dict[str, Any]:
    return {"redemption_id": r.redemption_id, "offer_id": r.offer_id, "user_id": r.user_id, "channel": r.channel,
            "sku": r.sku, "qty": r.qty, "price": r.price, "total": r.total, "currency": r.currency,
            "audience_id": r.audience_id, "room_id": r.room_id, "sharer": r.sharer, "request_id": r.request_id,
            "redeemed_at": r.redeemed_at_ms}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _merchant(who: Identity) -> Identity:
    if not who.is_merchant:
        raise Forbidden("offers need a merchant token")
    return who


class Offers:
    def __init__(self, store: Store, audiences: Audiences) -> None:
        self.sql = OfferStore(store)
        self.pools = PoolStore(store)
        self.audiences = audiences

    @staticmethod
    def authorize(who: Identity) -> Identity:
        """FORBIDDEN unless a merchant token."""
        return _merchant(who)

    async def create(self, who: Identity, req: CreateOffer) -> tuple[bool, dict[str, Any]]:
        """``(True, Offer)`` when stored now; the same id and body again: ``(False, Offer)``."""
        _merchant(who)
        now = _now_ms()
        if (req.valid_until is None) == (req.valid_s is None):
            raise InvalidInput("give exactly one of valid_until and valid_s")
        if req.valid_until is not None and not now < req.valid_until <= now + MAX_VALID_S * 1000:
            raise InvalidInput("valid_until must be a server time (ms) in the future, within a year")
        audience = await self.audiences.sql.get(req.audience_id)
        if audience is None:
            raise NotFound(f"no audience {req.audience_id}")
        if (audience.owner, audience.owner_role) != (who.user, "merchant"):
            raise Forbidden("the audience must be one of your own")
        pool = await self.pools.by_sku(req.sku)
        if pool is None or pool.merchant_id != who.user:
            raise InvalidInput("sku must be the SKU of one of your pools")
        rec = OfferRecord(
            offer_id=req.offer_id or "of-" + secrets.token_hex(6), merchant_id=who.user,
            audience_id=req.audience_id, sku=req.sku, price=req.price, currency=req.currency or pool.currency,
            valid_until_ms=req.valid_until if req.valid_until is not None else now + (req.valid_s or 0) * 1000,
            valid_s=req.valid_s or 0, per_user=req.per_user, created_at_ms=now)
        fresh, stored = await self.sql.add(rec)
        if not fresh:
            same_validity = (stored.valid_s == rec.valid_s if rec.valid_s
                             else stored.valid_s == 0 and stored.valid_until_ms == rec.valid_until_ms)
            if not same_validity or (stored.merchant_id, stored.audience_id, stored.sku, stored.price, stored.currency,
                                     stored.per_user) != (rec.merchant_id, rec.audience_id, rec.sku, rec.price,
                                                          rec.currency, rec.per_user):
                raise Conflict(f"offer {rec.offer_id} exists with other terms")
        return fresh, offer_wire(stored)

    async def listing(self, who: Identity) -> list[dict[str, Any]]:
        return [offer_wire(o) for o in await self.sql.of_merchant(_merchant(who).user)]

    async def for_viewer(self, who: Identity, channel: str, user_id: str) -> list[dict[str, Any]]:
        """The merchant's offers a viewer holds now at the till of ``channel``: valid, the viewer in the
        offer's audience, units left (``left``)."""
        _merchant(who)
        now = _now_ms()
        valid = await self.sql.of_merchant(who.user, valid_at_ms=now)
        if not valid:
            return []
        holding = set(await self.audiences.member_of(user_id, [o.audience_id for o in valid], now_ms=now))
        mine = [o for o in valid if o.audience_id in holding]
        used = await self.sql.used([o.offer_id for o in mine], user_id)
        out = []
        for o in mine:
            left = o.per_user - used.get(o.offer_id, 0)
            if left > 0:
                out.append({**offer_wire(o), "left": left, "channel": channel})
        return out

    async def redeem(self, who: Identity, offer_id: str, req: RedeemOffer) -> tuple[bool, dict[str, Any]]:
        """``(True, Redemption)``; the same ``request_id`` again: ``(False, the first one)``."""
        _merchant(who)
        offer = await self.sql.get(offer_id)
        if offer is None:
            raise NotFound(f"no offer {offer_id}")
        if offer.merchant_id != who.user:
            raise Forbidden("this offer belongs to another merchant")
        before = await self.sql.redemption(offer_id, req.request_id)
        if before is not None:
            return False, self._replay(before, req)
        now = _now_ms()
        if now >= offer.valid_until_ms:
            raise Refused(ErrorCode.EXPIRED, "this offer has expired")
        if not await self.audiences.contains(offer.audience_id, req.user, now_ms=now):
            raise Refused(ErrorCode.NOT_ELIGIBLE, "this viewer is not in the offer's audience")
        room_id, sharer = await self.sql.attribution(req.user, offer.sku)
        rec = RedemptionRecord(
            redemption_id="rd-" + secrets.token_hex(8), offer_id=offer_id, user_id=req.user, channel=req.channel,
            sku=offer.sku, qty=req.qty, price=offer.price, total=offer.price * req.qty, currency=offer.currency,
            audience_id=offer.audience_id, room_id=room_id, sharer=sharer, request_id=req.request_id,
            redeemed_at_ms=now)
        try:
            fresh, stored = await self.sql.redeem(rec, offer.per_user)
        except UsedUp:
            raise Conflict(f"this viewer has used this offer ({offer.per_user} per viewer)") from None
        return (True, redemption_wire(stored)) if fresh else (False, self._replay(stored, req))

    @staticmethod
    def _replay(before: RedemptionRecord, req: RedeemOffer) -> dict[str, Any]:
        if (before.user_id, before.channel, before.qty) != (req.user, req.channel, req.qty):
            raise Refused(ErrorCode.IDEM_MISMATCH, "this request_id was already used for another redemption")
        return redemption_wire(before)

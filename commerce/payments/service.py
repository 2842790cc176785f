"""``Payments``: checkout through a provider and the provider's signed webhooks.

``checkout`` asks the provider to start a payment for the viewer's hold (amount = the sale's price x
the hold's quantity) and records it in SQL (``started``). ``webhook`` verifies a provider event and:
a genuine, timely ``payment.succeeded`` for the right amount and currency is recorded (event id
unique, payment ``paid``) in SQL BEFORE the hold is confirmed through ``Inventory.confirm`` (payment
ref = the provider's payment id; the order then flows to settlement as with ``pay``); a payment whose
hold can no longer be confirmed (expired, released, paid otherwise, lost) is refunded (a ``refunds``
row, then the provider's refund) and never sells a unit. Forged, stale, malformed, replayed and
mismatching events are refused with a typed code and change nothing; a duplicate of a processed
event is answered as processed (and finishes its work if a crash interrupted it).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from inventory.domain import ConfirmCode, Hold
from inventory.draws import PRIZE_SALE_MARK
from inventory.payments import PaymentRecord, PaymentStore
from inventory.scripts import Inventory
from inventory.store import Store

from ..signals import SignalKind
from ..errors import ErrorCode, NotFound, Refused
from ..checkout import owned_hold
from ..funnel import Funnel
from ..identity import Identity
from ..room_bus import RoomBus
from ..wire import mask_name
from .provider import (
    EventType, PaymentIntent, PaymentMode, PaymentProvider, ProviderError, WebhookEvent, WebhookRejected,
)

__all__ = ["Payments", "WebhookOutcome", "REFUND_REASONS"]

log = logging.getLogger(__name__)

# why a paid payment was refunded instead of confirming its hold (refunds.reason)
REFUND_REASONS = {
    ConfirmCode.EXPIRED: "hold_expired", ConfirmCode.ALREADY_CONFIRMED: "already_paid",
    ConfirmCode.NOT_FOUND: "hold_not_found", ConfirmCode.FORBIDDEN: "hold_owner_mismatch",
    ConfirmCode.INVALID: "invalid_hold", ConfirmCode.HOLD_LOST: "hold_lost",
    ConfirmCode.NOT_OPEN: "balance_not_open",
}


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    """What a webhook did: ``confirmed`` | ``deposited`` (a pre-sale's deposit) | ``refunded`` | ``canceled`` |
    ``duplicate`` | ``ignored``."""

    outcome: str
    payment_id: str
    order_id: str | None = None
    refund_reason: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"received": True, "outcome": self.outcome, "payment_id": self.payment_id}
        if self.order_id:
            out["order_id"] = self.order_id
        if self.refund_reason:
            out["refund_reason"] = self.refund_reason
        return out


def payment_wire(p: PaymentRecord) -> dict[str, Any]:
    """The client's view of a started payment (``payment_started`` without type and rid)."""
    out: dict[str, Any] = {"hold": p.hold_id, "payment_id": p.payment_id, "amount": p.amount,
                           "currency": p.currency, "provider": p.provider}
    if p.redirect_url:
        out["redirect_url"] = p.redirect_url
    if p.client_secret:
        out["client_secret"] = p.client_secret
    return out


def amount_due(unit_price: int, deposit: int, hold: Hold) -> int:
    """What a payment for ``hold`` must collect: the price x qty; on a pre-sale (``deposit`` > 0) the
    deposit x qty while the hold is ``held``, then the rest once it is ``deposit``."""
    if deposit and hold.status == "held":
        return deposit * hold.qty
    if deposit and hold.status == "deposit":
        return (unit_price - deposit) * hold.qty
    return unit_price * hold.qty


class Payments:
    def __init__(self, store: Store, inventory: Inventory, bus: RoomBus, funnel: Funnel,
                 mode: PaymentMode = PaymentMode.INSTANT, provider: PaymentProvider | None = None) -> None:
        if (mode is PaymentMode.INSTANT) != (provider is None):
            raise ValueError("a provider is needed exactly when the payment mode is not instant")
        self.sql = PaymentStore(store)
        self.sql_sales = store
        self.inventory = inventory
        self.bus = bus
        self.funnel = funnel
        self.mode = mode
        self.provider = provider
        self.coupons: Any = None  # commerce.coupons.Coupons (Commerce sets it): coupons applied at checkout
        self.on_paid: Any = None  # (room, user, total, currency): the fan team leaderboard (commerce.teams)
        self.attribution: Any = None  # async (user) -> share-link attribution for confirm (commerce.growth)
        self.signals: Any = None  # interest signals (commerce/signals.py; Commerce sets it)

    async def _attribution(self, user: str) -> str:
        return await self.attribution(user) if self.attribution is not None else ""

    @property
    def instant(self) -> bool:
        return self.mode is PaymentMode.INSTANT

    async def aclose(self) -> None:
        if self.provider is not None:
            await self.provider.aclose()

    # -- checkout ----------------------------------------------------------------------------------

    async def checkout(self, viewer: Identity, hold_id: str, coupon: str | None = None) -> dict[str, Any]:
        """Start (or return the started) provider payment for the viewer's hold; ``coupon``: a claimed
        coupon locked to the hold now, its discount taken off the amount (docs/PROTOCOL.md Coupon drops).
        Nothing left to pay (a draw's prize, a 100% coupon): the hold is confirmed at once, no provider."""
        provider = self.provider
        if provider is None:
            raise Refused(ErrorCode.NO_PROVIDER, "payments are instant on this server: send pay")
        hold = await owned_hold(self.inventory, viewer, hold_id)
        sale_id = hold.sale_id
        if hold.status == "confirmed":
            raise Refused(ErrorCode.ALREADY_CONFIRMED, "this hold is already paid")
        now = await self.inventory.now_ms()
        if hold.status not in ("held", "deposit") or now >= hold.pay_by_ms:
            raise Refused(ErrorCode.EXPIRED, "the hold expired or was released; buy again")
        sale = await self.sql_sales.get_sale(sale_id)
        if hold.status == "deposit" and sale is not None and now < sale.balance_from_ms:
            raise Refused(ErrorCode.NOT_OPEN, "the balance of this pre-sale can be paid once its window opens")
        for p in await self.sql.for_hold(hold_id):
            if p.status in ("started", "paid") and p.provider == provider.name:
                if p.coupon != (coupon or ""):
                    raise Refused(ErrorCode.CONFLICT, "a payment for this hold was started "
                                  + (f"with coupon {p.coupon}" if p.coupon else "without a coupon")
                                  + ": complete it (the same checkout again returns it)")
                return payment_wire(p)  # the same payment again (a retry, a second tab)
        counters = await self.inventory.counters(sale_id)
        if counters is None:
            raise NotFound(f"no sale {sale_id}")
        amount = amount_due(counters.unit_price, sale.deposit if sale is not None else 0, hold)
        discount = 0
        if coupon is not None:
            discount = await self.coupons.lock_for(viewer, hold, coupon, sale)
            amount -= discount
        if amount == 0 and hold.status == "held":
            return await self._free(viewer, hold_id, counters.currency, discount, coupon)
        intent = PaymentIntent(hold_id, sale_id, viewer.user, amount, counters.currency,
                               f"{hold.qty} x {counters.sku} (sale {sale_id})")
        try:
            started = await provider.start(intent)
        except ProviderError as e:
            log.warning("payments: starting a payment for hold %s failed: %s", hold_id, e)
            raise Refused(ErrorCode.PAYMENT_UNAVAILABLE, "the payment provider is unavailable; retry") from None
        now = int(time.time() * 1000)
        record = PaymentRecord(
            payment_id=started.payment_id, provider=provider.name, hold_id=hold_id, sale_id=sale_id,
            room_id=counters.room_id, user_id=viewer.user, buyer_name=viewer.name[:64], amount=amount,
            currency=counters.currency, status="started", redirect_url=started.redirect_url,
            client_secret=started.client_secret, event_id="", order_id="", created_at_ms=now, paid_at_ms=0,
            updated_at_ms=now, coupon=coupon or "", discount=discount)
        await self.sql.add(record)
        log.info("payments: started %s for hold %s (%d %s)", record.payment_id, hold_id, amount, record.currency)
        return payment_wire(record)

    async def _free(self, viewer: Identity, hold_id: str, currency: str, discount: int,
                    coupon: str | None) -> dict[str, Any]:
        """A hold with nothing to pay is confirmed without the provider (payment id ``free-<hold>``)."""
        ref = "free-" + hold_id
        result = await self.inventory.confirm(hold_id, ref, viewer.user, discount, coupon or "",
                                              await self._attribution(viewer.user))
        if coupon:
            await self.coupons.finish(viewer.user, coupon, hold_id)
        if result.code is not ConfirmCode.CONFIRMED:
            raise Refused(ErrorCode(result.code.value) if result.code.value in ErrorCode.__members__
                          else ErrorCode.EXPIRED, "the hold could not be confirmed")
        if result.fresh:
            hold = await self.inventory.get_hold(hold_id)
            counters = await self.inventory.counters(hold.sale_id) if hold else None
            if hold is not None and counters is not None and not hold.channel and PRIZE_SALE_MARK not in hold.sale_id:
                self.funnel.count(counters.room_id, "paid", viewer.user)  # a draw's prize is not a purchase
        return {"hold": hold_id, "payment_id": ref, "amount": 0, "currency": currency, "provider": "none",
                "status": "confirmed", "order_id": result.order_id or hold_id}

    # -- webhooks ----------------------------------------------------------------------------------

    async def webhook(self, provider_name: str, headers: dict[str, str], body: bytes) -> WebhookOutcome:
        provider = self.provider
        if provider is None or provider_name != provider.name:
            log.warning("payments: webhook for provider %r refused: not configured", provider_name[:32])
            raise Refused(ErrorCode.NO_PROVIDER, f"no payment provider {provider_name[:32]!r} on this server")
        try:
            event = provider.verify(headers, body, time.time())
        except WebhookRejected as e:
            log.warning("payments: webhook refused (%s): %s", e.reason, e.message)
            raise Refused(ErrorCode(e.reason), e.message) from None
        digest = hashlib.sha256(body).hexdigest()
        p = await self.sql.get(event.payment_id)
        if p is None or p.provider != provider.name:
            log.warning("payments: webhook %s for unknown payment %s refused", event.event_id, event.payment_id)
            raise NotFound(f"no payment {event.payment_id}")
        seen = await self.sql.event_hash(event.event_id)
        if seen is not None:
            return await self._seen_again(event, p, seen == digest)
        await self._check_amount(event, p)
        if event.type is EventType.CANCELED:
            got = await self.sql.record_event(event.event_id, provider.name, p.payment_id, event.type.value, digest,
                                              "canceled", ("started",))
            if got != "new":
                return await self._seen_again(event, p, got == "duplicate")
            log.info("payments: %s canceled (event %s)", p.payment_id, event.event_id)
            return WebhookOutcome("canceled", p.payment_id)
        got = await self.sql.record_event(event.event_id, provider.name, p.payment_id, event.type.value, digest,
                                          "paid", ("started", "canceled"))
        if got != "new":
            return await self._seen_again(event, p, got == "duplicate")
        fresh = await self.sql.get(p.payment_id)
        assert fresh is not None
        if fresh.status != "paid":  # this payment was settled by an earlier, different event
            log.info("payments: event %s for %s, already %s: nothing to do", event.event_id, p.payment_id,
                     fresh.status)
            return WebhookOutcome("duplicate", p.payment_id, fresh.order_id or None)
        return await self._resolve(fresh)

    async def _seen_again(self, event: WebhookEvent, p: PaymentRecord, same: bool) -> WebhookOutcome:
        if not same:
            log.warning("payments: webhook event %s replayed with another body: refused", event.event_id)
            raise Refused(ErrorCode.REPLAYED, f"event {event.event_id} was already processed with another body")
        log.info("payments: duplicate webhook event %s (payment %s, %s)", event.event_id, p.payment_id, p.status)
        if p.status == "paid":  # recorded, but its confirm or refund did not finish: finish it now
            done = await self._resolve(p)
            return WebhookOutcome("duplicate", p.payment_id, done.order_id, done.refund_reason)
        return WebhookOutcome("duplicate", p.payment_id, p.order_id or None)

    async def _check_amount(self, event: WebhookEvent, p: PaymentRecord) -> None:
        """The event's amount and currency against the hold: price x qty of the sale (from Redis while
        the hold is there; the payment record computed it at checkout)."""
        amount, currency = p.amount, p.currency
        hold = await self.inventory.get_hold(p.hold_id)
        counters = await self.inventory.counters(p.sale_id) if hold is not None else None
        if hold is not None and counters is not None and hold.status != "deposit" and not hold.deposit_ref:
            amount, currency = counters.unit_price * hold.qty - p.discount, counters.currency
        # a pre-sale hold is paid twice (deposit, balance): each payment's amount is the one its
        # checkout computed for its step
        if event.currency != currency:
            log.warning("payments: webhook %s for %s refused: currency %s, expected %s", event.event_id,
                        p.payment_id, event.currency, currency)
            raise Refused(ErrorCode.CURRENCY_MISMATCH,
                          f"currency {event.currency} does not match the hold's {currency}")
        if event.amount != amount:
            log.warning("payments: webhook %s for %s refused: amount %d, expected %d", event.event_id,
                        p.payment_id, event.amount, amount)
            raise Refused(ErrorCode.AMOUNT_MISMATCH, f"amount {event.amount} does not match the hold's {amount}")

    async def _resolve(self, p: PaymentRecord) -> WebhookOutcome:
        """A ``paid`` payment: confirm its hold (the order goes to settlement), or refund it."""
        result = await self.inventory.confirm(p.hold_id, p.payment_id, p.user_id, p.discount, p.coupon,
                                              await self._attribution(p.user_id))
        if p.coupon:  # redeemed when the hold was confirmed with it, else the buyer has it back
            await self.coupons.finish(p.user_id, p.coupon, p.hold_id)
        if result.code is ConfirmCode.DEPOSITED:  # a pre-sale's deposit: the unit stays held for the balance
            await self.sql.mark_deposit(p.payment_id)
            log.info("payments: %s paid the deposit of hold %s", p.payment_id, p.hold_id)
            return WebhookOutcome("deposited", p.payment_id)
        if result.code is ConfirmCode.CONFIRMED:
            order_id = result.order_id or p.hold_id
            await self.sql.mark_confirmed(p.payment_id, order_id)
            if result.fresh:
                await self._announce(p)
            log.info("payments: %s confirmed hold %s", p.payment_id, p.hold_id)
            return WebhookOutcome("confirmed", p.payment_id, order_id)
        reason = REFUND_REASONS[result.code]
        if result.code is ConfirmCode.EXPIRED and result.status == "released":
            reason = "hold_released"
        fresh = await self.sql.refund(p, reason)
        log.warning("payments: %s arrived for hold %s that could not be confirmed (%s): refunding %d %s",
                    p.payment_id, p.hold_id, reason, p.amount, p.currency)
        if fresh and self.provider is not None:
            await self.send_refund(p.payment_id, p.amount, p.currency, reason)
            await self.bus.to_user(p.room_id, p.user_id, {
                "type": "payment_refunded", "hold": p.hold_id, "payment_id": p.payment_id, "amount": p.amount,
                "currency": p.currency, "reason": reason})
        return WebhookOutcome("refunded", p.payment_id, None, reason)

    async def send_refund(self, payment_id: str, amount: int, currency: str, reason: str) -> bool:
        """Ask the provider to give a recorded refund back (the provider keys refunds by payment: a
        second request for the same payment refunds nothing more); ``sent`` or ``failed`` in SQL. A
        failed one is sent again by ``RefundRetry`` (commerce/payments/refunds.py)."""
        if self.provider is None:
            return False
        try:
            refund_id = await self.provider.refund(payment_id, amount, currency, reason)
        except ProviderError as e:
            log.error("payments: refund of %s recorded but not sent to the provider: %s", payment_id, e)
            await self.sql.refund_sent(payment_id, False)
            return False
        await self.sql.refund_sent(payment_id, True, refund_id)
        return True

    async def _announce(self, p: PaymentRecord) -> None:
        """The room's "just bought" ticker and the funnel's ``paid``, once per confirmed hold."""
        hold = await self.inventory.get_hold(p.hold_id)
        if hold is None or not hold.confirmed_ms or hold.channel:  # a channel's sale has no room to tell
            return
        self.funnel.count(p.room_id, "paid", p.user_id)
        if self.signals is not None:
            self.signals.record(SignalKind.PAID, p.user_id, p.room_id, sale=hold.sale_id, ref=hold.hold_id)
        if self.on_paid is not None:
            await self.on_paid(p.room_id, p.user_id, p.amount, p.currency)
        await self.bus.ambient(p.room_id, {"k": "b", "b": {"name": mask_name(p.buyer_name or p.user_id),
                                                           "sale_id": hold.sale_id, "qty": hold.qty,
                                                           "ts": hold.confirmed_ms}})

"""Provider payments in SQL: the payments, their webhook events and refunds (docs/DATABASE.md).

The tables are defined on ``inventory.store.metadata`` (the store creates them at start). A payment
is written when a checkout starts it (``started``); a genuine webhook moves it to ``paid`` in the
same transaction that records the event id (unique: a replay cannot be processed twice) BEFORE the
hold is confirmed in Redis, then to ``confirmed`` (the order flows to settlement) or ``refunded``
(with a ``refunds`` row) before the webhook is acknowledged. So a paid payment survives the loss of
Redis, and a payment that found no hold to confirm is refunded, never sold twice.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import BigInteger, Column, Index, String, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .store import Store, metadata

__all__ = [
    "PaymentRecord", "RefundRecord", "PaymentStore", "PAYMENT_STATUSES", "payments", "payment_events",
    "refunds",
]

PAYMENT_STATUSES = ("started", "paid", "confirmed", "deposit", "refunded", "canceled")

payments = Table(
    "payments", metadata,
    Column("payment_id", String(128), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("hold_id", String(128), nullable=False),
    Column("sale_id", String(64), nullable=False),
    Column("room_id", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("buyer_name", String(64), nullable=False, default=""),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("redirect_url", String(2048), nullable=False, default=""),
    Column("client_secret", String(256), nullable=False, default=""),
    Column("event_id", String(128), nullable=False, default=""),
    Column("order_id", String(128), nullable=False, default=""),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("paid_at_ms", BigInteger, nullable=False, default=0),
    Column("updated_at_ms", BigInteger, nullable=False),
    # a coupon locked to the hold at checkout (docs/PROTOCOL.md Coupon drops): `amount` is net of `discount`
    Column("coupon", String(64), nullable=False, default="", server_default=""),
    Column("discount", BigInteger, nullable=False, default=0, server_default="0"),
    Index("ix_payments_hold", "hold_id"),
)

payment_events = Table(
    "payment_events", metadata,
    Column("event_id", String(128), primary_key=True),  # unique: one processing per provider event
    Column("provider", String(32), nullable=False),
    Column("payment_id", String(128), nullable=False),
    Column("type", String(32), nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("received_at_ms", BigInteger, nullable=False),
)

refunds = Table(
    "refunds", metadata,
    Column("payment_id", String(128), primary_key=True),  # at most one refund per payment
    Column("hold_id", String(128), nullable=False),
    Column("sale_id", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("status", String(16), nullable=False),         # requested | sent | failed
    Column("provider_refund_id", String(128), nullable=False, default=""),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    payment_id: str
    provider: str
    hold_id: str
    sale_id: str
    room_id: str
    user_id: str
    buyer_name: str
    amount: int
    currency: str
    status: str
    redirect_url: str
    client_secret: str
    event_id: str
    order_id: str
    created_at_ms: int
    paid_at_ms: int
    updated_at_ms: int
    coupon: str = ""    # a coupon applied at checkout (its drop id), '' = none
    discount: int = 0   # its discount: `amount` is what remains to pay


@dataclass(frozen=True, slots=True)
class RefundRecord:
    payment_id: str
    hold_id: str
    sale_id: str
    user_id: str
    amount: int
    currency: str
    reason: str
    status: str
    provider_refund_id: str
    created_at_ms: int
    updated_at_ms: int


def _now_ms() -> int:
    return int(time.time() * 1000)


def _rec(cls: type, row: Any) -> Any:
    return cls(**{f.name: row._mapping[f.name] for f in dataclasses.fields(cls)})


EventOutcome = Literal["new", "duplicate", "conflict"]


class PaymentStore:
    """Queries of the payment tables, over the store's engine."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert

    async def add(self, p: PaymentRecord) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(payments.insert().values(dataclasses.asdict(p)))

    async def get(self, payment_id: str) -> PaymentRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(payments).where(payments.c.payment_id == payment_id))).first()
        return None if row is None else _rec(PaymentRecord, row)

    async def for_hold(self, hold_id: str) -> list[PaymentRecord]:
        q = select(payments).where(payments.c.hold_id == hold_id).order_by(payments.c.created_at_ms)
        async with self.engine.connect() as conn:
            return [_rec(PaymentRecord, r) for r in await conn.execute(q)]

    async def event_hash(self, event_id: str) -> str | None:
        """The body hash of an event already recorded, or None."""
        q = select(payment_events.c.body_sha256).where(payment_events.c.event_id == event_id)
        async with self.engine.connect() as conn:
            v = (await conn.execute(q)).scalar_one_or_none()
        return None if v is None else str(v)

    async def record_event(self, event_id: str, provider: str, payment_id: str, kind: str, body_sha256: str,
                           new_status: str | None, from_statuses: tuple[str, ...]) -> EventOutcome:
        """In ONE transaction: record the event (unique id) and, when it is new, move the payment to
        ``new_status`` if it is in one of ``from_statuses`` (stamping the event id and, for ``paid``,
        the time). ``duplicate``: the same event (same body) was recorded before; ``conflict``: the
        event id was recorded with another body (a replay). Neither changes anything."""
        now = _now_ms()
        async with self.engine.begin() as conn:
            stmt = (self._insert(payment_events)
                    .values(event_id=event_id, provider=provider, payment_id=payment_id, type=kind,
                            body_sha256=body_sha256, received_at_ms=now)
                    .on_conflict_do_nothing(index_elements=[payment_events.c.event_id])
                    .returning(payment_events.c.event_id))
            if (await conn.execute(stmt)).first() is None:
                q = select(payment_events.c.body_sha256).where(payment_events.c.event_id == event_id)
                stored = (await conn.execute(q)).scalar_one()
                return "duplicate" if stored == body_sha256 else "conflict"
            if new_status is not None:
                values: dict[str, Any] = {"status": new_status, "event_id": event_id, "updated_at_ms": now}
                if new_status == "paid":
                    values["paid_at_ms"] = now
                await conn.execute(update(payments)
                                   .where(payments.c.payment_id == payment_id,
                                          payments.c.status.in_(from_statuses))
                                   .values(**values))
        return "new"

    async def mark_confirmed(self, payment_id: str, order_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(payments)
                               .where(payments.c.payment_id == payment_id, payments.c.status == "paid")
                               .values(status="confirmed", order_id=order_id, updated_at_ms=_now_ms()))

    async def mark_deposit(self, payment_id: str) -> None:
        """A pre-sale's deposit payment that made its hold ``deposit`` (not an order: the balance is one)."""
        async with self.engine.begin() as conn:
            await conn.execute(update(payments)
                               .where(payments.c.payment_id == payment_id, payments.c.status == "paid")
                               .values(status="deposit", updated_at_ms=_now_ms()))

    async def refund(self, p: PaymentRecord, reason: str) -> bool:
        """In ONE transaction: the payment becomes ``refunded`` and its refund row is written
        (``requested``); False when a refund of this payment was recorded before."""
        now = _now_ms()
        async with self.engine.begin() as conn:
            stmt = (self._insert(refunds)
                    .values(payment_id=p.payment_id, hold_id=p.hold_id, sale_id=p.sale_id, user_id=p.user_id,
                            amount=p.amount, currency=p.currency, reason=reason, status="requested",
                            provider_refund_id="", created_at_ms=now, updated_at_ms=now)
                    .on_conflict_do_nothing(index_elements=[refunds.c.payment_id])
                    .returning(refunds.c.payment_id))
            fresh = (await conn.execute(stmt)).first() is not None
            await conn.execute(update(payments).where(payments.c.payment_id == p.payment_id)
                               .values(status="refunded", updated_at_ms=now))
        return fresh

    async def refund_sent(self, payment_id: str, ok: bool, provider_refund_id: str = "") -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(refunds).where(refunds.c.payment_id == payment_id)
                               .values(status="sent" if ok else "failed", provider_refund_id=provider_refund_id,
                                       updated_at_ms=_now_ms()))

    async def refunds_due(self, before_ms: int, limit: int = 100) -> list[RefundRecord]:
        """Refunds recorded but not (yet) accepted by the provider, untouched since ``before_ms``:
        ``requested`` (the process that recorded it stopped before sending) or ``failed``."""
        q = (select(refunds).where(refunds.c.status.in_(("requested", "failed")), refunds.c.updated_at_ms < before_ms)
             .order_by(refunds.c.updated_at_ms).limit(limit))
        async with self.engine.connect() as conn:
            return [_rec(RefundRecord, r) for r in await conn.execute(q)]

    async def claim_refund(self, r: RefundRecord) -> bool:
        """Take a due refund for one sending attempt (a compare-and-set on its ``updated_at_ms``): False
        when another process took it or it changed since it was read."""
        async with self.engine.begin() as conn:
            done = await conn.execute(update(refunds)
                                      .where(refunds.c.payment_id == r.payment_id,
                                             refunds.c.updated_at_ms == r.updated_at_ms,
                                             refunds.c.status.in_(("requested", "failed")))
                                      .values(updated_at_ms=max(_now_ms(), r.updated_at_ms + 1)))
        return bool(done.rowcount)

    async def get_refund(self, payment_id: str) -> RefundRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(refunds).where(refunds.c.payment_id == payment_id))).first()
        return None if row is None else _rec(RefundRecord, row)

"""The payment provider interface and its typed values. Pure (no I/O here).

A provider does two things for livesale: ``start`` a payment for a hold (the provider answers with
its payment id and what the client needs to pay: a redirect URL to a hosted page and/or a client
secret for an embedded form), and ``verify`` a webhook it sent (signature, timestamp, body) into a
typed ``WebhookEvent``. ``refund`` gives a payment's money back (a payment that arrived too late).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson

from .signature import SIGNATURE_HEADER, SignatureError, verify_signature

__all__ = [
    "PaymentMode", "PAYMENT_MODES", "PaymentIntent", "PaymentStart", "EventType", "WebhookEvent",
    "WebhookRejected", "PaymentProvider", "ProviderError", "parse_event", "verify_webhook",
]

_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}\Z")
_CURRENCY = re.compile(r"^[A-Z]{3}\Z")
_MAX_BODY = 64 * 1024


class PaymentMode(StrEnum):
    INSTANT = "instant"   # `pay` confirms at once (load tests, benchmarks); no provider
    SANDBOX = "sandbox"   # the sandbox provider that ships with livesale (server/sandbox_pay.py)


PAYMENT_MODES = tuple(m.value for m in PaymentMode)


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    """What livesale asks a provider to collect: ``amount`` minor units of ``currency`` for a hold."""

    hold_id: str
    sale_id: str
    user_id: str
    amount: int
    currency: str
    description: str


@dataclass(frozen=True, slots=True)
class PaymentStart:
    """The provider's answer to ``start``: its payment id and what the client needs to pay."""

    payment_id: str
    redirect_url: str = ""
    client_secret: str = ""


class EventType(StrEnum):
    SUCCEEDED = "payment.succeeded"
    CANCELED = "payment.canceled"


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified webhook: the provider's event id (unique per event), its type, the payment."""

    event_id: str
    type: EventType
    payment_id: str
    amount: int
    currency: str
    created_s: int


class WebhookRejected(Exception):
    """A webhook refused before anything changed: ``reason`` is one of ``BAD_SIGNATURE``,
    ``STALE_WEBHOOK``, ``BAD_WEBHOOK`` (a body that is not a valid event)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ProviderError(Exception):
    """The provider could not be reached or refused a call (nothing is known to have changed)."""


class PaymentProvider(Protocol):
    name: str

    async def start(self, intent: PaymentIntent) -> PaymentStart: ...

    def verify(self, headers: dict[str, str], body: bytes, now_s: float) -> WebhookEvent: ...

    async def refund(self, payment_id: str, amount: int, currency: str, reason: str) -> str:
        """Give the payment back; returns the provider's refund id."""
        ...

    async def aclose(self) -> None: ...


def parse_event(body: bytes) -> WebhookEvent:
    """The event in a webhook body (livesale's provider format, docs/PROTOCOL.md "Payments"):
    ``{"id", "type", "created", "data": {"payment_id", "amount", "currency"}}``."""
    if len(body) > _MAX_BODY:
        raise WebhookRejected("BAD_WEBHOOK", "body too large")
    try:
        obj: Any = orjson.loads(body)
        data = obj["data"]
        event_id, kind, created = obj["id"], obj["type"], obj["created"]
        payment_id, amount, currency = data["payment_id"], data["amount"], data["currency"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise WebhookRejected("BAD_WEBHOOK", "the body is not a payment event") from None
    if not (isinstance(event_id, str) and _ID.match(event_id) and isinstance(payment_id, str)
            and _ID.match(payment_id)):
        raise WebhookRejected("BAD_WEBHOOK", "event id and payment id must be 1-128 characters of [A-Za-z0-9_.:@-]")
    if kind not in (EventType.SUCCEEDED.value, EventType.CANCELED.value):
        raise WebhookRejected("BAD_WEBHOOK", "unknown event type")
    for value in (amount, created):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise WebhookRejected("BAD_WEBHOOK", "amount and created must be non-negative integers")
    if not (isinstance(currency, str) and _CURRENCY.match(currency)):
        raise WebhookRejected("BAD_WEBHOOK", "currency must be a 3-letter code")
    return WebhookEvent(event_id, EventType(kind), payment_id, amount, currency, created)


def verify_webhook(secrets: str | tuple[str, ...], headers: dict[str, str], body: bytes, now_s: float,
                   tolerance_s: int) -> WebhookEvent:
    """Signature and timestamp first (``BAD_SIGNATURE`` / ``STALE_WEBHOOK``), then the body."""
    header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None)
    try:
        verify_signature(secrets, header, body, now_s=now_s, tolerance_s=tolerance_s)
    except SignatureError as e:
        raise WebhookRejected("STALE_WEBHOOK" if e.stale else "BAD_SIGNATURE", e.message) from None
    return parse_event(body)

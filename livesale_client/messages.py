"""Typed server messages (docs/PROTOCOL.md "Server → client"). Pure: no I/O.

``parse(raw)`` turns one decoded message (a dict) into a frozen dataclass of its ``type``; a type this
client does not know becomes ``Unknown`` (its ``type`` and the raw dict), so new server events never
break a client. Every object keeps the message it came from in ``raw``, and fields the server adds
later stay readable there. Nested objects (sale, product, order, comment) are plain dicts, as sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

__all__ = [
    "Message", "RoomEvent", "Unknown", "Hello", "Snapshot", "Resumed", "ClockReply", "Pong", "Tick",
    "RoomStatus", "RoomUpdated", "ProductAdded", "ProductPinned", "ProductUnpinned", "SaleScheduled", "SaleOpen",
    "SaleSoldOut", "SaleClosed", "Announcement", "CommentHidden", "UserMuted", "BuyResult", "PayResult",
    "ReleaseResult", "PaymentStarted", "PaymentRefunded", "OrderConfirmed", "OrderRefunded", "Ok", "Error",
    "TYPES", "parse", "is_sequenced",
]

# Replies and personal messages never carry `seq`; every room event does (also types added after this
# client was written: they are counted by `seq` all the same, so no false gap is seen)
UNSEQUENCED = frozenset({
    "snapshot", "resumed", "hello", "clock", "pong", "tick", "ok", "error", "buy_result", "pay_result",
    "release_result", "order_confirmed", "payment_started", "payment_refunded", "order_refunded",
    "deposit_expired", "team_joined", "vote_result", "claim_result", "entry_result", "draw_won", "shelf", "notice",
})


def _raw() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Any server message: ``raw`` is the decoded dict it was parsed from."""

    type: ClassVar[str] = ""
    raw: dict[str, Any] = _raw()


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomEvent(Message):
    """A sequenced room event (the critical lane): ``seq`` per room, gap-free; ``epoch``; ``ts`` (ms)."""

    seq: int | None = None
    epoch: str | None = None
    ts: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown(Message):
    """A message type this client does not know (a newer server): keep ``raw``, never fail."""

    kind: str = ""  # its `type`


# -- session -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(Message):
    type: ClassVar[str] = "hello"
    v: str = ""
    server_time: int = 0
    session: str = ""
    limits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot(Message):
    """The room's full state (replace all local state); also sent unasked after the gateway lost track."""

    type: ClassVar[str] = "snapshot"
    recovered: bool = False
    room: dict[str, Any] = field(default_factory=dict)
    pinned: dict[str, Any] | None = None
    products: list[dict[str, Any]] = field(default_factory=list)
    sales: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    announcement: dict[str, Any] | None = None
    viewers: int = 0
    likes: int = 0
    epoch: str | None = None
    seq: int | None = None
    server_time: int | None = None
    you: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Resumed(Message):
    """The join resumed: the events with seq in (from_seq, to_seq] follow, in order."""

    type: ClassVar[str] = "resumed"
    recovered: bool = True
    epoch: str = ""
    from_seq: int = 0
    to_seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockReply(Message):
    type: ClassVar[str] = "clock"
    t0: float = 0.0
    t1: float = 0.0
    t2: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(Message):
    type: ClassVar[str] = "pong"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick(Message):
    """Ambient state, coalesced per room tick; a field left out did not change (None here)."""

    type: ClassVar[str] = "tick"
    ts: int | None = None
    viewers: int | None = None                     # viewer count
    likes: int | None = None
    units: dict[str, int] | None = None            # stock: units left per open sale
    comments: list[dict[str, Any]] | None = None   # {id, user, name, text, ts}
    bought: list[dict[str, Any]] | None = None     # the "just bought" ticker: {name, sale_id, qty, ts}
    sampled: bool = False


# -- room events -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class RoomStatus(RoomEvent):
    type: ClassVar[str] = "room_status"
    status: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomUpdated(RoomEvent):
    type: ClassVar[str] = "room_updated"
    room: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductAdded(RoomEvent):
    type: ClassVar[str] = "product_added"
    product: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductPinned(RoomEvent):
    type: ClassVar[str] = "product_pinned"
    product: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductUnpinned(RoomEvent):
    type: ClassVar[str] = "product_unpinned"


@dataclass(frozen=True, slots=True, kw_only=True)
class SaleScheduled(RoomEvent):
    """A sale announced: count down to ``sale["starts_at"]`` (server ms)."""

    type: ClassVar[str] = "sale_scheduled"
    sale: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SaleOpen(RoomEvent):
    type: ClassVar[str] = "sale_open"
    sale: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # "restocked": expired holds brought a sold-out sale back


@dataclass(frozen=True, slots=True, kw_only=True)
class SaleSoldOut(RoomEvent):
    type: ClassVar[str] = "sale_sold_out"
    sale_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SaleClosed(RoomEvent):
    type: ClassVar[str] = "sale_closed"
    sale_id: str = ""
    reason: str = ""  # ended | stopped | live_ended
    ends_at: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Announcement(RoomEvent):
    type: ClassVar[str] = "announcement"
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommentHidden(RoomEvent):
    type: ClassVar[str] = "comment_hidden"
    comment: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserMuted(RoomEvent):
    type: ClassVar[str] = "user_muted"
    user: str = ""


# -- answers and personal messages ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class BuyResult(Message):
    """``code``: RESERVED (then ``hold``, ``pay_by``), NOT_STARTED (``starts_at``), SOLD_OUT, LIMIT, ENDED, ..."""

    type: ClassVar[str] = "buy_result"
    rid: str = ""
    code: str = ""
    sale: str = ""
    qty: int = 1
    units_left: int | None = None
    hold: str | None = None
    pay_by: int | None = None
    starts_at: int | None = None
    message: str | None = None

    @property
    def reserved(self) -> bool:
        return self.code == "RESERVED"


@dataclass(frozen=True, slots=True, kw_only=True)
class PayResult(Message):
    """``code``: CONFIRMED / ALREADY_CONFIRMED (then ``order``), EXPIRED, PAYMENT_REQUIRED (use checkout), ..."""

    type: ClassVar[str] = "pay_result"
    rid: str = ""
    code: str = ""
    hold: str = ""
    order: str | None = None
    coupon: str | None = None
    discount: int | None = None
    total: int | None = None
    message: str | None = None

    @property
    def confirmed(self) -> bool:
        return self.code in ("CONFIRMED", "ALREADY_CONFIRMED")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseResult(Message):
    type: ClassVar[str] = "release_result"
    rid: str = ""
    code: str = ""  # RELEASED, NOT_HELD, ...
    hold: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentStarted(Message):
    """The answer to ``checkout``: open ``redirect_url`` (the provider's pay page) or use ``client_secret``."""

    type: ClassVar[str] = "payment_started"
    rid: str = ""
    hold: str = ""
    payment_id: str = ""
    amount: int = 0
    currency: str = ""
    provider: str = ""
    redirect_url: str | None = None
    client_secret: str | None = None
    status: str | None = None     # "confirmed" when there was nothing to pay
    order_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRefunded(Message):
    type: ClassVar[str] = "payment_refunded"
    hold: str = ""
    payment_id: str = ""
    amount: int = 0
    currency: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderConfirmed(Message):
    """At least once: de-duplicate by ``order["order_id"]``."""

    type: ClassVar[str] = "order_confirmed"
    order: dict[str, Any] = field(default_factory=dict)

    @property
    def order_id(self) -> str | None:
        value = self.order.get("order_id")
        return None if value is None else str(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRefunded(Message):
    type: ClassVar[str] = "order_refunded"
    order_id: str = ""
    sale_id: str = ""
    units: int = 0
    amount: int = 0
    currency: str = ""
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ok(Message):
    """A host action's answer: ``action`` plus its fields (``launch_sale``: ``sale``) in ``raw``."""

    type: ClassVar[str] = "ok"
    rid: str | None = None
    action: str = ""
    sale: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Message):
    type: ClassVar[str] = "error"
    code: str = ""
    message: str = ""
    rid: str | None = None


M = TypeVar("M", bound=Message)

TYPES: dict[str, type[Message]] = {cls.type: cls for cls in (
    Hello, Snapshot, Resumed, ClockReply, Pong, Tick, RoomStatus, RoomUpdated, ProductAdded, ProductPinned,
    ProductUnpinned, SaleScheduled, SaleOpen, SaleSoldOut, SaleClosed, Announcement, CommentHidden, UserMuted,
    BuyResult, PayResult, ReleaseResult, PaymentStarted, PaymentRefunded, OrderConfirmed, OrderRefunded, Ok, Error,
)}
_FIELDS: dict[type[Message], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name != "raw") for cls in TYPES.values()
}


def is_sequenced(raw: dict[str, Any]) -> bool:
    """A room event counted by ``seq`` (any type, known or not, that carries an integer seq)."""
    seq = raw.get("seq")
    return isinstance(seq, int) and not isinstance(seq, bool) and raw.get("type") not in UNSEQUENCED


def parse(raw: dict[str, Any]) -> Message:
    """The typed message for ``raw`` (``Unknown`` for a type not listed here). Fields left out take their
    defaults; ``epoch`` is always a string (the server sends one; older ones sent a number)."""
    kind = raw.get("type")
    cls = TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return Unknown(kind=str(kind or ""), raw=raw)
    values = {name: raw[name] for name in _FIELDS[cls] if name in raw and raw[name] is not None}
    if "epoch" in values:
        values["epoch"] = str(values["epoch"])
    try:
        return cls(raw=raw, **values)
    except TypeError:  # pragma: no cover - a dataclass refuses only unknown names, which _FIELDS excludes
        return Unknown(kind=str(kind), raw=raw)

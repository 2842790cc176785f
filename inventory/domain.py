"""Pure types of the money path: sale specs, results, validation. No I/O."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

from . import holds as H

__all__ = [
    "ID_RE", "CURRENCY_RE", "InvalidInput", "SaleSpec", "ArmCode", "ArmResult", "ReserveCode",
    "ReserveRequest", "ReserveResult", "ConfirmCode", "ConfirmResult", "ReleaseCode", "ReleaseResult",
    "CHANNEL_RE", "PresaleTerms", "ExpiredDeposit",
    "Hold", "SaleCounters", "InvariantReport", "new_hold_ids", "check_id", "SLUG_RE", "RetireCode",
    "RetireResult", "StockMoving",
]

ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}\Z")
SLUG_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # no '.' so a hold id "<sale>.<token>" splits cleanly
CURRENCY_RE = re.compile(r"^[A-Z]{3}\Z")
CHANNEL_RE = re.compile(r"^[A-Za-z0-9_:-]{1,64}\Z")  # a sales channel: a room id, web-shop, store:17
MAX_PRICE = 10**12
MAX_UNITS = 10**9


class StockMoving(Exception):
    """A bucketed sale's buy could be decided neither way in time: its home bucket is empty, yet units are left
    in the sale (on their way between buckets, e.g. a move whose second half waits for the reaper's recovery
    after a failover). The retryable answer (UNAVAILABLE): SOLD_OUT would be wrong, a retry with the same request
    id is decided once the units have arrived."""


class InvalidInput(ValueError):
    """Input rejected before touching Redis; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_id(field: str, value: Any, pattern: re.Pattern[str] = ID_RE) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        if pattern is ID_RE:
            allowed = "1-128 characters of letters, digits and _ . : @ -"
        else:
            allowed = "1-64 characters of letters, digits, _ and -"
        raise InvalidInput(field, f"{field} must be {allowed}")
    return value


def new_hold_ids(sale_id: str, n: int) -> list[str]:
    """``n`` fresh hold ids ``<sale_id>.<16 hex>`` (one urandom read for the whole batch)."""
    tokens = secrets.token_hex(8 * n)
    return [f"{sale_id}.{tokens[16 * i:16 * i + 16]}" for i in range(n)]


def sale_of_hold(hold_id: str) -> str:
    check_id("hold_id", hold_id)
    sale_id, dot, token = hold_id.partition(".")
    if not dot or not token or not SLUG_RE.match(sale_id):
        raise InvalidInput("hold_id", "hold_id is not a hold id issued by this server")
    return sale_id


@dataclass(frozen=True, slots=True)
class SaleSpec:
    """Everything needed to arm a sale's stock pool."""

    sale_id: str
    room_id: str
    sku: str
    unit_price: int
    currency: str
    allocated: int
    per_user_limit: int
    starts_at_ms: int
    ends_at_ms: int
    hold_ttl_ms: int

    def __post_init__(self) -> None:
        check_id("sale_id", self.sale_id, SLUG_RE)
        check_id("room_id", self.room_id, SLUG_RE)
        check_id("sku", self.sku)
        for name, value, lo, hi in (
            ("unit_price", self.unit_price, 0, MAX_PRICE),
            ("units", self.allocated, 0, MAX_UNITS),
            ("per_user_limit", self.per_user_limit, 1, MAX_UNITS),
            ("starts_at", self.starts_at_ms, 0, 10**14),
            ("ends_at", self.ends_at_ms, 1, 10**14),
            ("hold_ttl", self.hold_ttl_ms, 1, 10**10),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InvalidInput(name, f"{name} must be an integer between {lo} and {hi}")
        if not isinstance(self.currency, str) or not CURRENCY_RE.match(self.currency):
            raise InvalidInput("currency", "currency must be a 3-letter ISO 4217 code such as EUR")
        if self.ends_at_ms <= self.starts_at_ms:
            raise InvalidInput("ends_at", "ends_at must be after starts_at")

    def to_argv(self) -> list[Any]:
        return [self.sale_id, self.room_id, self.sku, self.unit_price, self.currency, self.allocated,
                self.per_user_limit, self.starts_at_ms, self.ends_at_ms, self.hold_ttl_ms]


@dataclass(frozen=True, slots=True)
class PresaleTerms:
    """A pre-sale: each hold's first payment is a deposit of ``deposit`` per unit; the balance is paid
    in [balance_from_ms, balance_by_ms); a hold whose balance is not paid by then expires (its units
    go back) and its deposit is refunded or kept by ``rule``."""

    deposit: int
    balance_from_ms: int
    balance_by_ms: int
    rule: str  # refund | keep

    def __post_init__(self) -> None:
        if self.rule not in ("refund", "keep"):
            raise InvalidInput("deposit_rule", "deposit_rule must be refund or keep")
        if isinstance(self.deposit, bool) or not isinstance(self.deposit, int) or not 1 <= self.deposit <= MAX_PRICE:
            raise InvalidInput("deposit", f"deposit must be an integer between 1 and {MAX_PRICE}")
        if not 0 <= self.balance_from_ms < self.balance_by_ms <= 10**14:
            raise InvalidInput("balance", "the balance window must end after it opens")

    def to_argv(self) -> list[str | int]:
        return [self.deposit, self.balance_from_ms, self.balance_by_ms, self.rule]


@dataclass(frozen=True, slots=True)
class ExpiredDeposit:
    """A pre-sale hold whose balance was not paid in its window (reap.lua expired it)."""

    hold_id: str
    user_id: str
    qty: int
    deposit_ref: str


class ArmCode(str, Enum):
    ARMED = "ARMED"        # created now
    EXISTS = "EXISTS"      # identical sale already armed: idempotent success
    CONFLICT = "CONFLICT"  # a different sale with this id exists
    INVALID = "INVALID"


@dataclass(frozen=True, slots=True)
class ArmResult:
    code: ArmCode
    available: int
    held: int
    sold: int

    @property
    def ok(self) -> bool:
        return self.code in (ArmCode.ARMED, ArmCode.EXISTS)


class ReserveCode(str, Enum):
    RESERVED = "RESERVED"
    NOT_STARTED = "NOT_STARTED"
    ENDED = "ENDED"
    SOLD_OUT = "SOLD_OUT"
    LIMIT = "LIMIT"
    INVALID = "INVALID"
    NOT_FOUND = "NOT_FOUND"
    IDEM_MISMATCH = "IDEM_MISMATCH"
    MEMBERS_ONLY = "MEMBERS_ONLY"  # decided by commerce before the script (a guest on a members-only sale)


class ReserveRequest(NamedTuple):
    """One buy of a reserve batch (a NamedTuple: built once per click, ~4x cheaper than a frozen dataclass)."""
    user_id: str
    qty: int
    request_id: str


class ReserveResult(NamedTuple):
    """A buy's outcome (a NamedTuple: one per click, built from the script's reply)."""
    code: ReserveCode
    hold_id: str | None
    at_ms: int | None          # the instant the code is about: RESERVED pay-by, NOT_STARTED starts_at, ENDED ends_at
    available: int             # units left in the pool after this request
    user_units: int            # the user's units held or bought in this sale
    replayed: bool = False     # the remembered answer to an earlier request with this id: nothing changed now

    @property
    def ok(self) -> bool:
        return self.code is ReserveCode.RESERVED


class ConfirmCode(str, Enum):
    CONFIRMED = "CONFIRMED"
    ALREADY_CONFIRMED = "ALREADY_CONFIRMED"  # confirmed earlier with another payment: refund this one
    EXPIRED = "EXPIRED"                      # released or past pay-by: refund
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    HOLD_LOST = "HOLD_LOST"                  # the hold was lost with Redis data (sale rebuilt from SQL)
    INVALID = "INVALID"
    DEPOSITED = "DEPOSITED"                  # a pre-sale's deposit paid: the unit stays held for the balance
    NOT_OPEN = "NOT_OPEN"                    # a pre-sale's balance before its window opens: nothing changed


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    code: ConfirmCode
    order_id: str | None
    status: str
    fresh: bool = False  # True only for the call that confirmed (replays return False)
    discount: int | None = None  # a coupon's discount applied to the order (minor units), else None
    total: int | None = None     # what the order costs after the discount (with a coupon)


class ReleaseCode(str, Enum):
    RELEASED = "RELEASED"
    NOT_HELD = "NOT_HELD"  # already confirmed, released or expired: nothing changed
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    INVALID = "INVALID"
    HOLD_LOST = "HOLD_LOST"  # the hold was lost with Redis data (its sale was rebuilt from SQL)


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    code: ReleaseCode
    status: str
    available: int


class RetireCode(str, Enum):
    OPEN = "OPEN"          # not ended yet (Redis TIME)
    HOLDS = "HOLDS"        # live holds left
    PENDING = "PENDING"    # outbox entries not delivered or not acked by the settlement group
    SETTLED = "SETTLED"    # check mode: may retire (the counters are final)
    RETIRED = "RETIRED"    # every key of the sale has its retention TTL
    GONE = "GONE"          # no sale hash (expired or never armed)
    INVALID = "INVALID"


@dataclass(frozen=True, slots=True)
class RetireResult:
    """``retire.lua``'s answer: the final counters when the sale has ended (see the script)."""
    code: RetireCode
    allocated: int
    available: int
    held: int
    sold: int
    ends_at_ms: int
    ttl_ms: int  # of the sale hash; -1: none


@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: str
    sale_id: str
    user_id: str
    qty: int
    status: str           # held | confirmed | released | expired
    pay_by_ms: int
    created_ms: int
    request_id: str
    payment_ref: str | None
    confirmed_ms: int | None
    channel: str = ""     # a pool's channel hold: the channel (web-shop, store:17); '' = the sale's room
    deposit_ref: str = ""  # a pre-sale hold whose deposit was paid: that payment's reference
    coupon: str = ""       # a confirmed hold paid with a coupon: its drop id
    discount: int = 0      # and that coupon's discount (minor units)

    @classmethod
    def from_record(cls, hold_id: str, sale_id: str, rec: dict[str, Any]) -> Hold:
        """A hold from its stored record (the schema: inventory/holds.py)."""
        return cls(hold_id=hold_id, sale_id=sale_id, user_id=rec[H.USER], qty=int(rec[H.QTY]), status=rec[H.STATUS],
                   pay_by_ms=int(rec[H.PAY_BY]), created_ms=int(rec[H.CREATED]), request_id=rec[H.REQUEST],
                   payment_ref=rec.get(H.PAYMENT_REF),
                   confirmed_ms=int(rec[H.CONFIRMED]) if H.CONFIRMED in rec else None,
                   channel=rec.get(H.CHANNEL, ""), deposit_ref=rec.get(H.DEPOSIT_REF, ""),
                   coupon=rec.get(H.COUPON, ""), discount=int(rec.get(H.DISCOUNT, 0)))


@dataclass(frozen=True, slots=True)
class SaleCounters:
    sale_id: str
    room_id: str
    sku: str
    unit_price: int
    currency: str
    allocated: int
    available: int
    held: int
    sold: int
    per_user_limit: int
    starts_at_ms: int
    ends_at_ms: int
    hold_ttl_ms: int


@dataclass(frozen=True, slots=True)
class InvariantReport:
    sale_id: str
    allocated: int
    available: int
    held: int
    sold: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

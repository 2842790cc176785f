"""Typed definitions of every request a client makes, for the WebSocket and the HTTP API alike.

One dataclass per request; its fields' rules are declared on the type (``commerce.validation``) and
compiled once into a ``Schema``. docs/PROTOCOL.md documents the same fields and bounds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from .validation import ID_RE, Check, Id, Match, Range, Slug, Text

__all__ = [
    "MAX_SALE_UNITS", "MAX_PRICE", "MAX_QTY_FIELD", "Buy", "Pay", "Release", "CheckoutHold", "Comment", "Like", "View",
    "Empty",
    "Pin", "LaunchSale", "EndSale", "Announce", "HideComment", "Mute", "CreateRoom", "AddProduct",
    "CreateSale", "Reserve", "PayHold", "GuestToken", "TopUpSale", "CreatePool", "StockChange", "TopUp",
    "ChannelReserve", "RefundOrder", "PoolId", "Channel", "CHANNEL_RULE", "CouponRef", "CheckoutBody",
]

MAX_SALE_UNITS = 1_000_000          # units one sale may allocate
MAX_PRICE = 10**12                  # minor units
MAX_QTY_FIELD = 1_000_000           # the wire bound of `qty`; LIVESALE_MAX_QTY is the business limit
YEAR_S = 31_536_000

_URL = re.compile(r"^(https?://[^\s]{1,490})?\Z")
_CURRENCY = re.compile(r"^[A-Z]{3}\Z")

Qty = Annotated[int, Range(1, MAX_QTY_FIELD)]
Units = Annotated[int, Range(1, MAX_SALE_UNITS)]
Price = Annotated[int, Range(0, MAX_PRICE)]
Limit = Annotated[int, Range(1, 1_000_000)]
HoldTtl = Annotated[int, Range(5, 86_400)]
Short = Annotated[str, Text(300)]
Url = Annotated[str, Match(_URL, "an http(s) URL of at most 500 characters")]
PoolId = Annotated[str, Match(re.compile(r"^(?!.*--)[A-Za-z0-9_-]{1,40}\Z"),
                              "1-40 characters of [A-Za-z0-9_-], without '--'")]
CHANNEL_RULE = Match(re.compile(r"^[A-Za-z0-9_:-]{1,64}\Z"), "1-64 characters of [A-Za-z0-9_:-]")
Channel = Annotated[str, CHANNEL_RULE]
Reason = Annotated[str, Text(200, allow_empty=True)]


def _signed_units(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v == 0 or not -MAX_SALE_UNITS <= v <= MAX_SALE_UNITS:
        raise ValueError
    return v


def _stock_kind(v: object) -> str:
    if v not in ("restock", "adjust"):
        raise ValueError
    return str(v)


StockKind = Annotated[str, Check(_stock_kind, "restock or adjust")]


def _deposit_rule(v: object) -> str:
    if v not in ("refund", "keep"):
        raise ValueError
    return str(v)


DepositRule = Annotated[str, Check(_deposit_rule, "refund or keep")]

_SLUG = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_POOL = re.compile(r"^(?!.*--)[A-Za-z0-9_-]{1,40}\Z")
MAX_VARIANTS = 20


def _product_variants(v: object) -> tuple[tuple[str, str, str], ...]:
    """[{variant_id, sku, label}] -> ((variant_id, sku, label), ...): 1-20 distinct variants."""
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_VARIANTS:
        raise ValueError
    out = []
    for item in v:
        if not isinstance(item, dict) or set(item) - {"variant_id", "sku", "label"}:
            raise ValueError
        vid, sku, label = item.get("variant_id"), item.get("sku"), item.get("label", "")
        if not (isinstance(vid, str) and _SLUG.match(vid) and isinstance(sku, str) and ID_RE.match(sku)
                and isinstance(label, str) and len(label.strip()) <= 64):
            raise ValueError
        out.append((vid, sku, label.strip() or vid))
    if len({x[0] for x in out}) != len(out) or len({x[1] for x in out}) != len(out):
        raise ValueError
    return tuple(out)


def _sale_variants(v: object) -> tuple[tuple[str, int], ...]:
    """[{pool, units}] -> ((pool, units), ...): 1-20 variants, each from its own pool."""
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_VARIANTS:
        raise ValueError
    out = []
    for item in v:
        if not isinstance(item, dict) or set(item) - {"pool", "units"}:
            raise ValueError
        pool, units = item.get("pool"), item.get("units", 0)  # 0: the request's `units`
        if not (isinstance(pool, str) and _POOL.match(pool) and isinstance(units, int) and not isinstance(units, bool)
                and 0 <= units <= MAX_SALE_UNITS):
            raise ValueError
        out.append((pool, units))
    if len({p for p, _ in out}) != len(out):
        raise ValueError
    return tuple(out)


ProductVariants = Annotated[tuple[tuple[str, str, str], ...], Check(
    _product_variants, "a list of 1-20 {variant_id, sku, label?} with distinct ids and SKUs")]
SaleVariants = Annotated[tuple[tuple[str, int], ...], Check(
    _sale_variants, f"a list of 1-20 {{pool, units?}} with distinct pools and units 1-{MAX_SALE_UNITS}")]
Deposit = Annotated[int, Range(1, MAX_PRICE)]
BalanceWindow = Annotated[int, Range(1, YEAR_S)]
SignedUnits = Annotated[int, Check(_signed_units, f"a non-zero integer between -{MAX_SALE_UNITS} and {MAX_SALE_UNITS}")]


def _flag(v: object) -> bool:
    if v.__class__ is not bool:
        raise ValueError
    return bool(v)


Flag = Annotated[bool, Check(_flag, "true or false")]


# -- viewers -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Buy:
    sale: Slug
    qty: Qty = 1


CouponRef = Annotated[str, Match(re.compile(r"^(?!.*--)[A-Za-z0-9_-]{1,64}\Z"), "a drop id (1-64 characters of "
                                                                              "[A-Za-z0-9_-])")]


@dataclass(frozen=True, slots=True)
class Pay:
    hold: Id
    coupon: CouponRef | None = None  # a claimed coupon (its drop id) to apply (docs/PROTOCOL.md Coupon drops)


@dataclass(frozen=True, slots=True)
class Release:
    hold: Id


@dataclass(frozen=True, slots=True)
class CheckoutHold:
    """`checkout`: pay a hold through the payment provider (docs/PROTOCOL.md Payments)."""
    hold: Id
    coupon: CouponRef | None = None


@dataclass(frozen=True, slots=True)
class Comment:
    text: Short


@dataclass(frozen=True, slots=True)
class View:
    """``view``: the viewer opened a product's details (an interest signal, no reply)."""
    product: Slug


@dataclass(frozen=True, slots=True)
class Like:
    n: Annotated[int, Range(1, 50)] = 1


# -- hosts (the WebSocket action and HTTP POST /api/rooms/{room}/actions/{action}) ----------------------

@dataclass(frozen=True, slots=True)
class Empty:
    """go_live, end_live, unpin: no fields."""


@dataclass(frozen=True, slots=True)
class Pin:
    product: Slug


@dataclass(frozen=True, slots=True)
class LaunchSale:
    product: Slug
    units: Units
    price: Price | None = None
    limit: Limit = 1
    starts_in_s: Annotated[int, Range(0, YEAR_S)] = 0
    duration_s: Annotated[int, Range(1, YEAR_S)] = 300
    hold_ttl_s: HoldTtl | None = None
    sale_id: Slug | None = None
    members_only: Flag = False   # guest viewer tokens may not buy (docs/PROTOCOL.md Identity)
    pool: PoolId | None = None   # take the units from this stock pool (docs/PROTOCOL.md Stock pools)
    # a pre-sale (docs/PROTOCOL.md Pre-sales): deposit per unit, when the balance window opens, how long
    deposit: Deposit | None = None
    balance_in_s: Annotated[int, Range(0, YEAR_S)] = 0
    balance_window_s: BalanceWindow = 86_400
    deposit_rule: DepositRule = "refund"
    variants: SaleVariants | None = None  # a sale of several variants, each from its pool (units: the default)


@dataclass(frozen=True, slots=True)
class TopUpSale:
    sale: Slug
    units: Units
    request_id: Id


@dataclass(frozen=True, slots=True)
class EndSale:
    sale: Slug


@dataclass(frozen=True, slots=True)
class Announce:
    text: Short


@dataclass(frozen=True, slots=True)
class HideComment:
    comment: Id


@dataclass(frozen=True, slots=True)
class Mute:
    user: Id


# -- HTTP bodies ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CreateRoom:
    title: Annotated[str, Text(200)]
    room_id: Slug | None = None
    player_url: Url = ""


@dataclass(frozen=True, slots=True)
class AddProduct:
    sku: Annotated[str, Match(ID_RE, "1-128 characters of [A-Za-z0-9_.:@-]")]
    title: Annotated[str, Text(200)]
    unit_price: Price
    currency: Annotated[str, Match(_CURRENCY, "a 3-letter ISO 4217 code such as EUR")] = "EUR"
    product_id: Slug | None = None
    description: Annotated[str, Text(2000, allow_empty=True)] = ""
    image_url: Url = ""
    variants: ProductVariants | None = None  # sizes, colours: each a SKU with its own stock pool


@dataclass(frozen=True, slots=True)
class CreateSale:
    product_id: Slug
    units: Units
    sale_id: Slug | None = None
    unit_price: Price | None = None
    per_user_limit: Limit = 1
    starts_at: Annotated[int, Range(0, 10**14)] | None = None
    starts_in_s: Annotated[int, Range(0, YEAR_S)] = 0
    ends_at: Annotated[int, Range(0, 10**14)] | None = None
    duration_s: Annotated[int, Range(1, YEAR_S)] = 300
    hold_ttl_s: HoldTtl | None = None
    members_only: Flag = False   # guest viewer tokens may not buy (docs/PROTOCOL.md Identity)
    pool: PoolId | None = None   # take the units from this stock pool (docs/PROTOCOL.md Stock pools)
    deposit: Deposit | None = None  # a pre-sale (docs/PROTOCOL.md Pre-sales)
    balance_at: Annotated[int, Range(0, 10**14)] | None = None
    balance_in_s: Annotated[int, Range(0, YEAR_S)] = 0
    balance_window_s: BalanceWindow = 86_400
    deposit_rule: DepositRule = "refund"
    variants: SaleVariants | None = None  # a sale of several variants, each from its pool (units: the default)
    buckets: Annotated[int, Range(1, 16)] = 1  # a hot sale's units over this many hash slots (PROTOCOL.md)


@dataclass(frozen=True, slots=True)
class Reserve:
    request_id: Id
    qty: Qty = 1


@dataclass(frozen=True, slots=True)
class PayHold:
    payment_ref: Id | None = None
    coupon: CouponRef | None = None


@dataclass(frozen=True, slots=True)
class CheckoutBody:
    """``POST /api/holds/{hold}/checkout``."""
    coupon: CouponRef | None = None


@dataclass(frozen=True, slots=True)
class GuestToken:
    name: Annotated[str, Text(40, allow_empty=True)] = "guest"


# -- stock pools (docs/PROTOCOL.md Stock pools) --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CreatePool:
    sku: Annotated[str, Match(ID_RE, "1-128 characters of [A-Za-z0-9_.:@-]")]
    title: Annotated[str, Text(200)]
    unit_price: Price
    units: Annotated[int, Range(0, MAX_SALE_UNITS)]
    currency: Annotated[str, Match(_CURRENCY, "a 3-letter ISO 4217 code such as EUR")] = "EUR"
    pool_id: PoolId | None = None
    per_user_limit: Limit = 10    # per buyer, over the channel holds of this pool
    hold_ttl_s: HoldTtl = 900     # pay-by window of a channel hold
    sku_user_limit: Annotated[int, Range(0, 1_000_000)] = 0  # per buyer over every room and channel (0: none)


@dataclass(frozen=True, slots=True)
class StockChange:
    units: SignedUnits            # restock: > 0; adjust: either sign
    request_id: Id
    kind: StockKind = "restock"
    reason: Reason = ""


@dataclass(frozen=True, slots=True)
class TopUp:
    units: Units
    request_id: Id


@dataclass(frozen=True, slots=True)
class ChannelReserve:
    pool: PoolId
    request_id: Id
    qty: Qty = 1


@dataclass(frozen=True, slots=True)
class RefundOrder:
    restock: Flag = True          # false: the goods are damaged, the units do not return to the pool
    reason: Reason = ""

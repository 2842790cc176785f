"""The outbox entry: how ``confirm.lua`` writes a confirmed order to the sale's outbox stream, and
its parsing back into an ``OrderRecord`` for settlement. Pure.

Fields (all strings, ``XADD`` by confirm.lua): ``v`` ("1"), ``order_id`` (= the hold id), ``sale_id``,
``room_id``, ``sku``, ``user_id``, ``qty``, ``unit_price`` (minor units), ``currency``, ``payment_ref``,
``reserved_at`` and ``confirmed_at`` (ms of Redis TIME), ``channel`` (the room id, or the channel id of
a pool's channel hold, whose ``room_id`` is then ''; entries written before channels existed lack it:
their channel is their room), ``discount`` and ``coupon`` (a coupon applied at pay), ``ref_user`` and
``ref_code`` (a share link's sharer and code the buyer was attributed to: docs/PROTOCOL.md Share-to-earn).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import keys as K
from .buckets import parent_of
from .domain import CHANNEL_RE, CURRENCY_RE, ID_RE, MAX_PRICE, SLUG_RE
from .store import OrderRecord

__all__ = ["parse_entry", "text"]

_STR_FIELDS = ("order_id", "sale_id", "room_id", "sku", "user_id", "payment_ref")
_MAX_TOTAL = 2**63 - 1


def text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _uint(name: str, raw: str, lo: int, hi: int) -> int:
    if not (raw.isascii() and raw.isdigit()) or (len(raw) > 1 and raw[0] == "0") or not lo <= int(raw) <= hi:
        raise ValueError(f"{name} must be an integer between {lo} and {hi}")
    return int(raw)


def parse_entry(stream: str, entry_id: str, fields: Mapping[Any, Any], settled_at_ms: int) -> OrderRecord:
    """An outbox entry as an order; ``ValueError`` names what is wrong with a malformed one."""
    f = {text(k): text(v) for k, v in fields.items()}
    if f.get("v") != "1":
        raise ValueError("unsupported entry version")
    channel = f.get("channel") or f.get("room_id", "")
    for name in _STR_FIELDS:
        pattern = SLUG_RE if name in ("sale_id", "room_id") else ID_RE
        if not pattern.match(f.get(name, "")) and not (name == "room_id" and f.get(name) == "" and channel):
            raise ValueError(f"{name} is missing or malformed")
    if not CHANNEL_RE.match(channel):
        raise ValueError("channel is malformed")
    if f["sale_id"] != K.sale_id_of_outbox(stream):
        raise ValueError("sale_id does not match the stream")
    if not CURRENCY_RE.match(f.get("currency", "")):
        raise ValueError("currency is missing or malformed")
    qty = _uint("qty", f.get("qty", ""), 1, 10**9)
    price = _uint("unit_price", f.get("unit_price", ""), 0, MAX_PRICE)
    if qty * price > _MAX_TOTAL:
        raise ValueError("total out of range")
    discount = _uint("discount", f.get("discount") or "0", 0, qty * price)  # a coupon's, at most the list total
    coupon = f.get("coupon", "")
    if coupon and not SLUG_RE.match(coupon):
        raise ValueError("coupon is malformed")
    sharer, ref_code = f.get("ref_user", ""), f.get("ref_code", "")  # a share link's attribution
    if (sharer or ref_code) and not (ID_RE.match(sharer) and SLUG_RE.match(ref_code)):
        raise ValueError("ref_user / ref_code are malformed")
    return OrderRecord(
        order_id=f["order_id"], sale_id=parent_of(f["sale_id"]),  # a hot-SKU bucket's order is its sale's
        room_id=f["room_id"], sku=f["sku"], user_id=f["user_id"],
        qty=qty, unit_price=price, total=qty * price - discount, currency=f["currency"], payment_ref=f["payment_ref"],
        discount=discount, coupon=coupon, sharer=sharer, ref_code=ref_code, source="link" if sharer else "direct",
        reserved_at_ms=_uint("reserved_at", f.get("reserved_at", ""), 0, 10**14),
        confirmed_at_ms=_uint("confirmed_at", f.get("confirmed_at", ""), 0, 10**14),
        settled_at_ms=settled_at_ms, stream_id=entry_id, channel=channel,
    )

"""Interest signals: what a viewer did in a show, as rows of the ``signals`` table. Pure, plus the table.

Gateways record signals in memory and append them in batches to one Redis Stream (``ls:signals``):
one stream entry carries many signals as one msgpack array (``encode_batch``), so a gateway makes
one Redis call per flush, never one per signal, and no database write at all. The signal sink
(``inventory/signal_sink.py``) reads the stream with a consumer group and writes the rows to SQL,
idempotently by (stream entry id, index in the entry). Viewer ids are the platform's own (a token's
``sub``), or ``b:<browser id>`` / ``s:<session>`` for anonymous watchers; no IP address is kept.

| kind | when | fields besides user, room, at |
|---|---|---|
| `join` | a socket joined the room | `ref` the session |
| `leave` | it left (closed, switched rooms) | `ref` the session, `value` ms watched |
| `watched` | watched a pinned product for at least `LIVESALE_SIGNAL_WATCH_S` | `product`, `value` seconds |
| `viewed` | opened a product's details (the page sends `view`) | `product` |
| `tap` | tapped buy (every decided reservation request) | `sale` |
| `held` | the tap reserved units | `sale`, `ref` the hold id, `value` its pay-by (ms) |
| `sold_out` | came too late (the sale was sold out) | `sale` |
| `paid` | the hold was paid | `sale`, `ref` the hold id |
| `released` | the buyer released the hold | `sale`, `ref` the hold id |
| `saved` | saved a product for later | `product` |
| `coupon_claimed` / `coupon_redeemed` | claimed a coupon / paid with it | `ref` the drop |
| `team` | joined a fan team | `ref` the team |
| `voted` | voted in a poll | `ref` the poll, `detail` the option |

``sku`` and ``product`` of a signal that names a sale are filled in by the sink from the ``sales``
(or ``pools``) table, so the gateway never looks them up on the buy path.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack
from sqlalchemy import BigInteger, Column, Index, Integer, PrimaryKeyConstraint, String, Table

from .store import metadata

__all__ = ["SignalKind", "Signal", "signals", "encode_batch", "decode_batch", "SIGNAL_STREAM", "SIGNAL_GROUP",
           "SINK_STATS", "FIELD_LIMITS"]

SIGNAL_STREAM = "ls:signals"
SIGNAL_GROUP = "signal-sink"
SINK_STATS = "ls:signal-sink:stats"  # HASH consumer -> JSON stats of that sink (inventory/signal_sink.py)


class SignalKind(enum.StrEnum):
    JOIN = "join"
    LEAVE = "leave"
    WATCHED = "watched"
    VIEWED = "viewed"
    TAP = "tap"
    HELD = "held"
    SOLD_OUT = "sold_out"
    PAID = "paid"
    RELEASED = "released"
    SAVED = "saved"
    COUPON_CLAIMED = "coupon_claimed"
    COUPON_REDEEMED = "coupon_redeemed"
    TEAM = "team"
    VOTED = "voted"


_KINDS = frozenset(k.value for k in SignalKind)

# column -> its maximum length (longer values are cut by the recorder; the sink refuses nothing for length)
FIELD_LIMITS = {"user_id": 160, "room_id": 64, "sale_id": 128, "product_id": 128, "sku": 128, "ref": 128,
                "detail": 64}

signals = Table(
    "signals", metadata,
    Column("entry", String(40), nullable=False),   # the stream entry id that carried it
    Column("idx", Integer, nullable=False),        # its index in that entry
    Column("kind", String(24), nullable=False),
    Column("user_id", String(160), nullable=False),
    Column("room_id", String(64), nullable=False, default=""),
    Column("sale_id", String(128), nullable=False, default=""),
    Column("product_id", String(128), nullable=False, default=""),
    Column("sku", String(128), nullable=False, default=""),
    Column("ref", String(128), nullable=False, default=""),
    Column("detail", String(64), nullable=False, default=""),
    Column("value", BigInteger, nullable=False, default=0),
    Column("at_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("entry", "idx", name="pk_signals"),
    Index("ix_signals_kind_at", "kind", "at_ms"),
    Index("ix_signals_room_kind", "room_id", "kind"),
    Index("ix_signals_user_at", "user_id", "at_ms"),
)


class Signal(NamedTuple):
    """One signal (a tuple: made on the buy path, so as cheap to build as Python allows)."""
    kind: str
    user_id: str
    at_ms: int
    room_id: str = ""
    sale_id: str = ""
    product_id: str = ""
    ref: str = ""
    detail: str = ""
    value: int = 0

    def as_list(self) -> list[Any]:
        return list(self)


def encode_batch(batch: Sequence[Signal]) -> bytes:
    """Many signals as one stream entry's ``d`` field: a list of arrays (a NamedTuple packs as one)."""
    packed: bytes = msgpack.packb(batch if isinstance(batch, list) else list(batch), use_bin_type=True)
    return packed


def _str(v: Any, limit: int) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        raise ValueError("a text field is not text")
    return v[:limit]


def decode_batch(raw: bytes) -> list[Signal]:
    """The signals of one entry; ``ValueError`` for an entry that is not a batch of signals (a
    signal of an unknown kind is skipped: a newer gateway may write kinds this sink does not know)."""
    try:
        items = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        raise ValueError(f"not msgpack: {exc}") from None
    if not isinstance(items, list):
        raise ValueError("not a list of signals")
    out: list[Signal] = []
    lim = FIELD_LIMITS
    for it in items:
        if not isinstance(it, list) or len(it) < 9:
            raise ValueError("a signal is not a list of 9 fields")
        kind, user, at, room, sale, product, ref, detail, value = it[:9]
        if kind not in _KINDS:
            continue
        if not isinstance(at, int) or not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("at and value must be integers")
        out.append(Signal(kind, _str(user, lim["user_id"]), at, _str(room, lim["room_id"]),
                          _str(sale, lim["sale_id"]), _str(product, lim["product_id"]), _str(ref, lim["ref"]),
                          _str(detail, lim["detail"]), max(-(2**62), min(2**62, value))))
    return out

"""The pure parts of share-to-earn: the documented rounding of a commission, commission statuses, the
outbox entry's attribution fields, mini-shop channels, and the signal batch format."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, strategies as st

from commerce.growth import status_of
from inventory.growth import commission_of, shop_of_channel
from inventory.outbox import parse_entry
from inventory.signal_log import Signal, decode_batch, encode_batch


def test_commission_rounds_half_a_minor_unit_up() -> None:
    assert commission_of(1000, 500) == 50
    assert commission_of(4999, 700) == 350      # 349.93 -> 350
    assert commission_of(10, 500) == 1          # 0.5 -> 1
    assert commission_of(9, 500) == 0           # 0.45 -> 0
    assert commission_of(0, 10000) == 0 and commission_of(123, 0) == 0


@given(st.integers(0, 10**12), st.integers(0, 10_000))
def test_commission_is_the_nearest_minor_unit(total: int, bps: int) -> None:
    c = commission_of(total, bps)
    exact = total * bps / 10_000
    assert abs(c - exact) <= 0.5 and 0 <= c <= total


def test_status_follows_the_pending_window_and_reversal() -> None:
    row = {"state": "earned", "settled_at_ms": 1000}
    assert status_of(row, 1500, 1000) == "pending"
    assert status_of(row, 2000, 1000) == "confirmed"
    assert status_of({**row, "state": "reversed"}, 1500, 1000) == "reversed"


def test_shop_channels() -> None:
    assert shop_of_channel("shop:ana") == "ana"
    assert shop_of_channel("store:17") == "" and shop_of_channel("room-1") == ""


def _entry(**extra: str) -> dict[str, str]:
    return {"v": "1", "order_id": "s1.abcdef0123456789", "sale_id": "s1", "room_id": "r1", "sku": "SKU", "user_id": "u1",
            "qty": "2", "unit_price": "500", "currency": "EUR", "payment_ref": "p1", "reserved_at": "1",
            "confirmed_at": "2", "channel": "r1", **extra}


def test_an_outbox_entry_carries_its_attribution() -> None:
    o = parse_entry("ls:{sale:s1}:outbox", "1-0", _entry(ref_user="sharer-1", ref_code="Ab_9-x"), 3)
    assert (o.source, o.sharer, o.ref_code, o.total) == ("link", "sharer-1", "Ab_9-x", 1000)
    o = parse_entry("ls:{sale:s1}:outbox", "1-0", _entry(ref_user="", ref_code=""), 3)
    assert (o.source, o.sharer) == ("direct", "")
    with pytest.raises(ValueError):
        parse_entry("ls:{sale:s1}:outbox", "1-0", _entry(ref_user="bad user", ref_code="x"), 3)


def test_signal_batches_round_trip_and_skip_unknown_kinds() -> None:
    batch = [Signal("tap", "u1", 5, "r1", "s1"), Signal("leave", "b:dev", 6, "r1", ref="sess", value=1200)]
    assert decode_batch(encode_batch(batch)) == batch
    raw = msgpack.packb([["future_kind", "u", 1, "", "", "", "", "", 0], batch[0].as_list()])
    assert decode_batch(raw) == [batch[0]]
    for bad in (b"\xc1", msgpack.packb({"a": 1}), msgpack.packb([["tap", "u"]]),
                msgpack.packb([["tap", "u", "x", "", "", "", "", "", 0]])):
        with pytest.raises(ValueError):
            decode_batch(bad)

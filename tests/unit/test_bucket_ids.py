"""Hot-SKU buckets, the pure part (inventory/buckets.py): bucket ids and their hash slots, the parent of a
bucket, the home bucket of a user, the split of the units, the derived request ids."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from inventory import buckets as B
from inventory import keys as K
from inventory.domain import ID_RE, SLUG_RE

ROOT = Path(__file__).resolve().parents[2]
sale_ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,40}\Z").filter(lambda s: K.POOL_SEP not in s)  # plain sales
users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_:@.", min_size=1, max_size=64)


def _ranges(k: int) -> list[range]:
    """The even slot ranges of k masters, as server/embedded_cluster.py assigns them."""
    return [range(r * B.SLOTS // k, (r + 1) * B.SLOTS // k) for r in range(k)]


def test_bucket_zero_is_the_sale_itself() -> None:
    assert B.bucket_ids("s-1", 1) == ("s-1",)
    ids = B.bucket_ids("s-1", 3)
    assert ids[0] == "s-1" and len(ids) == 3 and len(set(ids)) == 3
    assert K.sale_keys(ids[0]) == K.sale_keys("s-1")  # K=1 behaves exactly as an unbucketed sale


@pytest.mark.parametrize("sale", ["s-1", "flash", "s-0a1b2c3d4e", "x" * B.MAX_PARENT_LEN])
def test_three_buckets_land_in_the_three_even_slot_ranges(sale: str) -> None:
    ids = B.bucket_ids(sale, 3)
    ranges = _ranges(3)
    where = [next(r for r, rng in enumerate(ranges) if B.slot_of_sale(b) in rng) for b in ids]
    assert sorted(where) == [0, 1, 2]  # one bucket per master of a 3-master cluster
    start = where[0]
    assert where == [start, (start + 1) % 3, (start + 2) % 3]  # bucket i: i ranges after bucket 0's


@settings(max_examples=60, deadline=None)
@given(sale=sale_ids, k=st.integers(1, B.MAX_BUCKETS))
def test_buckets_spread_over_k_ranges_with_the_smallest_j(sale: str, k: int) -> None:
    ids = B.bucket_ids(sale, k)
    home = B.slot_range(B.slot_of_sale(sale), k)
    for i, b in enumerate(ids[1:], start=1):
        assert SLUG_RE.match(b) and len(b) <= 64
        m = B.BUCKET_ID_RE.match(b)
        assert m is not None and m["parent"] == sale and int(m["i"]) == i
        assert B.slot_range(B.slot_of_sale(b), k) == (home + i) % k
        j = int(m["j"])
        for smaller in range(j):  # j is the smallest that lands in the range
            assert B.slot_range(B.slot_of_sale(f"{sale}_b{i}x{smaller}"), k) != (home + i) % k
    assert len({B.slot_range(B.slot_of_sale(b), k) for b in ids}) == k


@settings(max_examples=200)
@given(slot=st.integers(0, B.SLOTS - 1), k=st.integers(1, B.MAX_BUCKETS))
def test_slot_range_matches_the_even_ranges(slot: int, k: int) -> None:
    assert slot in _ranges(k)[B.slot_range(slot, k)]


@settings(max_examples=60, deadline=None)
@given(sale=sale_ids, k=st.integers(2, B.MAX_BUCKETS))
def test_parent_of_every_bucket_is_the_sale(sale: str, k: int) -> None:
    for b in B.bucket_ids(sale, k):
        assert B.parent_of(b) == sale
        assert B.is_bucket_id(b) == (b != sale)


def test_parent_of_leaves_other_ids_alone() -> None:
    assert B.parent_of("s-1") == "s-1"
    assert B.parent_of("pool--s1") == "pool--s1"
    assert B.parent_of("pool--x_b1x0") == "pool--x_b1x0"  # a pool's sale is never a bucket
    real = B.bucket_id("s-1", 1, 2)
    j = int(real.rsplit("x", 1)[1])
    fake = f"s-1_b1x{j + 1}"  # the shape of a bucket id, but no K generates it... unless one does
    generated = {B.bucket_id("s-1", 1, k) for k in range(2, B.MAX_BUCKETS + 1)}
    assert B.parent_of(fake) == ("s-1" if fake in generated else fake)
    assert B.looks_like_bucket_id(fake) and B.looks_like_bucket_id(real)
    for other in ("s-1_b0x1", "s-1_b16x1", "s-1_b1x01", "s-1_b1", "s_1", "b1x2"):
        assert not B.looks_like_bucket_id(other), other
        assert B.parent_of(other) == other


def test_bad_k_is_refused() -> None:
    for k in (0, 17, -1, True):
        with pytest.raises(ValueError):
            B.bucket_ids("s", k)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        B.bucket_id("s", 0, 3)
    with pytest.raises(ValueError):
        B.bucket_id("s", 3, 3)


@given(user=users, k=st.integers(1, B.MAX_BUCKETS))
def test_home_bucket_is_crc32_mod_k(user: str, k: int) -> None:
    h = B.home_bucket(user, k)
    assert 0 <= h < k and h == zlib.crc32(user.encode()) % k


def test_home_bucket_is_the_same_in_another_process() -> None:
    """Stable across processes (never Python's salted hash)."""
    users_ = [f"u{i}" for i in range(50)]
    code = ("import sys, json; from inventory.buckets import home_bucket; "
            "print(json.dumps([home_bucket(u, 3) for u in sys.argv[1:]]))")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, *users_], env=env, capture_output=True, text=True, check=True,
                         cwd=str(ROOT), timeout=60)
    assert out.stdout.strip() == str([B.home_bucket(u, 3) for u in users_]).replace("'", '"')
    assert len({B.home_bucket(u, 3) for u in users_}) == 3


@given(units=st.integers(0, 10**9), k=st.integers(1, B.MAX_BUCKETS))
def test_split_units(units: int, k: int) -> None:
    shares = B.split_units(units, k)
    assert len(shares) == k and sum(shares) == units
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)  # the remainder goes to the lowest buckets


def test_split_examples() -> None:
    assert B.split_units(200, 3) == [67, 67, 66]
    assert B.split_units(500, 3) == [167, 167, 166]
    assert B.split_units(3, 3) == [1, 1, 1]


@given(rid=st.from_regex(r"\A[A-Za-z0-9_.:@-]{1,128}\Z"), n=st.integers(1, 1000))
def test_retry_request_ids_are_valid_distinct_and_stable(rid: str, n: int) -> None:
    a = B.retry_request_id(rid, n)
    assert ID_RE.match(a) and a != rid
    assert a == B.retry_request_id(rid, n)
    assert a != B.retry_request_id(rid, n + 1)


def test_ids_round_trip() -> None:
    ids = B.bucket_ids("s-1", 4)
    assert B.decode_ids(B.encode_ids(ids)) == ids
    assert B.decode_ids("") == ()


def test_transfer_keys_share_the_bucket_slot() -> None:
    for b in B.bucket_ids("hot", 3):
        lent, borrowed = K.bucket_transfer_keys(b)
        assert {key_slot(x.encode()) for x in (lent, borrowed)} == {B.slot_of_sale(b)}

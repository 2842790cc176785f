"""Hot-SKU buckets: one sale's stock split over K hash slots (docs/PROTOCOL.md "Hot-SKU buckets"). Pure.

A sale hotter than one Redis core is armed as K ordinary sales, its *buckets*, each with its own
share of the units and its own keys. Bucket 0 is the sale itself (id ``<sale>``, keys ``{sale:<sale>}``,
so K = 1 is exactly an unbucketed sale); bucket i >= 1 has the id ``<sale>_b<i>x<j>``, where j is the
smallest integer >= 0 that puts the bucket's hash slot in the K-th of the slot space i places after the
K-th holding bucket 0's slot. With K masters owning even slot ranges (``server/embedded_cluster.py``,
``redis-cli --cluster create``), every bucket then lives on a different master.

A buyer always reserves in their *home* bucket (``home_bucket``: CRC-32 of the user id, stable across
processes and restarts), so the per-user limit stays exact: one buyers hash counts all of a user's units.
When the home bucket runs dry, stock moves between buckets (``inventory/bucket_stock.py``).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from functools import lru_cache

from redis.crc import key_slot

from . import keys as K

__all__ = [
    "SLOTS", "MAX_BUCKETS", "MAX_PARENT_LEN", "BUCKET_ID_RE", "slot_of_sale", "slot_range", "bucket_id",
    "bucket_ids", "parent_of", "is_bucket_id", "looks_like_bucket_id", "home_bucket", "split_units",
    "retry_request_id", "encode_ids", "decode_ids",
]

SLOTS = 16384
MAX_BUCKETS = 16
_MAX_J = 9999  # j of "<sale>_b<i>x<j>": (15/16) ** 10000 is 0 in practice, so the search never runs out
_SUFFIX_MAX = len(f"_b{MAX_BUCKETS - 1}x{_MAX_J}")
MAX_PARENT_LEN = 64 - _SUFFIX_MAX  # a bucket id is a sale id too (at most 64 characters)
# what a bucket id looks like; a user-chosen sale id of this shape is refused (commerce/sales.py)
BUCKET_ID_RE = re.compile(r"^(?P<parent>[A-Za-z0-9_-]+)_b(?P<i>[1-9]|1[0-5])x(?P<j>0|[1-9][0-9]{0,3})\Z")


def slot_of_sale(sale_id: str) -> int:
    """The hash slot of a sale's keys (all share the tag ``{sale:<id>}``)."""
    return int(key_slot(K.sale_keys(sale_id).sale.encode()))


def slot_range(slot: int, k: int) -> int:
    """Which of k even slot ranges holds ``slot``: r with r*SLOTS//k <= slot < (r+1)*SLOTS//k (the ranges
    ``server/embedded_cluster.py`` gives k masters)."""
    r = slot * k // SLOTS
    while (r + 1) * SLOTS // k <= slot:
        r += 1
    while r * SLOTS // k > slot:
        r -= 1
    return r


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_BUCKETS:
        raise ValueError(f"buckets must be an integer between 1 and {MAX_BUCKETS}")


@lru_cache(maxsize=4096)
def bucket_id(sale_id: str, i: int, k: int) -> str:
    """Bucket i (1 <= i < k) of a sale split into k: ``<sale>_b<i>x<j>`` with the smallest j whose slot is
    in the slot range i places after bucket 0's (wrapping around)."""
    _check_k(k)
    if K.POOL_SEP in sale_id:
        raise ValueError("a pool's sale is not split into buckets")
    if not 1 <= i < k:
        raise ValueError(f"bucket {i} of {k}: bucket 0 is the sale itself; i must be 1..{k - 1}")
    want = (slot_range(slot_of_sale(sale_id), k) + i) % k
    for j in range(_MAX_J + 1):
        cand = f"{sale_id}_b{i}x{j}"
        if slot_range(slot_of_sale(cand), k) == want:
            return cand
    raise ValueError(f"no bucket id for {sale_id!r} bucket {i} of {k}")  # pragma: no cover (probability ~0)


def bucket_ids(sale_id: str, k: int) -> tuple[str, ...]:
    """All k bucket ids of a sale, bucket 0 (the sale itself) first."""
    _check_k(k)
    return (sale_id, *(bucket_id(sale_id, i, k) for i in range(1, k)))


def looks_like_bucket_id(sale_id: str) -> bool:
    """The shape of a bucket id (a sale id a user may not choose)."""
    return BUCKET_ID_RE.match(sale_id) is not None


@lru_cache(maxsize=8192)
def parent_of(sale_id: str) -> str:
    """The sale a bucket belongs to; any other id (a sale, bucket 0, a pool's sale) is its own parent.
    Only an id ``bucket_id`` would generate counts as a bucket: a look-alike is left alone."""
    m = BUCKET_ID_RE.match(sale_id)
    if m is None or K.POOL_SEP in sale_id:
        return sale_id
    parent, i = m["parent"], int(m["i"])
    if len(parent) > MAX_PARENT_LEN:
        return sale_id
    for k in range(i + 1, MAX_BUCKETS + 1):
        if bucket_id(parent, i, k) == sale_id:
            return parent
    return sale_id


def is_bucket_id(sale_id: str) -> bool:
    """A bucket i >= 1 of some sale (bucket 0 is the sale itself: False)."""
    return parent_of(sale_id) != sale_id


def home_bucket(user_id: str, k: int) -> int:
    """The bucket a user always reserves in: CRC-32 of the user id, mod k (never Python's ``hash``,
    which differs per process)."""
    return zlib.crc32(user_id.encode()) % k if k > 1 else 0


def split_units(units: int, k: int) -> list[int]:
    """``units`` over k buckets, as evenly as possible; the remainder goes to the lowest buckets."""
    _check_k(k)
    base, extra = divmod(units, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


def retry_request_id(request_id: str, attempt: int) -> str:
    """The request id of a reserve's ``attempt``-th retry in its home bucket after stock moved there. A
    request's answers are remembered per id, so a retry needs its own id; deriving it makes the chain
    deterministic, so a client's retry of the whole request walks the same chain and gets the answers
    remembered for it. At most 128 characters of the id alphabet ([A-Za-z0-9_.:@-])."""
    cand = f"{request_id}@b{attempt}"
    if len(cand) <= 128:
        return cand
    return f"@b{attempt}:" + hashlib.sha256(request_id.encode()).hexdigest()[:48]


def encode_ids(ids: tuple[str, ...]) -> str:
    return ",".join(ids)


def decode_ids(raw: str) -> tuple[str, ...]:
    return tuple(x for x in raw.split(",") if x)

"""Hot-SKU buckets (issue #12, part 6) on one server: a sale armed as K buckets in different hash slots,
with real Redis/Valkey and real SQL (no mocks).

Arming splits the units and lists the buckets; every buyer holds in their home bucket (the per-user limit
stays exact); an empty home bucket borrows from the others so the sale never answers SOLD_OUT while units
are left anywhere; a concurrent burst sells exactly the units; a move a crash left half done is recovered
exactly once; releases and expiries return units to the bucket they came from; over HTTP the sale is one
sale (create, reserve, pay, the order settled under the sale's id, the end and the archive).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

from commerce.batcher import ReserveBatcher
from conftest import timeout
from gateway_helpers import Api, host_token, setup_room, viewer
from inventory import archive
from inventory import buckets as B
from inventory import keys as K
from commerce.errors import ErrorCode, as_error
from inventory.domain import ArmCode, ReleaseCode, ReserveCode, ReserveRequest, ReserveResult, SaleSpec, StockMoving
from inventory.reaper import Reaper
from inventory.redis_link import is_cluster
from inventory.scripts import Inventory
from inventory.store import Store
from server.app import create_app
from server.config import Settings

pytestmark = [pytest.mark.usefixtures("drop_test_sales"), pytest.mark.timeout(180, method="thread")]


# -- helpers ---------------------------------------------------------------------------------------------

async def hot_spec(inv: Inventory, sale_id: str, units: int, limit: int, ttl_ms: int = 600_000) -> SaleSpec:
    now = await inv.now_ms()
    return SaleSpec(sale_id=sale_id, room_id="room-1", sku="sku-1", unit_price=2500, currency="EUR",
                    allocated=units, per_user_limit=limit, starts_at_ms=now - 1_000, ends_at_ms=now + 600_000,
                    hold_ttl_ms=ttl_ms)


async def arm_hot(inv: Inventory, sale_id: str, units: int, limit: int, k: int = 3, ttl_ms: int = 600_000,
                  spec: SaleSpec | None = None) -> tuple[str, ...]:
    spec = spec or await hot_spec(inv, sale_id, units, limit, ttl_ms)
    r = await inv.arm(spec, k)
    assert r.code is ArmCode.ARMED and r.available == units, r
    ids = await inv.buckets.of(sale_id)
    assert ids == B.bucket_ids(sale_id, k)
    return ids


def homed(prefix: str, home: int, k: int, n: int) -> list[str]:
    """``n`` user ids whose home bucket (of k) is ``home``."""
    return list(itertools.islice((u for u in (f"{prefix}-u{i}" for i in itertools.count())
                                  if B.home_bucket(u, k) == home), n))


async def state(redis: Redis, ids: tuple[str, ...]) -> list[dict[str, int]]:
    """Each bucket's counters."""
    out = []
    for b in ids:
        v = await redis.hmget(K.sale_keys(b).sale, ["allocated", "available", "held", "sold"])
        out.append(dict(zip(("allocated", "available", "held", "sold"), (int(x or 0) for x in v), strict=True)))
    return out


async def assert_balanced(inv: Inventory, sale_id: str) -> None:
    report = await inv.check_invariant(sale_id)
    assert report.ok, report.problems


# -- arming ----------------------------------------------------------------------------------------------

async def test_arm_splits_the_units_and_every_process_learns_the_buckets(inventory: Inventory, redis: Redis,
                                                                         uid: str) -> None:
    sale = f"{uid}-hot"
    spec = await hot_spec(inventory, sale, 200, 2)
    ids = await arm_hot(inventory, sale, 200, 2, spec=spec)
    assert [s["allocated"] for s in await state(redis, ids)] == [67, 67, 66]
    if is_cluster(redis):  # LIVESALE_TEST_REDIS=cluster: 3 masters with even slot ranges, one bucket each
        assert len({redis.get_node_from_key(K.sale_keys(b).sale).name for b in ids}) == 3  # type: ignore[attr-defined]
    head = await redis.hgetall(K.sale_keys(sale).sale)
    assert head["buckets"] == ",".join(ids) and head["buckets_total"] == "200"
    assert set(ids) <= await redis.smembers(K.SALES_REGISTRY)
    assert {K.sale_keys(b).outbox for b in ids} <= await redis.smembers(K.OUTBOX_REGISTRY)
    other = Inventory(redis)  # another process knows the sale only from Redis
    assert await other.buckets.of(sale) == ids
    c = await other.counters(sale)
    assert c is not None and (c.sale_id, c.allocated, c.available, c.held, c.sold) == (sale, 200, 200, 0, 0)
    assert await other.available_many([sale, f"{uid}-none"]) == {sale: 200, f"{uid}-none": None}
    await assert_balanced(other, sale)
    for b in ids[1:]:  # a bucket is not itself a bucketed sale
        assert await other.buckets.of(b) == () and B.parent_of(b) == sale

    assert (await inventory.arm(spec, 3)).code is ArmCode.EXISTS
    assert (await inventory.arm(spec, 2)).code is ArmCode.CONFLICT
    assert (await inventory.arm(spec)).code is ArmCode.CONFLICT  # bucket 0 holds a third of the units
    small = await hot_spec(inventory, f"{uid}-small", 2, 1)
    assert (await inventory.arm(small, 3)).code is ArmCode.INVALID  # fewer units than buckets


# -- routing ---------------------------------------------------------------------------------------------

async def test_buyers_hold_in_their_home_bucket_and_the_limit_holds(inventory: Inventory, redis: Redis,
                                                                    uid: str) -> None:
    sale = f"{uid}-home"
    ids = await arm_hot(inventory, sale, 300, 3)
    users = [f"{uid}-u{i}" for i in range(30)]
    results = await inventory.reserve_many(sale, [ReserveRequest(u, 1, f"r-{u}") for u in users])
    assert all(r.code is ReserveCode.RESERVED for r in results), results
    for u, r in zip(users, results, strict=True):
        assert r.hold_id is not None and r.hold_id.startswith(ids[B.home_bucket(u, 3)] + ".")
        hold = await inventory.get_hold(r.hold_id)
        assert hold is not None and hold.sale_id == sale and hold.user_id == u  # the sale's id, not the bucket's
    assert {B.home_bucket(u, 3) for u in users} == {0, 1, 2}

    whale = users[0]
    many = await asyncio.gather(*(inventory.reserve(sale, whale, 1, f"w{i}") for i in range(12)))
    assert Counter(r.code for r in many) == {ReserveCode.RESERVED: 2, ReserveCode.LIMIT: 10}
    home = ids[B.home_bucket(whale, 3)]
    assert await redis.hget(K.sale_keys(home).buyers, whale) == "3"
    for b in ids:
        if b != home:
            assert await redis.hget(K.sale_keys(b).buyers, whale) is None
    again = await inventory.reserve(sale, users[1], 1, f"r-{users[1]}")  # a client's retry: remembered
    assert again.replayed and again.hold_id == results[1].hold_id
    c = await inventory.counters(sale)
    assert c is not None and (c.held, c.available) == (32, 268)
    await assert_balanced(inventory, sale)


async def test_an_empty_home_bucket_borrows_from_the_others(inventory: Inventory, redis: Redis, uid: str) -> None:
    sale = f"{uid}-dry"
    ids = await arm_hot(inventory, sale, 30, 5)  # 10 units per bucket
    group = homed(uid, 0, 3, 31)  # everyone's home is bucket 0: its 10 units run out after 10 buyers
    got: list[ReserveResult] = []
    for chunk in (group[:7], group[7:16], group[16:30]):
        got += await inventory.reserve_many(sale, [ReserveRequest(u, 1, f"r-{u}") for u in chunk])
    assert [r.code for r in got] == [ReserveCode.RESERVED] * 30, [r.code for r in got]
    assert all(r.hold_id and r.hold_id.startswith(ids[0] + ".") for r in got)  # every hold in the home bucket
    assert got[-1].available == 0  # the last unit anywhere: the sale's sold-out
    last = await inventory.reserve(sale, group[30], 1, f"r-{group[30]}")
    assert (last.code, last.available) == (ReserveCode.SOLD_OUT, 0)
    elsewhere = homed(uid + "x", 2, 3, 1)[0]
    assert (await inventory.reserve(sale, elsewhere, 1, "r-e")).code is ReserveCode.SOLD_OUT
    st = await state(redis, ids)
    assert st[0] == {"allocated": 30, "available": 0, "held": 30, "sold": 0}
    assert st[1]["allocated"] == st[2]["allocated"] == 0
    assert await redis.hlen(K.bucket_transfer_keys(ids[0])[1]) >= 2  # borrowed from both others
    for b in ids:
        assert await redis.hlen(K.bucket_transfer_keys(b)[0]) == 0  # nothing left in transit
    await assert_balanced(inventory, sale)
    # a client's retry of a request answered after a move: the same hold, nothing changes
    again = await inventory.reserve(sale, group[29], 1, f"r-{group[29]}")
    assert again.replayed and again.hold_id == got[29].hold_id and again.code is ReserveCode.RESERVED
    # ... also in one batch with a fresh request that finds the sale sold out
    both = await inventory.reserve_many(sale, [ReserveRequest(group[28], 1, f"r-{group[28]}"),
                                               ReserveRequest(homed(uid + "y", 0, 3, 1)[0], 1, "r-y")])
    assert (both[0].code, both[0].hold_id, both[0].replayed) == (ReserveCode.RESERVED, got[28].hold_id, True)
    assert (both[1].code, both[1].available) == (ReserveCode.SOLD_OUT, 0)
    assert (await inventory.counters(sale)).held == 30  # type: ignore[union-attr]


async def test_quantities_borrow_what_they_need_and_sold_out_means_too_few_anywhere(inventory: Inventory,
                                                                                    uid: str) -> None:
    sale = f"{uid}-qty"
    ids = await arm_hot(inventory, sale, 9, 10)  # 3 units per bucket
    a, b, c, d = homed(uid, 1, 3, 4)
    assert (await inventory.reserve(sale, a, 3, "1")).code is ReserveCode.RESERVED  # all of bucket 1
    r = await inventory.reserve(sale, b, 3, "1")  # borrowed: 3 from the others
    assert r.code is ReserveCode.RESERVED and r.hold_id and r.hold_id.startswith(ids[1] + ".")
    r = await inventory.reserve(sale, c, 4, "1")
    assert (r.code, r.available) == (ReserveCode.SOLD_OUT, 3)  # 3 left anywhere: fewer than asked, no partial fill
    assert (await inventory.reserve(sale, d, 3, "1")).code is ReserveCode.RESERVED
    r = await inventory.reserve(sale, c, 1, "2")
    assert (r.code, r.available) == (ReserveCode.SOLD_OUT, 0)
    await assert_balanced(inventory, sale)


async def test_units_stuck_between_buckets_are_sold_not_answered_sold_out(inventory: Inventory, redis: Redis,
                                                                         uid: str) -> None:
    """Moves left half done (lent, never taken: e.g. the take failed over a failover) hold the last units: a buyer
    whose home bucket is empty still gets one (the batch completes the open moves itself instead of waiting for
    the reaper), and units that cannot arrive yet are answered retryable (UNAVAILABLE), never SOLD_OUT."""
    sale = f"{uid}-stuck"
    b0, b1, b2 = await arm_hot(inventory, sale, 30, 5)  # 10 units per bucket
    buyers = homed(uid, 0, 3, 13)
    got = await inventory.reserve_many(sale, [ReserveRequest(u, 1, f"r-{u}") for u in buyers[:10]])
    assert [r.code for r in got] == [ReserveCode.RESERVED] * 10  # bucket 0's own units
    stock = inventory.buckets
    # buckets 1 and 2 lend everything they have to each other, and neither take happens
    assert (await stock.lend(b1, "T1", b2, 10))[:2] == ("LENT", 10)
    assert (await stock.lend(b2, "T2", b1, 10))[:2] == ("LENT", 10)
    assert await stock.in_transit((b0, b1, b2)) == 20 and await stock.remaining((b0, b1, b2)) == 20
    r = await inventory.reserve(sale, buyers[10], 1, "r-a")
    assert r.code is ReserveCode.RESERVED and r.hold_id and r.hold_id.startswith(b0 + "."), r
    assert await stock.in_transit((b0, b1, b2)) == 0  # both moves completed by that batch
    await assert_balanced(inventory, sale)

    # the rest of the units lent towards a bucket that cannot take them (gone): units are left, none can reach
    # a buyer now -- the retryable answer, never SOLD_OUT; nothing changes
    left = await stock.remaining((b0, b1, b2))
    assert left == 19
    for b in (b1, b2):
        avail = int(await redis.hget(K.sale_keys(b).sale, "available") or 0)
        if avail:
            assert (await stock.lend(b, f"G{b[-1]}", f"{sale}gone", avail))[:2] == ("LENT", avail)
    for b in (b0, b1, b2):  # bucket 0 lends what it got back in the move too
        avail = int(await redis.hget(K.sale_keys(b).sale, "available") or 0)
        if avail:
            assert (await stock.lend(b, f"H{b[-1]}", f"{sale}gone", avail))[:2] == ("LENT", avail)
    with pytest.raises(StockMoving):
        await inventory.reserve(sale, buyers[11], 1, "r-b")
    err = as_error(StockMoving("2 unit(s) of x are moving between its buckets"))
    assert err is not None and err.code is ErrorCode.UNAVAILABLE and "same request id" in err.message
    assert await stock.remaining((b0, b1, b2)) == 19  # nothing was taken


async def test_a_burst_sells_exactly_the_units_and_no_sold_out_comes_early(inventory: Inventory, redis: Redis,
                                                                          uid: str) -> None:
    """3,000 requests (1,000 buyers, 3 taps each, limit 2) over 200 units in 3 buckets, through the gateway's
    reserve batches (one batch key per home bucket), fired in waves. Stock only shrinks here (nothing is
    released), so a sound check of "no SOLD_OUT while units were left": every SOLD_OUT says 0 left, and no
    request that got a unit started after any SOLD_OUT answer had come back."""
    sale = f"{uid}-burst"
    ids = await arm_hot(inventory, sale, 200, 2)
    batcher = ReserveBatcher(inventory)
    # the first buyers all have bucket 0 as home, so it runs dry while the others still have units: the
    # burst borrows under concurrency; each buyer's three taps are close together, so the limit matters
    users = homed(uid + "h0", 0, 3, 150) + [f"{uid}-b{i}" for i in range(850)]
    reqs = [ReserveRequest(u, 1, f"{u}-{n}") for u in users for n in range(3)]
    answers: list[tuple[ReserveRequest, ReserveResult, float, float]] = []

    async def one(r: ReserveRequest) -> None:
        t0 = time.monotonic()
        res = await batcher.call(inventory.buckets.batch_key(sale, r.user_id), r)
        answers.append((r, res, t0, time.monotonic()))

    tasks: list[asyncio.Task[None]] = []
    try:
        for w in range(0, len(reqs), 100):  # 30 waves, each a moment after the last
            tasks += [asyncio.create_task(one(r)) for r in reqs[w:w + 100]]
            await asyncio.sleep(0.003)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout(60))
    finally:
        for t in tasks:
            t.cancel()
        await batcher.aclose()
    codes = Counter(res.code for _, res, _, _ in answers)
    assert codes[ReserveCode.RESERVED] == 200, codes
    assert set(codes) <= {ReserveCode.RESERVED, ReserveCode.SOLD_OUT, ReserveCode.LIMIT}, codes
    per_user = Counter(r.user_id for r, res, _, _ in answers if res.ok)
    assert max(per_user.values()) <= 2
    for r, res, _, _ in answers:
        if res.code is ReserveCode.LIMIT:
            assert per_user[r.user_id] == 2
        if res.code is ReserveCode.SOLD_OUT:
            assert res.available == 0, res
    sold_out_ends = [t1 for _, res, _, t1 in answers if res.code is ReserveCode.SOLD_OUT]
    reserved_starts = [t0 for _, res, t0, _ in answers if res.ok]
    assert sold_out_ends and reserved_starts
    assert max(reserved_starts) <= min(sold_out_ends), "a SOLD_OUT came back before the last unit was asked for"
    assert sum(1 for _, res, _, _ in answers if res.ok and res.available == 0) >= 1  # the sale's sold-out
    st = await state(redis, ids)
    assert [s["available"] for s in st] == [0, 0, 0] and sum(s["held"] for s in st) == 200
    assert sum(s["allocated"] for s in st) == 200  # nothing in transit
    for b in ids:
        buyers = await redis.hgetall(K.sale_keys(b).buyers)
        assert all(B.home_bucket(str(u), 3) == ids.index(b) and int(n) <= 2 for u, n in buyers.items())
    await assert_balanced(inventory, sale)
    print(f"\nburst: {dict(codes)}, moves into buckets: "
          f"{[await redis.hlen(K.bucket_transfer_keys(b)[1]) for b in ids]}")


# -- a move a crash left half done --------------------------------------------------------------------------

async def test_a_lend_without_its_take_is_recovered_exactly_once(inventory: Inventory, redis: Redis,
                                                                 uid: str) -> None:
    sale = f"{uid}-crash"
    b0, b1, b2 = await arm_hot(inventory, sale, 30, 5)
    stock = inventory.buckets
    code, units, left = await stock.lend(b1, "T1", b0, 4)  # the mover "crashes" here: no take
    assert (code, units, left) == ("LENT", 5, 5)  # at least what was asked, up to half of what it had
    assert (await stock.lend(b1, "T1", b0, 4))[:2] == ("REPLAYED", 5)  # idempotent by transfer id
    assert await stock.in_transit((b0, b1, b2)) == 5
    c = await inventory.counters(sale)
    assert c is not None and (c.allocated, c.available) == (25, 25)
    await assert_balanced(inventory, sale)  # each bucket balances; allocated + in transit == the sale's units
    assert await stock.remaining((b0, b1, b2)) == 30  # units in transit are not sold out

    assert await stock.recover(b1) == 0  # too young: its mover may still be about to take it
    assert await stock.recover(b1, grace_ms=0) == 5
    assert await stock.recover(b1, grace_ms=0) == 0
    assert (await stock.take(b0, "T1", 5, b1))[0] == "REPLAYED"  # the mover's late take changes nothing
    st = await state(redis, (b0, b1, b2))
    assert [s["allocated"] for s in st] == [15, 5, 10] and [s["available"] for s in st] == [15, 5, 10]
    assert await redis.hlen(K.bucket_transfer_keys(b1)[0]) == 0
    await assert_balanced(inventory, sale)

    # the reaper runs the same recovery on every bucketed sale
    assert (await stock.lend(b2, "T2", b1, 2))[:2] == ("LENT", 5)
    stock.transit_grace_ms = 0
    try:
        await Reaper(redis, inventory, interval_ms=100).sweep()
    finally:
        stock.transit_grace_ms = 5_000
    st = await state(redis, (b0, b1, b2))
    assert [s["allocated"] for s in st] == [15, 10, 5] and await stock.in_transit((b0, b1, b2)) == 0
    await assert_balanced(inventory, sale)


async def test_a_recovery_confirming_a_finished_move_lends_nothing(inventory: Inventory, redis: Redis,
                                                                   uid: str) -> None:
    """The race between a recovery and the mover: the recovery read the lend record, the mover then took the units
    and deleted the record. The recovery's confirming lend (replay only) must not lend the same transfer id
    afresh: the receiver took that id already, so those units would arrive nowhere."""
    sale = f"{uid}-race"
    b0, b1, _b2 = await arm_hot(inventory, sale, 30, 5)
    stock = inventory.buckets
    assert (await stock.lend(b1, "T1", b0, 4))[:2] == ("LENT", 5)
    assert (await stock.take(b0, "T1", 5, b1))[0] == "TAKEN"
    await redis.hdel(K.bucket_transfer_keys(b1)[0], "T1")  # the mover's last step
    assert await stock.lend(b1, "T1", b0, 5, replay_only=True) == ("GONE", 0, 5)
    assert await stock.remaining((b0, b1, _b2)) == 30 and await stock.in_transit((b0, b1, _b2)) == 0
    await assert_balanced(inventory, sale)


# -- units back to where they came from --------------------------------------------------------------------

async def test_release_and_expiry_return_units_to_their_bucket(inventory: Inventory, redis: Redis,
                                                               uid: str) -> None:
    sale = f"{uid}-back"
    ids = await arm_hot(inventory, sale, 6, 5, ttl_ms=600)
    u1 = homed(uid, 1, 3, 1)[0]
    r = await inventory.reserve(sale, u1, 2, "a")
    assert r.ok and r.hold_id and r.hold_id.startswith(ids[1] + ".")
    rel = await inventory.release(r.hold_id, u1)
    assert rel.code is ReleaseCode.RELEASED
    assert [s["available"] for s in await state(redis, ids)] == [2, 2, 2]

    takers = [homed(uid, h, 3, 1)[0] for h in range(3)]
    got = [await inventory.reserve(sale, u, 2, "b") for u in takers]
    assert all(g.ok for g in got) and sum(1 for g in got if g.available == 0) == 1  # one sold-out
    assert [s["held"] for s in await state(redis, ids)] == [2, 2, 2]
    pay_by = max(g.at_ms or 0 for g in got)
    while await inventory.now_ms() <= pay_by:
        await asyncio.sleep(0.05)
    restocked: list[tuple[str, str, int]] = []

    async def on_restock(room: str, sale_id: str, available: int) -> None:
        restocked.append((room, sale_id, available))

    await Reaper(redis, inventory, interval_ms=100, on_restock=on_restock).sweep()
    st = await state(redis, ids)
    assert [s["available"] for s in st] == [2, 2, 2] and [s["held"] for s in st] == [0, 0, 0]
    assert restocked == [("room-1", sale, 2)]  # once, for the sale (the bucket swept first brought it back)
    await assert_balanced(inventory, sale)


# -- over HTTP: one sale ---------------------------------------------------------------------------------

async def test_http_create_reserve_pay_settle_end_and_archive(aiohttp_client: Any, settings: Settings,
                                                              database_url: str, uid: str, redis: Redis) -> None:
    api = Api(await aiohttp_client(create_app(settings.replace(settle_block_ms=100, reap_interval_ms=50))))
    host = host_token(settings.secret)
    room = f"{uid}r"
    await setup_room(api, host, room, products=1)
    path = f"/api/rooms/{room}/sales"
    for bad in ({"buckets": 17}, {"buckets": 0}, {"buckets": True}, {"buckets": 3, "units": 2},
                {"buckets": 3, "pool": "nopool"}, {"buckets": 3, "deposit": 100, "pool": "nopool"},
                {"sale_id": "flash_b1x0"}, {"sale_id": "flash_b12x345", "buckets": 2}):
        st, body = await api.call("POST", path, host, {"product_id": "p0", "units": 30, **bad})
        assert st == 400 and body["error"]["code"] == "INVALID", (bad, st, body)

    sale = (await api.ok("POST", path, host, {"product_id": "p0", "units": 30, "per_user_limit": 2,
                                              "sale_id": f"{uid}-hot", "buckets": 3}, 201))
    sid = sale["sale_id"]
    assert sid == f"{uid}-hot" and sale["units_left"] == 30
    view = await api.ok("GET", f"/api/sales/{sid}")
    assert (view["units_left"], view["allocated"], view["held"], view["sold"]) == (30, 30, 0, 0)
    tokens = [viewer(settings.secret, f"v{i}") for i in range(6)]
    holds = []
    for tok, user in tokens:
        h = await api.ok("POST", f"/api/sales/{sid}/reserve", tok, {"request_id": "1", "qty": 1}, 201)
        assert h["sale_id"] == sid and h["hold_id"].split(".")[0] == B.bucket_ids(sid, 3)[B.home_bucket(user, 3)]
        holds.append(h["hold_id"])
    got = await api.ok("GET", f"/api/holds/{holds[0]}", tokens[0][0])
    assert got["sale_id"] == sid
    paid = await api.ok("POST", f"/api/holds/{holds[0]}/pay", tokens[0][0], {}, 201)
    order_id = paid["order_id"]
    deadline = time.monotonic() + timeout(15)
    while (st := await api.call("GET", f"/api/orders/{order_id}", tokens[0][0]))[0] != 200:
        assert time.monotonic() < deadline, st
        await asyncio.sleep(0.05)
    assert st[1]["sale_id"] == sid  # the order belongs to the sale, whichever bucket sold it
    view = await api.ok("GET", f"/api/sales/{sid}")
    assert (view["units_left"], view["held"], view["sold"]) == (24, 5, 1)
    for hold, (tok, _u) in zip(holds[1:], tokens[1:], strict=True):
        await api.ok("DELETE", f"/api/holds/{hold}", tok, status=200)

    # the host ends it: every bucket closes; once settled, the reaper retires it as one sale
    await api.ok("POST", f"/api/rooms/{room}/actions/end_sale", host, {"sale": sid}, 200)
    st, body = await api.call("POST", f"/api/sales/{sid}/reserve", tokens[5][0], {"request_id": "2", "qty": 1})
    assert st == 410 and body["error"]["code"] == "ENDED", (st, body)
    store = await Store.open(database_url)
    try:
        deadline = time.monotonic() + timeout(20)
        while (final := await archive.get_sale(store, sid)) is None:
            assert time.monotonic() < deadline, "the sale was not archived"
            await asyncio.sleep(0.1)
        assert (final.allocated, final.sold, final.unsold, final.released_units, final.buyers) == (30, 1, 29, 5, 6)
        for b in B.bucket_ids(sid, 3):
            assert await redis.pttl(K.sale_keys(b).sale) > 0  # every bucket got the retention TTL
        deadline = time.monotonic() + timeout(10)
        while set(B.bucket_ids(sid, 3)) & await redis.smembers(K.SALES_REGISTRY):
            assert time.monotonic() < deadline, "the buckets stayed registered"
            await asyncio.sleep(0.05)
        async with store.engine.connect() as conn:
            from sqlalchemy import select

            from inventory.store import orders
            rows = (await conn.execute(select(orders.c.sale_id).where(orders.c.order_id == order_id))).all()
        assert [r[0] for r in rows] == [sid]
    finally:
        await store.close()


# -- reconcile: a bucket lost with Redis data ------------------------------------------------------------

async def test_reconcile_rebuilds_a_lost_bucket_without_creating_units(inventory: Inventory, redis: Redis,
                                                                        store: Store, uid: str) -> None:
    """One bucket's keys vanish (a shard that lost its data) while another bucket was lending it units: the
    comparison with SQL reports it, the repair rebuilds it with exactly the units no surviving bucket
    accounts for, and the sale adds up to SQL's units again."""
    from inventory.reconcile import Reconciler
    from inventory.store import SaleRecord

    sale = f"{uid}-lost"
    spec = await hot_spec(inventory, sale, 60, 5)
    rec = SaleRecord(sale_id=sale, room_id="room-1", product_id="p0", sku="sku-1", title="Hot", unit_price=2500,
                     currency="EUR", allocated=60, per_user_limit=5, starts_at_ms=spec.starts_at_ms,
                     ends_at_ms=spec.ends_at_ms, hold_ttl_ms=spec.hold_ttl_ms, created_at_ms=spec.starts_at_ms)
    assert await store.insert_sale(rec)
    b0, b1, b2 = await arm_hot(inventory, sale, 60, 5, spec=spec)
    for h in range(3):
        for u in homed(f"{uid}{h}", h, 3, 2):
            assert (await inventory.reserve(sale, u, 2, "1")).ok
    recon = Reconciler(redis, store, inventory)
    drift = await recon.check(rec)
    assert drift.ok, drift.problems
    assert (await inventory.buckets.lend(b2, "T9", b1, 3))[:2] == ("LENT", 8)  # in transit to b1 ...
    assert (await recon.check(rec)).ok  # units in transit are accounted for
    for key in [*K.sale_keys(b1).all, *K.bucket_transfer_keys(b1)]:  # ... when b1 loses everything
        await redis.delete(key)
    drift = await recon.check(rec)
    assert drift.missing and not drift.ok and any(b1 in p for p in drift.problems), drift
    result = await recon.repair(sale)
    assert result.code == "REBUILT", result
    st = await state(redis, (b0, b1, b2))
    assert sum(s["allocated"] for s in st) == 60 and await inventory.buckets.in_transit((b0, b1, b2)) == 0
    assert st[1] == {"allocated": 28, "available": 28, "held": 0, "sold": 0}  # its 20 + the 8 on their way
    drift = await recon.check(rec)
    assert drift.ok, drift.problems
    c = await inventory.counters(sale)
    assert c is not None and (c.allocated, c.held, c.available) == (60, 8, 52)  # b1's holds were lost with it

    # bucket 0 (the one listing the buckets) lost too: found by probing, rebuilt, the list written again
    for key in K.sale_keys(b0).all:
        await redis.delete(key)
    fresh = Inventory(redis)
    assert await fresh.buckets.discover(sale) == (b0, b1, b2)
    recon = Reconciler(redis, store, fresh)
    assert (await recon.check(rec)).missing
    assert (await recon.repair(sale)).code == "REBUILT"
    assert await fresh.buckets.of(sale) == (b0, b1, b2)
    assert (await recon.check(rec)).ok
    assert sum(s["allocated"] for s in await state(redis, (b0, b1, b2))) == 60

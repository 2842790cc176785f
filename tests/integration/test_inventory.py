"""The inventory Lua scripts and their wrappers against a real Redis/Valkey (no mocks, no fakeredis).

Every test uses its own sale ids (from ``uid``), so a shared server is never flushed. Time is Redis
TIME: tests that need time to pass poll the server's clock with a bounded timeout.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.crc import key_slot

from redis_helpers import redis_for
from conftest import timeout
from inventory import keys as K
from inventory.pools import PoolRecord
from inventory.domain import (
    ArmCode, ConfirmCode, ConfirmResult, InvalidInput, ReleaseCode, ReserveCode, ReserveRequest, SaleSpec,
)
from inventory.scripts import SCRIPT_NAMES, Inventory

LUA_DIR = Path(__file__).resolve().parents[2] / "inventory" / "lua"
HAS_FRESH = "fresh" in ConfirmResult.__dataclass_fields__  # ConfirmResult.fresh, if this version has it


pytestmark = pytest.mark.usefixtures("drop_test_sales")


# -- helpers ---------------------------------------------------------------------------------------

async def arm_sale(inv: Inventory, sale_id: str, *, allocated: int = 100, limit: int = 1,
                   start_in_ms: int = -1_000, duration_ms: int = 600_000, ttl_ms: int = 600_000,
                   **overrides: Any) -> SaleSpec:
    now = await inv.now_ms()
    starts = now + start_in_ms
    fields = dict(sale_id=sale_id, room_id="room-1", sku="sku-1", unit_price=2500, currency="EUR",
                  allocated=allocated, per_user_limit=limit, starts_at_ms=starts,
                  ends_at_ms=starts + duration_ms, hold_ttl_ms=ttl_ms)
    fields.update(overrides)
    spec = SaleSpec(**fields)
    res = await inv.arm(spec)
    assert res.code is ArmCode.ARMED, res
    return spec


async def wait_for(cond: Callable[[], Awaitable[bool]], seconds: float, what: str,
                   interval: float = 0.002) -> None:
    """Poll ``cond`` until it is true; fail after ``seconds`` (scaled by the CI timeout factor)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(seconds)
    while not await cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_redis_time(inv: Inventory, at_ms: int, seconds: float = 5.0) -> None:
    """Wait until the server's clock (Redis TIME, which the scripts use) reaches ``at_ms``."""
    async def reached() -> bool:
        return await inv.now_ms() >= at_ms
    await wait_for(reached, seconds, f"Redis TIME >= {at_ms}", interval=0.001)


async def snapshot(redis, sale_id: str) -> dict[str, Any]:
    """Every key of the sale: its type and full contents."""
    snap: dict[str, Any] = {}
    for key in K.sale_keys(sale_id).all:
        kind = await redis.type(key)
        if kind == "hash":
            value: Any = await redis.hgetall(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = await redis.xrange(key)
        elif kind == "string":
            value = await redis.get(key)
        elif kind == "none":
            value = None
        else:
            value = await redis.dump(key)
        snap[key] = (kind, value)
    snap["registered"] = (await redis.sismember(K.SALES_REGISTRY, sale_id),
                          await redis.sismember(K.OUTBOX_REGISTRY, K.sale_keys(sale_id).outbox))
    return snap


async def assert_ok(inv: Inventory, sale_id: str) -> None:
    report = await inv.check_invariant(sale_id)
    assert report.ok, report.problems


async def key_count(redis, sale_id: str) -> int:
    return await redis.exists(*K.sale_keys(sale_id).all)


def rid() -> str:
    return "r" + secrets.token_hex(6)


# -- per-user limit ----------------------------------------------------------------------------------

async def test_per_user_limit_50_parallel_requests(inventory, uid):
    sale = f"{uid}-lim"
    await arm_sale(inventory, sale, allocated=100, limit=2)
    results = await asyncio.gather(*(inventory.reserve(sale, "whale", 1, f"r{i}") for i in range(50)))
    assert Counter(r.code for r in results) == {ReserveCode.RESERVED: 2, ReserveCode.LIMIT: 48}
    assert await inventory.redis.hget(K.sale_keys(sale).buyers, "whale") == "2"
    assert await inventory.redis.hlen(K.sale_keys(sale).holds) == 2
    assert (await inventory.counters(sale)).available == 98
    await assert_ok(inventory, sale)


async def test_per_user_limit_within_one_batch_and_mixed_qty(inventory, uid):
    sale = f"{uid}-limb"
    await arm_sale(inventory, sale, allocated=100, limit=2)
    reqs = [ReserveRequest("whale", 1 + i % 2, f"r{i}") for i in range(50)]
    results = await inventory.reserve_many(sale, reqs)
    held = sum(q.qty for q, r in zip(reqs, results) if r.ok)
    assert held == 2
    assert all(r.code in (ReserveCode.RESERVED, ReserveCode.LIMIT) for r in results)
    assert await inventory.redis.hget(K.sale_keys(sale).buyers, "whale") == "2"
    await assert_ok(inventory, sale)


# -- idempotency -------------------------------------------------------------------------------------

async def test_same_request_id_20_times_concurrently_is_one_hold(inventory, uid):
    sale = f"{uid}-idem"
    await arm_sale(inventory, sale, allocated=10, limit=5)
    results = await asyncio.gather(*(inventory.reserve(sale, "alice", 2, "req-1") for _ in range(20)))
    assert {r.code for r in results} == {ReserveCode.RESERVED}
    hold_ids = {r.hold_id for r in results}
    assert len(hold_ids) == 1 and None not in hold_ids
    assert len({r.at_ms for r in results}) == 1
    k = K.sale_keys(sale)
    assert list(await inventory.redis.hkeys(k.holds)) == list(hold_ids)
    assert (await inventory.counters(sale)).available == 8

    again = await inventory.reserve(sale, "alice", 2, "req-1")  # e.g. a retry after a client timeout
    assert (again.code, again.hold_id, again.at_ms) == (ReserveCode.RESERVED, *hold_ids, results[0].at_ms)
    assert again.user_units == 2
    assert await inventory.redis.hlen(k.holds) == 1
    assert (await inventory.counters(sale)).available == 8
    await assert_ok(inventory, sale)


async def test_same_request_id_repeated_in_one_batch_is_one_hold(inventory, uid):
    sale = f"{uid}-idemb"
    await arm_sale(inventory, sale, allocated=10, limit=5)
    results = await inventory.reserve_many(sale, [ReserveRequest("bob", 1, "dup")] * 20)
    assert {r.code for r in results} == {ReserveCode.RESERVED}
    assert len({r.hold_id for r in results}) == 1
    assert await inventory.redis.hlen(K.sale_keys(sale).holds) == 1
    assert (await inventory.counters(sale)).available == 9
    await assert_ok(inventory, sale)


async def test_refused_request_replays_its_refusal(inventory, uid):
    sale = f"{uid}-idems"
    await arm_sale(inventory, sale, allocated=1, limit=5)
    assert (await inventory.reserve(sale, "a", 1, "ra")).ok
    first = await inventory.reserve(sale, "b", 1, "rb")
    assert first.code is ReserveCode.SOLD_OUT
    before = await snapshot(inventory.redis, sale)
    again = await inventory.reserve(sale, "b", 1, "rb")
    assert again.code is ReserveCode.SOLD_OUT and again.hold_id is None
    assert await snapshot(inventory.redis, sale) == before


async def test_request_ids_are_scoped_per_user(inventory, uid):
    """Another viewer reusing alice's request id neither replays nor blocks: it is its own request."""
    sale = f"{uid}-scoped"
    await arm_sale(inventory, sale, allocated=10, limit=5)
    first = await inventory.reserve(sale, "alice", 2, "req-1")
    other = await inventory.reserve(sale, "mallory", 2, "req-1")
    assert first.ok and other.ok and first.hold_id != other.hold_id
    assert (await inventory.reserve(sale, "alice", 2, "req-1")).hold_id == first.hold_id
    assert (await inventory.check_invariant(sale)).ok


@pytest.mark.parametrize("user,qty", [("alice", 3), ("alice", 1)])
async def test_same_request_id_different_payload_is_idem_mismatch(inventory, uid, user, qty):
    sale = f"{uid}-mis"
    await arm_sale(inventory, sale, allocated=10, limit=5)
    first = await inventory.reserve(sale, "alice", 2, "req-1")
    assert first.ok
    before = await snapshot(inventory.redis, sale)
    res = await inventory.reserve(sale, user, qty, "req-1")
    assert res.code is ReserveCode.IDEM_MISMATCH and res.hold_id is None
    assert await snapshot(inventory.redis, sale) == before
    # the original request still replays
    again = await inventory.reserve(sale, "alice", 2, "req-1")
    assert (again.code, again.hold_id) == (ReserveCode.RESERVED, first.hold_id)


# -- timing ------------------------------------------------------------------------------------------

async def test_before_starts_at_is_not_started_and_writes_nothing(inventory, uid):
    sale = f"{uid}-early"
    spec = await arm_sale(inventory, sale, start_in_ms=60_000)
    before = await snapshot(inventory.redis, sale)
    res = await inventory.reserve(sale, "alice", 1, "r1")
    assert res.code is ReserveCode.NOT_STARTED
    assert res.at_ms == spec.starts_at_ms and res.hold_id is None
    assert await snapshot(inventory.redis, sale) == before


async def test_after_ends_at_is_ended(inventory, uid):
    sale = f"{uid}-late"
    now = await inventory.now_ms()
    spec = await arm_sale(inventory, sale, start_in_ms=-1_000, duration_ms=1_300, limit=5)
    assert spec.ends_at_ms <= now + 400
    assert (await inventory.reserve(sale, "alice", 1, "r-open")).ok
    await wait_redis_time(inventory, spec.ends_at_ms, seconds=5)
    before = await snapshot(inventory.redis, sale)
    res = await inventory.reserve(sale, "alice", 1, "r-late")
    assert res.code is ReserveCode.ENDED and res.at_ms == spec.ends_at_ms and res.hold_id is None
    batch = await inventory.reserve_many(sale, [ReserveRequest(f"u{i}", 1, f"rl{i}") for i in range(5)])
    assert {r.code for r in batch} == {ReserveCode.ENDED}
    assert await snapshot(inventory.redis, sale) == before


# -- expiry, confirm, release -----------------------------------------------------------------------

async def test_reap_restocks_exactly_once_and_frees_the_limit(inventory, uid):
    sale = f"{uid}-reap"
    await arm_sale(inventory, sale, allocated=5, limit=2, ttl_ms=200)
    r = await inventory.reserve(sale, "alice", 2, "r1")
    assert r.ok and (await inventory.reserve(sale, "alice", 1, "r2")).code is ReserveCode.LIMIT
    count, units, available, nxt = await inventory.reap(sale)
    assert (count, units, available, nxt) == (0, 0, 3, r.at_ms)  # not due yet

    await wait_redis_time(inventory, r.at_ms)
    assert await inventory.reap(sale) == (1, 2, 5, 0)
    assert await inventory.reap(sale) == (0, 0, 5, 0)
    assert (await inventory.get_hold(r.hold_id)).status == "expired"
    assert (await inventory.release(r.hold_id, "alice")).code is ReleaseCode.NOT_HELD
    assert (await inventory.confirm(r.hold_id, "pay-1", "alice")).code is ConfirmCode.EXPIRED
    c = await inventory.counters(sale)
    assert (c.available, c.held, c.sold) == (5, 0, 0)
    await assert_ok(inventory, sale)

    again = await inventory.reserve(sale, "alice", 2, "r3")  # the limit was freed
    assert again.ok and again.user_units == 2
    await assert_ok(inventory, sale)


async def test_confirm_after_deadline_expires_the_hold_itself(inventory, uid):
    sale = f"{uid}-late-pay"
    await arm_sale(inventory, sale, allocated=5, limit=3, ttl_ms=200)
    r = await inventory.reserve(sale, "alice", 3, "r1")
    assert r.ok
    await wait_redis_time(inventory, r.at_ms)
    res = await inventory.confirm(r.hold_id, "pay-1", "alice")
    assert res.code is ConfirmCode.EXPIRED and res.order_id is None and res.status == "expired"
    c = await inventory.counters(sale)
    assert (c.available, c.held, c.sold) == (5, 0, 0)
    assert await inventory.reap(sale) == (0, 0, 5, 0)  # already restocked: not twice
    assert (await inventory.confirm(r.hold_id, "pay-1", "alice")).code is ConfirmCode.EXPIRED
    assert (await inventory.counters(sale)).available == 5
    assert await inventory.redis.xlen(K.sale_keys(sale).outbox) == 0
    assert await inventory.redis.hget(K.sale_keys(sale).buyers, "alice") == "0"
    await assert_ok(inventory, sale)


async def test_confirm_racing_reap_has_one_winner_per_hold(inventory, uid):
    sale = f"{uid}-race"
    await arm_sale(inventory, sale, allocated=50, limit=50, ttl_ms=120)
    k = K.sale_keys(sale)
    outcomes = Counter()
    confirmed_units = 0
    rounds = 12
    for round_no in range(rounds):
        qty = 1 + round_no % 3
        r = await inventory.reserve(sale, "alice", qty, f"r{round_no}")
        assert r.ok
        # fire right at the deadline (0-3 ms before it), so calls land on both sides of it
        await wait_redis_time(inventory, r.at_ms - round_no % 4)
        calls = []
        for i in range(10):  # interleaved; on odd rounds a reap is sent first
            pair = [inventory.confirm(r.hold_id, f"pay-{round_no}-{i}", "alice"), inventory.reap(sale)]
            calls += pair[::-1] if round_no % 2 else pair
        results = await asyncio.gather(*calls)
        confirm_results = [x for x in results if not isinstance(x, tuple)]
        confirms = [x.code for x in confirm_results]
        if HAS_FRESH:  # the call that did the confirming, and only it, says so
            assert sum(x.fresh for x in confirm_results) == confirms.count(ConfirmCode.CONFIRMED)
        reaped = sum(x[0] for x in results if isinstance(x, tuple))
        assert len(confirms) == 10
        hold = await inventory.get_hold(r.hold_id)
        n_ok = confirms.count(ConfirmCode.CONFIRMED)
        assert n_ok <= 1
        if n_ok == 1:
            assert hold.status == "confirmed" and reaped == 0
            assert set(confirms) <= {ConfirmCode.CONFIRMED, ConfirmCode.ALREADY_CONFIRMED}
            confirmed_units += qty
        else:
            assert hold.status == "expired"
            assert set(confirms) <= {ConfirmCode.EXPIRED}
            assert reaped <= 1  # 0: a confirm expired it first
        outcomes[hold.status] += 1
        c = await inventory.counters(sale)
        assert (c.held, c.sold, c.available) == (0, confirmed_units, 50 - confirmed_units)
        assert await inventory.redis.xlen(k.outbox) == outcomes["confirmed"]
        await assert_ok(inventory, sale)
    assert sum(outcomes.values()) == rounds


async def test_double_confirm(inventory, uid):
    sale = f"{uid}-conf"
    await arm_sale(inventory, sale, allocated=5, limit=2)
    k = K.sale_keys(sale)
    r = await inventory.reserve(sale, "alice", 2, "r1")
    first = await inventory.confirm(r.hold_id, "pay-1", "alice")
    assert (first.code, first.order_id, first.status) == (ConfirmCode.CONFIRMED, r.hold_id, "confirmed")
    second = await inventory.confirm(r.hold_id, "pay-1", "alice")
    assert (second.code, second.order_id) == (ConfirmCode.CONFIRMED, r.hold_id)
    if HAS_FRESH:
        assert (first.fresh, second.fresh) == (True, False)
    assert await inventory.redis.xlen(k.outbox) == 1
    other = await inventory.confirm(r.hold_id, "pay-2", "alice")
    assert other.code is ConfirmCode.ALREADY_CONFIRMED
    assert await inventory.redis.xlen(k.outbox) == 1
    [(_, entry)] = await inventory.redis.xrange(k.outbox)
    assert (entry["order_id"], entry["user_id"], entry["qty"], entry["payment_ref"]) == (r.hold_id, "alice", "2", "pay-1")
    assert (entry["sale_id"], entry["unit_price"], entry["currency"]) == (sale, "2500", "EUR")
    c = await inventory.counters(sale)
    assert (c.available, c.held, c.sold) == (3, 0, 2)
    assert (await inventory.get_hold(r.hold_id)).payment_ref == "pay-1"
    # a confirmed hold never expires: reap after its pay-by changes nothing
    assert await inventory.redis.zscore(k.deadlines, r.hold_id) is None
    await assert_ok(inventory, sale)


async def test_concurrent_double_confirm_same_ref_one_outbox_entry(inventory, uid):
    sale = f"{uid}-conf2"
    await arm_sale(inventory, sale, allocated=5, limit=2)
    r = await inventory.reserve(sale, "alice", 1, "r1")
    results = await asyncio.gather(*(inventory.confirm(r.hold_id, "pay-1", "alice") for _ in range(20)))
    assert {x.code for x in results} == {ConfirmCode.CONFIRMED}
    if HAS_FRESH:
        assert sum(x.fresh for x in results) == 1
    assert await inventory.redis.xlen(K.sale_keys(sale).outbox) == 1
    await assert_ok(inventory, sale)


async def test_confirm_by_another_user_is_forbidden(inventory, uid):
    sale = f"{uid}-cforb"
    await arm_sale(inventory, sale, allocated=5, limit=2)
    r = await inventory.reserve(sale, "alice", 1, "r1")
    before = await snapshot(inventory.redis, sale)
    assert (await inventory.confirm(r.hold_id, "pay-1", "mallory")).code is ConfirmCode.FORBIDDEN
    assert await snapshot(inventory.redis, sale) == before


async def test_release_rules(inventory, uid):
    sale = f"{uid}-rel"
    await arm_sale(inventory, sale, allocated=5, limit=3)
    k = K.sale_keys(sale)
    a = await inventory.reserve(sale, "alice", 2, "r1")
    b = await inventory.reserve(sale, "alice", 1, "r2")
    assert a.ok and b.ok

    before = await snapshot(inventory.redis, sale)
    forb = await inventory.release(a.hold_id, "mallory")
    assert forb.code is ReleaseCode.FORBIDDEN
    assert await snapshot(inventory.redis, sale) == before

    first = await inventory.release(a.hold_id, "alice")
    assert (first.code, first.status, first.available) == (ReleaseCode.RELEASED, "released", 4)
    second = await inventory.release(a.hold_id, "alice")
    assert (second.code, second.status, second.available) == (ReleaseCode.NOT_HELD, "released", 4)
    assert await inventory.redis.zscore(k.deadlines, a.hold_id) is None
    assert await inventory.redis.hget(k.buyers, "alice") == "1"
    assert (await inventory.confirm(a.hold_id, "pay-1", "alice")).code is ConfirmCode.EXPIRED

    assert (await inventory.confirm(b.hold_id, "pay-2", "alice")).code is ConfirmCode.CONFIRMED
    after_confirm = await inventory.release(b.hold_id, "alice")
    assert (after_confirm.code, after_confirm.status) == (ReleaseCode.NOT_HELD, "confirmed")
    assert (await inventory.release(b.hold_id)).code is ReleaseCode.NOT_HELD  # operator, still no-op
    c = await inventory.counters(sale)
    assert (c.available, c.held, c.sold) == (4, 0, 1)
    await assert_ok(inventory, sale)


async def test_concurrent_double_release_restocks_once(inventory, uid):
    sale = f"{uid}-rel2"
    await arm_sale(inventory, sale, allocated=5, limit=3)
    r = await inventory.reserve(sale, "alice", 3, "r1")
    results = await asyncio.gather(*(inventory.release(r.hold_id, "alice") for _ in range(20)))
    assert Counter(x.code for x in results) == {ReleaseCode.RELEASED: 1, ReleaseCode.NOT_HELD: 19}
    assert (await inventory.counters(sale)).available == 5
    await assert_ok(inventory, sale)


# -- bad input: nothing is written --------------------------------------------------------------------

BAD_QTYS = ["0", 0, -1, 1.5, "1.5", "1e3", "0x10", " 1", "1 ", 2**63, True, None, "abc", 101, "2"]


@pytest.fixture
async def busy_sale(inventory, uid) -> str:
    """A sale with some state in every key (holds, a confirmed order, an idempotency entry)."""
    sale = f"{uid}-busy"
    await arm_sale(inventory, sale, allocated=20, limit=5)
    r = await inventory.reserve(sale, "alice", 2, "r-a")
    await inventory.reserve(sale, "bob", 1, "r-b")
    assert (await inventory.confirm(r.hold_id, "pay-a", "alice")).code is ConfirmCode.CONFIRMED
    return sale


@pytest.mark.parametrize("qty", BAD_QTYS, ids=repr)
async def test_bad_qty_through_wrapper_is_invalid(inventory, busy_sale, qty):
    before = await snapshot(inventory.redis, busy_sale)
    res = await inventory.reserve(busy_sale, "carol", qty, "r-bad")
    assert res.code is ReserveCode.INVALID and res.hold_id is None
    batch = await inventory.reserve_many(busy_sale, [ReserveRequest("carol", qty, f"r-bad{i}") for i in range(3)])
    assert {r.code for r in batch} == {ReserveCode.INVALID}
    assert await snapshot(inventory.redis, busy_sale) == before


RAW_BAD_QTYS = ["0", "-1", "1.5", "1e3", "0x10", " 1", "1 ", "\t1", "1\n", "+1", "01", "", "abc",
                str(2**63), "9" * 15, "9" * 40, "101", "inf", "nan", "1e1", "0.5e1", "1,0", "１"]


@pytest.mark.parametrize("qs", RAW_BAD_QTYS, ids=repr)
async def test_bad_qty_through_raw_script_is_invalid(inventory, busy_sale, qs):
    """Lua's own validation: the wrapper is bypassed, ARGV carries the string as sent."""
    k = K.sale_keys(busy_sale)
    before = await snapshot(inventory.redis, busy_sale)
    out = await inventory._scripts["reserve"](keys=k.for_reserve, args=[100, "", f"{busy_sale}.abcd", "r-raw", "carol", qs])
    assert [x[0] for x in out] == ["INVALID"]
    assert await snapshot(inventory.redis, busy_sale) == before


async def test_raw_script_good_qty_control(inventory, busy_sale):
    """Control for the raw-script cases above: the same call with a good qty does reserve."""
    k = K.sale_keys(busy_sale)
    out = await inventory._scripts["reserve"](keys=k.for_reserve, args=[100, "", f"{busy_sale}.abcd", "r-raw", "carol", "3"])
    assert out[0][0] == "RESERVED" and out[0][1] == f"{busy_sale}.abcd"
    await assert_ok(inventory, busy_sale)


BAD_IDS = ["", "x" * 1024, "x" * 129, "a b", "a\nb", "ab\n", " ab", "a\tb", "a\x00b", "ä", "a{b}", "a/b"]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
async def test_bad_request_and_user_ids_are_invalid(inventory, busy_sale, bad):
    before = await snapshot(inventory.redis, busy_sale)
    assert (await inventory.reserve(busy_sale, "carol", 1, bad)).code is ReserveCode.INVALID
    assert (await inventory.reserve(busy_sale, bad, 1, "r-ok")).code is ReserveCode.INVALID
    k = K.sale_keys(busy_sale)
    out = await inventory._scripts["reserve"](keys=k.for_reserve, args=[100, "", bad, "r-ok", "carol", "1"])
    assert out[0][0] == "INVALID"  # a malformed hold id is refused by the script too
    assert await snapshot(inventory.redis, busy_sale) == before


async def test_batch_mixes_invalid_and_valid_requests(inventory, busy_sale):
    reqs = [ReserveRequest("carol", 1, "r1"), ReserveRequest("carol", "0x10", "r2"),
            ReserveRequest("", 1, "r3"), ReserveRequest("dave", 2, "r4")]
    codes = [r.code for r in await inventory.reserve_many(busy_sale, reqs)]
    assert codes == [ReserveCode.RESERVED, ReserveCode.INVALID, ReserveCode.INVALID, ReserveCode.RESERVED]
    # idempotency fields are "<user>|<rid>" (reserve.lua): the valid requests wrote theirs, the invalid ones none
    idem = await inventory.redis.hgetall(K.sale_keys(busy_sale).idem)
    assert "carol|r1" in idem and "dave|r4" in idem
    assert "carol|r2" not in idem and "|r3" not in idem
    assert not [f for f in idem if f.endswith(("|r2", "|r3"))], idem
    await assert_ok(inventory, busy_sale)


@pytest.mark.parametrize("bad", [None, 12, 1.0])
async def test_non_string_ids_are_invalid_not_an_exception(inventory, busy_sale, bad):
    """The wrapper maps bad input to INVALID (as it does for bad qty and sale ids); it never raises."""
    before = await snapshot(inventory.redis, busy_sale)
    assert (await inventory.reserve(busy_sale, bad, 1, "r-nonstr")).code is ReserveCode.INVALID
    assert (await inventory.reserve(busy_sale, "carol", 1, bad)).code is ReserveCode.INVALID
    hold = f"{busy_sale}.0123456789abcdef"
    assert (await inventory.confirm(hold, bad, "carol")).code is ConfirmCode.INVALID
    assert (await inventory.confirm(hold, "pay", bad)).code is ConfirmCode.INVALID
    assert (await inventory.release(hold, bad)).code is ReleaseCode.INVALID
    assert await snapshot(inventory.redis, busy_sale) == before


MALFORMED_HOLDS = ["", "nodot", ".abc", "sale.", "a b.c", "s.a b", "s.a\nb", "x" * 200, "s!x.abc", None, 7]


@pytest.mark.parametrize("hold_id", MALFORMED_HOLDS, ids=repr)
async def test_malformed_hold_ids_are_invalid(inventory, busy_sale, hold_id):
    before = await snapshot(inventory.redis, busy_sale)
    assert (await inventory.confirm(hold_id, "pay-x", "alice")).code is ConfirmCode.INVALID
    assert (await inventory.release(hold_id, "alice")).code is ReleaseCode.INVALID
    assert await snapshot(inventory.redis, busy_sale) == before


@pytest.mark.parametrize("hold_id", ["", "a b", "a\nb", "x" * 1024, "ä"], ids=repr)
async def test_malformed_hold_ids_raw_scripts(inventory, busy_sale, hold_id):
    k = K.sale_keys(busy_sale)
    before = await snapshot(inventory.redis, busy_sale)
    assert (await inventory._scripts["confirm"](keys=k.for_confirm, args=[hold_id, "pay", "alice"]))[0] == "INVALID"
    assert (await inventory._scripts["release"](keys=k.for_release, args=[hold_id, "alice"]))[0] == "INVALID"
    good = f"{busy_sale}.0123"
    for ref in ["", "a b", "p\n"]:
        assert (await inventory._scripts["confirm"](keys=k.for_confirm, args=[good, ref, "alice"]))[0] == "INVALID"
    assert (await inventory._scripts["release"](keys=k.for_release, args=[good, "a b"]))[0] == "INVALID"
    assert await snapshot(inventory.redis, busy_sale) == before


async def test_unknown_sale_and_hold(inventory, busy_sale, uid):
    ghost = f"{uid}-ghost"
    res = await inventory.reserve(ghost, "alice", 1, "r1")
    assert res.code is ReserveCode.NOT_FOUND
    batch = await inventory.reserve_many(ghost, [ReserveRequest("a", 1, "r2"), ReserveRequest("b", 1, "r3")])
    assert {r.code for r in batch} == {ReserveCode.NOT_FOUND}
    assert (await inventory.confirm(f"{ghost}.abcdef", "pay", "alice")).code is ConfirmCode.NOT_FOUND
    assert (await inventory.release(f"{ghost}.abcdef", "alice")).code is ReleaseCode.NOT_FOUND
    assert await inventory.reap(ghost) == (0, 0, 0, 0)
    assert await inventory.counters(ghost) is None
    assert not (await inventory.check_invariant(ghost)).ok
    assert await key_count(inventory.redis, ghost) == 0
    assert not await inventory.redis.sismember(K.SALES_REGISTRY, ghost)

    # unknown hold of an existing sale
    before = await snapshot(inventory.redis, busy_sale)
    assert (await inventory.confirm(f"{busy_sale}.ffff", "pay", "alice")).code is ConfirmCode.NOT_FOUND
    assert (await inventory.release(f"{busy_sale}.ffff", "alice")).code is ReleaseCode.NOT_FOUND
    assert await snapshot(inventory.redis, busy_sale) == before


@pytest.mark.parametrize("sale_id", ["", "a b", "a.b", "a{b}", "x" * 65, "ab\n", None, 5])
async def test_malformed_sale_id_is_invalid(inventory, sale_id):
    res = await inventory.reserve(sale_id, "alice", 1, "r1")
    assert res.code is ReserveCode.INVALID


async def test_wrong_type_sale_key(inventory, uid):
    sale = f"{uid}-wrong"
    k = K.sale_keys(sale)
    await inventory.redis.set(k.sale, "not a hash")
    before = await snapshot(inventory.redis, sale)

    res = await inventory.reserve(sale, "alice", 1, "r1")
    assert res.code in (ReserveCode.NOT_FOUND, ReserveCode.INVALID)
    batch = await inventory.reserve_many(sale, [ReserveRequest("a", 1, "r2")] * 3)
    assert {r.code for r in batch} <= {ReserveCode.NOT_FOUND, ReserveCode.INVALID}
    hold = f"{sale}.abcdef"
    assert (await inventory.confirm(hold, "pay", "alice")).code in (ConfirmCode.NOT_FOUND, ConfirmCode.INVALID)
    assert (await inventory.release(hold, "alice")).code in (ReleaseCode.NOT_FOUND, ReleaseCode.INVALID)
    assert await inventory.reap(sale) == (0, 0, 0, 0)
    assert await inventory.counters(sale) is None
    assert not (await inventory.check_invariant(sale)).ok

    now = await inventory.now_ms()
    spec = SaleSpec(sale_id=sale, room_id="room-1", sku="sku-1", unit_price=1, currency="EUR", allocated=5,
                    per_user_limit=1, starts_at_ms=now, ends_at_ms=now + 60_000, hold_ttl_ms=1000)
    assert (await inventory.arm(spec)).code is ArmCode.INVALID
    assert await snapshot(inventory.redis, sale) == before
    assert await inventory.redis.get(k.sale) == "not a hash"


# -- arm -------------------------------------------------------------------------------------------

async def test_arm_is_idempotent_and_conflicts_change_nothing(inventory, uid):
    sale = f"{uid}-arm"
    spec = await arm_sale(inventory, sale, allocated=10, limit=2)
    assert await inventory.redis.sismember(K.SALES_REGISTRY, sale)
    assert await inventory.redis.sismember(K.OUTBOX_REGISTRY, K.sale_keys(sale).outbox)
    assert (await inventory.reserve(sale, "alice", 2, "r1")).ok

    again = await inventory.arm(spec)
    assert (again.code, again.available, again.held, again.sold) == (ArmCode.EXISTS, 8, 2, 0)
    before = await snapshot(inventory.redis, sale)
    for change in [dict(allocated=11), dict(per_user_limit=3), dict(unit_price=1), dict(currency="USD"),
                   dict(room_id="room-2"), dict(sku="sku-2"), dict(hold_ttl_ms=1),
                   dict(ends_at_ms=spec.ends_at_ms + 1), dict(starts_at_ms=spec.starts_at_ms + 1)]:
        fields = {f: getattr(spec, f) for f in SaleSpec.__dataclass_fields__} | change
        res = await inventory.arm(SaleSpec(**fields))
        assert (res.code, res.available, res.held, res.sold) == (ArmCode.CONFLICT, 8, 2, 0), change
        assert not res.ok
    assert await snapshot(inventory.redis, sale) == before
    await assert_ok(inventory, sale)


async def test_arm_zero_units_is_sold_out(inventory, uid):
    sale = f"{uid}-zero"
    await arm_sale(inventory, sale, allocated=0)
    assert (await inventory.reserve(sale, "alice", 1, "r1")).code is ReserveCode.SOLD_OUT
    await assert_ok(inventory, sale)


def _spec_fields(**change: Any) -> dict[str, Any]:
    base = dict(sale_id="s1", room_id="room-1", sku="sku-1", unit_price=100, currency="EUR", allocated=10,
                per_user_limit=1, starts_at_ms=1_000, ends_at_ms=2_000, hold_ttl_ms=500)
    return base | change


BAD_SPECS = [
    dict(sale_id=""), dict(sale_id="a.b"), dict(sale_id="a b"), dict(sale_id="x" * 65), dict(sale_id="s\n"),
    dict(sale_id=None), dict(room_id="r:1"), dict(room_id="r\n"), dict(sku=""), dict(sku="s k"), dict(sku="s\n"),
    dict(unit_price=-1), dict(unit_price=1.5), dict(unit_price="100"), dict(unit_price=True), dict(unit_price=10**13),
    dict(currency="eur"), dict(currency="EURO"), dict(currency="EU"), dict(currency="EUR\n"), dict(currency=None),
    dict(allocated=-1), dict(allocated=10**9 + 1), dict(allocated=True), dict(allocated=2.0),
    dict(per_user_limit=0), dict(per_user_limit=False), dict(starts_at_ms=-1), dict(starts_at_ms=10**14 + 1),
    dict(ends_at_ms=1_000), dict(ends_at_ms=999), dict(hold_ttl_ms=0), dict(hold_ttl_ms=10**10 + 1),
    dict(hold_ttl_ms="500"),
]


@pytest.mark.parametrize("change", BAD_SPECS, ids=repr)
def test_salespec_rejects_bad_fields(change):
    with pytest.raises(InvalidInput):
        SaleSpec(**_spec_fields(**change))


def test_salespec_accepts_good_fields():
    SaleSpec(**_spec_fields())
    SaleSpec(**_spec_fields(allocated=0, unit_price=0, starts_at_ms=0, sale_id="A-b_9", sku="a.b:c@d-e"))


GOOD_ARM_ARGV = ["S", "room-1", "sku-1", "100", "EUR", "10", "1", "1000", "2000", "500"]
BAD_ARM_ARGV = [
    (0, ""), (0, "a b"), (1, ""), (1, "r\n"), (2, "x" * 129), (3, "-1"), (3, "1.5"), (3, "1e3"), (3, "0x10"),
    (3, " 1"), (3, "01"), (3, str(10**12 + 1)), (4, "eur"), (4, "EURO"), (4, ""), (5, "-1"), (5, "1e3"),
    (5, str(10**9 + 1)), (5, "abc"), (6, "0"), (6, "1.0"), (7, "-5"), (7, "1e3"), (8, "1000"), (8, "999"),
    (8, "0"), (9, "0"), (9, "0x10"), (9, str(10**10 + 1)), (9, ""),
]


@pytest.mark.parametrize("pos,value", BAD_ARM_ARGV, ids=repr)
async def test_raw_arm_with_bad_argv_is_invalid(inventory, uid, pos, value):
    sale = f"{uid}-rawarm"
    argv = list(GOOD_ARM_ARGV)
    argv[0] = sale
    argv[pos] = value
    out = await inventory._scripts["arm"](keys=[K.sale_keys(sale).sale], args=argv)
    assert out[0] == "INVALID"
    assert await key_count(inventory.redis, sale) == 0


async def test_raw_arm_with_missing_argv_is_invalid(inventory, uid):
    sale = f"{uid}-rawarm2"
    for n in range(10):
        out = await inventory._scripts["arm"](keys=[K.sale_keys(sale).sale], args=([sale] + GOOD_ARM_ARGV[1:])[:n])
        assert out[0] == "INVALID", n
    assert await key_count(inventory.redis, sale) == 0
    out = await inventory._scripts["arm"](keys=[K.sale_keys(sale).sale], args=[sale] + GOOD_ARM_ARGV[1:])
    assert out[0] == "ARMED"  # control


# -- script cache loss --------------------------------------------------------------------------------

async def test_scripts_survive_script_flush(inventory, redis, redis_url, uid):
    """SCRIPT FLUSH only drops the cache; redis-py's Script objects reload on NOSCRIPT. Harmless to
    other clients of a shared server for the same reason, so it runs there too."""
    sale = f"{uid}-flush"
    await redis.script_flush()
    spec = await arm_sale(inventory, sale, allocated=200, limit=5, ttl_ms=600_000)
    await redis.script_flush()
    r = await inventory.reserve(sale, "alice", 1, "r1")
    assert r.ok
    await redis.script_flush()
    assert (await inventory.confirm(r.hold_id, "pay", "alice")).code is ConfirmCode.CONFIRMED
    r2 = await inventory.reserve(sale, "bob", 1, "r2")
    await redis.script_flush()
    assert (await inventory.release(r2.hold_id, "bob")).code is ReleaseCode.RELEASED
    await redis.script_flush()
    assert (await inventory.reap(sale))[0] == 0
    await redis.script_flush()
    await assert_ok(inventory, sale)
    await redis.script_flush()
    assert (await inventory.arm(spec)).code is ArmCode.EXISTS

    # a flush in the middle of a concurrent burst: nobody sees an error, nothing is oversold.
    # (a blocking pool, or the cluster client's in-flight bound: redis-py's default pool raises "Too many
    # connections" past 100 in flight)
    client = redis_for(redis_url)
    try:
        inv = Inventory(client, max_qty=100)  # fresh Script objects: their first call also hits NOSCRIPT

        async def flush_midway() -> None:
            await asyncio.sleep(0)
            await redis.script_flush()

        results = await asyncio.gather(
            *(inv.reserve(sale, f"u{i}", 1, f"rb{i}") for i in range(150)),
            flush_midway(),
            *(inv.reserve(sale, f"v{i}", 1, f"rc{i}") for i in range(150)),
        )
    finally:
        await client.aclose()
    codes = Counter(x.code for x in results if x is not None)
    assert codes == {ReserveCode.RESERVED: 199, ReserveCode.SOLD_OUT: 101}
    await assert_ok(inventory, sale)


# -- static checks: one hash slot per call, documented and key-safe scripts ---------------------------

def _tag(key: str) -> str:
    start = key.index("{")
    return key[start + 1:key.index("}", start)]


@pytest.mark.parametrize("sale_id", ["s", "S-1_x", "0" * 64, "a-b-c_d", "t123"])
def test_sale_keys_share_one_hash_slot(sale_id):
    k = K.sale_keys(sale_id)
    for name in ("for_reserve", "for_confirm", "for_release", "all"):
        keys = getattr(k, name)
        assert len(set(keys)) == len(keys), name
        assert {_tag(x) for x in keys} == {f"sale:{sale_id}"}, name
        assert {key_slot(x.encode()) for x in keys} == {key_slot(f"sale:{sale_id}".encode())}, name
    assert set(k.for_reserve) | set(k.for_confirm) | set(k.for_release) <= set(k.all)


def _header(name: str) -> str:
    lines = []
    for line in (LUA_DIR / f"{name}.lua").read_text().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


async def test_every_script_call_site_passes_keys_of_one_slot(inventory, uid):
    """Record the KEYS of every script call the wrappers make; each call's keys share one slot and
    match the KEYS the script's header documents."""
    calls: list[tuple[str, list[str]]] = []

    def recording(name, script):
        async def call(keys=(), args=(), client=None):
            calls.append((name, list(keys)))
            return await script(keys=keys, args=args, client=client)
        return call

    inventory._scripts = {n: recording(n, s) for n, s in inventory._scripts.items()}
    sale = f"{uid}-slots"
    await arm_sale(inventory, sale, allocated=5, limit=5, ttl_ms=600_000)
    r = await inventory.reserve(sale, "alice", 1, "r1")
    await inventory.reserve_many(sale, [ReserveRequest("bob", 1, "r2")])
    await inventory.confirm(r.hold_id, "pay", "alice")
    await inventory.release(r.hold_id, "alice")
    await inventory.reap(sale)
    await inventory.check_invariant(sale)
    if hasattr(inventory, "close"):
        await inventory.close(sale)
    if hasattr(inventory, "retire"):
        await inventory.retire(sale, 1000, expire=False)  # check mode: the sale is open, nothing changes
    if hasattr(inventory, "rebuild"):
        assert (await inventory.rebuild(sale, ["bad"]))[0] == "INVALID"  # bad arguments: nothing written
    # a move of stock between hot-SKU buckets (inventory/bucket_stock.py), here out of the sale and back in
    assert (await inventory.buckets.lend(sale, "t1", sale, 1))[:2] == ("LENT", 1)
    assert (await inventory.buckets.take(sale, "t1", 1, sale))[0] == "TAKEN"
    # a stock pool and a sale drawn from it: every key in the pool's slot
    inventory.pools._scripts = inventory._scripts
    pool = f"{uid}pl"
    now = await inventory.now_ms()
    await inventory.pools.open(PoolRecord(pool, f"SKU-{uid}", "m1", "t", 100, "EUR", 2, 60_000, now), 10)
    await inventory.pools.stock(pool, f"restock:{pool}:r1", "restock", 2, "truck")
    spec = SaleSpec(sale_id=f"{pool}--s1", room_id="room-1", sku=f"SKU-{uid}", unit_price=100, currency="EUR",
                    allocated=3, per_user_limit=1, starts_at_ms=now, ends_at_ms=now + 60_000, hold_ttl_ms=60_000)
    assert (await inventory.pools.allocate(pool, spec))[0] == "ARMED"
    assert (await inventory.pools.topup(pool, spec.sale_id, "topup:x:1", 1)).code == "TOPPED_UP"
    assert (await inventory.pools.give_back(spec.sale_id))[0] == "OPEN"
    # a sale of two variants, each from its pool: the product's family slot
    for v in ("a", "b"):
        await inventory.pools.open(PoolRecord(f"{pool}__{v}", f"SKU-{uid}-{v}", "m1", "t", 100, "EUR", 2, 60_000,
                                              now), 5)
    group = [(f"{pool}__{v}", SaleSpec(sale_id=f"{pool}__{v}--g-1", room_id="room-1", sku=f"SKU-{uid}-{v}",
                                       unit_price=100, currency="EUR", allocated=2, per_user_limit=1,
                                       starts_at_ms=now, ends_at_ms=now + 60_000, hold_ttl_ms=60_000))
             for v in ("a", "b")]
    assert (await inventory.pools.allocate_group(group))[0] == "ARMED"
    snap = await inventory.pools.snapshot(pool, [spec.sale_id])
    assert snap.counters is not None and snap.sales[spec.sale_id] is not None

    assert {n for n, _ in calls} == set(SCRIPT_NAMES)
    for name, keys in calls:
        assert keys, name
        assert len({key_slot(k.encode()) for k in keys}) == 1, (name, keys)
        tag = f"pool:{pool}" if name.startswith("pool_") else f"sale:{sale}"
        assert {_tag(k) for k in keys} == {tag}, (name, keys)
        if "KEYS[4i]" in _header(name):  # a repeating block of 4 keys per item (pool_allocate_group.lua)
            assert len(keys) % 4 == 0, (name, keys)
            continue
        documented = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", _header(name))}
        # a key documented as "(a pool-backed sale only)" is passed for those sales alone
        optional = {int(n) for n in re.findall(r"KEYS\[(\d+)\] \(a pool-backed sale only\)", _header(name))}
        assert documented - optional <= set(range(1, len(keys) + 1)) <= documented, (name, documented, keys)


def _lua_files() -> list[Path]:
    return sorted(p for p in LUA_DIR.glob("*.lua") if p.name != "_lib.lua")


def test_lua_scripts_exist_for_every_name():
    assert {p.stem for p in _lua_files()} == set(SCRIPT_NAMES)


@pytest.mark.parametrize("path", _lua_files(), ids=lambda p: p.name)
def test_lua_header_documents_keys_and_argv(path):
    text = path.read_text()
    assert text.startswith(f"-- {path.name}:"), "header must open with '-- <file>: <purpose>'"
    header = _header(path.stem)
    body = text[len(header):]
    assert "KEYS[1]" in header, "header must document KEYS"
    assert "ARGV" in header, "header must document ARGV (write 'ARGV none' when there are none)"
    assert "Returns" in header
    used_keys = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", body)}
    documented_keys = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", header)}
    assert used_keys <= documented_keys, f"undocumented KEYS {used_keys - documented_keys}"
    used_argv = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", body)}
    documented_argv = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", header)}
    assert used_argv <= documented_argv, f"undocumented ARGV {used_argv - documented_argv}"


CALL_RE = re.compile(r"redis\.p?call\(\s*'(\w+)'\s*(?:,\s*([^,)]+))?")
NO_KEY_COMMANDS = {"TIME"}
# commands whose first argument is a subcommand: the key is the argument after it (XINFO GROUPS key)
SUBCOMMAND_RE = re.compile(r"redis\.p?call\(\s*'(XINFO|XGROUP)'\s*,\s*'\w+'\s*,\s*([^,)]+)")


@pytest.mark.parametrize("path", _lua_files(), ids=lambda p: p.name)
def test_lua_never_builds_key_names(path):
    """Every redis.call's key argument is a local bound straight from KEYS (or KEYS[n] itself)."""
    text = re.sub(r"--[^\n]*", "", path.read_text())
    key_vars: set[str] = set()
    for names, values in re.findall(r"local\s+([\w\s,]+?)\s*=\s*([^\n]+)", text):
        names_l = [n.strip() for n in names.split(",")]
        values_l = [v.strip() for v in values.split(",")]
        for n, v in zip(names_l, values_l):
            if re.fullmatch(r"KEYS\[\w+\]", v):
                key_vars.add(n)
    for n in key_vars:  # never reassigned
        assert not re.search(rf"(?<!local )(?<![\w.]){n}\s*=[^=]", re.sub(r"local\s+[\w\s,]+=", "", text)), n
    # a script over a repeating block of keys (pool_allocate_group.lua) keeps each item's keys in table
    # fields set straight from KEYS[<index expression>] in one constructor: <item>.<field> is a KEYS value
    for field in re.findall(r"[{,]\s*(\w+)\s*=\s*KEYS\[[\w\s*+-]+\]", text):
        key_vars |= {f"{item}.{field}" for item in re.findall(r"local\s+(\w+)\s*=\s*v\[", text)}
    calls = CALL_RE.findall(text)
    assert calls, "no redis.call found"
    for cmd, key in SUBCOMMAND_RE.findall(text):
        assert key.strip() in key_vars or re.fullmatch(r"KEYS\[\w+\]", key.strip()), f"{cmd} {key}: not a KEYS value"
    for cmd, first in calls:
        if cmd.upper() in NO_KEY_COMMANDS:
            continue
        first = first.strip()
        if cmd.upper() in ("XINFO", "XGROUP") and first.startswith("'"):
            continue  # checked above: the key follows the subcommand
        assert first in key_vars or re.fullmatch(r"KEYS\[\w+\]", first), f"redis.call('{cmd}', {first}): not a KEYS value"
    assert ".." not in text or not re.search(r"\.\.\s*'[^']*:", text), "string concatenation building a key name"
    # the helper that takes a key is only ever given a KEYS value
    for arg in re.findall(r"sale_exists\(\s*([^)]+)\)", text):
        assert arg.strip() in key_vars or re.fullmatch(r"KEYS\[\w+\]", arg.strip()), arg


def test_lib_helpers_touch_only_their_key_parameter():
    text = re.sub(r"--[^\n]*", "", (LUA_DIR / "_lib.lua").read_text())
    for cmd, first in CALL_RE.findall(text):
        if cmd.upper() in NO_KEY_COMMANDS:
            continue
        assert cmd.upper() == "TYPE" and first.strip() == "key", (cmd, first)
    assert "KEYS" not in text and "ARGV" not in text


async def test_every_connection_packs_with_hiredis(redis):
    """inventory/redis_pack.py on a live client: the single server's pool, or every node the cluster client
    found (its slot map loaded by the first command), packs in C."""
    from inventory.redis_link import is_cluster
    from inventory.redis_pack import HiredisPacking

    assert await redis.ping()
    if is_cluster(redis):
        nodes = redis.get_nodes()
        assert len(nodes) >= 3
        assert all(issubclass(n.connection_class, HiredisPacking) for n in nodes)
    else:
        assert issubclass(redis.connection_pool.connection_class, HiredisPacking)

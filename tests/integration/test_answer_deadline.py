"""The answer deadline (LIVESALE_ANSWER_DEADLINE_MS): a buy or a pay that the stock service cannot decide
in time is answered with the retryable UNAVAILABLE, goes on in the background, and a retry with the same
request id gets its outcome -- one hold, one order, never two.

Redis is made slow for real: ``CLIENT PAUSE <ms> WRITE`` holds every write command (the stock scripts
included) of every client until ``CLIENT UNPAUSE``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from commerce.batcher import Batcher
from commerce.errors import Unavailable
from livesale_client import aio
from livesale_client.core import RetryPolicy
from conftest import timeout
from gateway_helpers import viewer
from redis_helpers import CLUSTER
from server.config import Settings
from test_gateway import make_room, make_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.timeout(90, method="thread"),
              pytest.mark.skipif(CLUSTER, reason="CLIENT PAUSE holds one node; the single-server path is the same")]

DEADLINE_MS = 300


async def _paused(redis: Redis, ms: int = 20_000) -> None:
    await redis.execute_command("CLIENT", "PAUSE", ms, "WRITE")


async def test_buy_and_pay_answered_at_the_deadline_and_decided_once(
        make_server: Callable[..., Awaitable[Any]], settings: Settings, uid: str, redis: Redis) -> None:
    room = await make_room(make_server, settings, uid, answer_deadline_ms=DEADLINE_MS)
    try:
        sale = await room.api.ok("POST", f"/api/rooms/{room.id}/sales", room.host,
                                 {"product_id": "p0", "units": 5, "per_user_limit": 1}, 201)
        sid = sale["sale_id"]
        buyer, _user = await room.viewer("Ana")

        await _paused(redis)
        try:
            started = time.monotonic()
            first = await buyer.request({"type": "buy", "rid": "b1", "sale": sid, "qty": 1}, timeout(10))
            answered_in = time.monotonic() - started
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")
        assert first["type"] == "error" and first["code"] == "UNAVAILABLE", first
        assert "same request id" in first["message"]
        assert answered_in < 5, answered_in  # answered while Redis was still paused (it was for 20 s)
        # the call went on once Redis answered: the retry with the same rid gets its hold; one unit held
        again = await buyer.request({"type": "buy", "rid": "b1", "sale": sid, "qty": 1}, timeout(10))
        assert again["type"] == "buy_result" and again["code"] == "RESERVED", again
        once_more = await buyer.request({"type": "buy", "rid": "b1", "sale": sid, "qty": 1}, timeout(10))
        assert once_more["hold"] == again["hold"]
        state = await room.api.ok("GET", f"/api/sales/{sid}", status=200)
        assert state["units_left"] == 4, state

        await _paused(redis)
        try:
            paid = await buyer.request({"type": "pay", "rid": "p1", "hold": again["hold"]}, timeout(10))
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")
        assert paid["type"] == "error" and paid["code"] == "UNAVAILABLE", paid
        retried = await buyer.request({"type": "pay", "rid": "p1", "hold": again["hold"]}, timeout(10))
        assert retried["type"] == "pay_result" and retried["code"] == "CONFIRMED", retried
        order = retried["order"]
        twice = await buyer.request({"type": "pay", "rid": "p1", "hold": again["hold"]}, timeout(10))
        assert twice["code"] == "CONFIRMED" and twice["order"] == order  # one order, however many tries
        # the late reply of the first try was dropped: exactly one answer per request sent
        assert len([m for m in buyer.msgs if m.get("rid") == "p1"]) == 3
        assert len([m for m in buyer.msgs if m.get("rid") == "b1"]) == 3
    finally:
        await room.close()


async def test_http_pay_and_release_answered_at_the_deadline_and_decided_once(
        make_server: Callable[..., Awaitable[Any]], settings: Settings, uid: str, redis: Redis) -> None:
    """The same deadline over HTTP (commerce/deadline.py): POST /api/holds/{hold}/pay and DELETE /api/holds/{hold}
    answer 503 UNAVAILABLE while Redis holds the write, the call goes on, and the retry gets its outcome:
    one order, the hold paid once; a release likewise."""
    room = await make_room(make_server, settings, uid, answer_deadline_ms=DEADLINE_MS)
    try:
        sale = await room.api.ok("POST", f"/api/rooms/{room.id}/sales", room.host,
                                 {"product_id": "p0", "units": 5, "per_user_limit": 2}, 201)
        sid = sale["sale_id"]
        token, _user = viewer(room.secret, "Bea")
        holds = [(await room.api.ok("POST", f"/api/sales/{sid}/reserve", token,
                                    {"qty": 1, "request_id": f"r{i}"}, 201))["hold_id"] for i in range(2)]

        await _paused(redis)
        try:
            started = time.monotonic()
            st, body = await room.api.call("POST", f"/api/holds/{holds[0]}/pay", token, {})
            answered_in = time.monotonic() - started
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")
        assert st == 503 and body["error"]["code"] == "UNAVAILABLE", (st, body)
        assert "same request id" in body["error"]["message"] and answered_in < 5, (body, answered_in)
        paid = await room.api.ok("POST", f"/api/holds/{holds[0]}/pay", token, {}, status=(200, 201))
        assert paid["status"] == "confirmed" and paid["order_id"], paid
        again = await room.api.ok("POST", f"/api/holds/{holds[0]}/pay", token, {}, status=200)
        assert again["order_id"] == paid["order_id"]  # the paused call and the retries: one order

        await _paused(redis)
        try:
            st, body = await room.api.call("DELETE", f"/api/holds/{holds[1]}", token)
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")
        assert st == 503 and body["error"]["code"] == "UNAVAILABLE", (st, body)
        for _ in range(50):  # the release went on once Redis answered: the retry finds it released
            st, body = await room.api.call("DELETE", f"/api/holds/{holds[1]}", token)
            if st != 503:
                break
            await asyncio.sleep(0.1)
        # released once: by the paused call (the retry finds it NOT_HELD: a release is not replayed) or, when
        # Redis ran the retry first, by the retry (the paused call then found it released)
        assert (st == 409 and body["error"]["code"] == "NOT_HELD") or (st == 200 and body["status"] == "released"), \
            (st, body)
        state = await room.api.ok("GET", f"/api/sales/{sid}", status=200)
        assert state["units_left"] == 4, state  # one unit sold, the released one back
    finally:
        await room.close()


# -- the batcher alone (pure: its `run` is any coroutine) ------------------------------------------------

async def test_a_request_queued_past_its_deadline_is_answered_without_being_run() -> None:
    gate = asyncio.Event()
    seen: list[list[int]] = []

    async def run(_key: str, reqs: Any) -> list[int]:
        seen.append(list(reqs))
        await gate.wait()
        return [r * 10 for r in reqs]

    batcher: Batcher[int, int] = Batcher(run, "test batch", max_batch=2, max_inflight=1, deadline_s=0.2)
    answers: dict[int, Any] = {}
    got = asyncio.Event()

    def done_for(i: int) -> Callable[[Any], None]:
        def done(out: Any) -> None:
            assert i not in answers, "answered twice"
            answers[i] = out
            if len(answers) == 4:
                got.set()
        return done

    for i in range(4):  # two per batch, one batch at a time: 0 and 1 run, 2 and 3 wait behind them
        batcher.submit("k", i, done_for(i))
    await asyncio.wait_for(got.wait(), timeout(5))
    assert all(isinstance(a, Unavailable) for a in answers.values()), answers
    assert seen == [[0, 1]]  # 2 and 3 were never run: their deadline passed in the queue
    gate.set()
    await batcher.aclose()
    assert len(answers) == 4


async def test_in_time_results_are_answered_as_usual() -> None:
    async def run(_key: str, reqs: Any) -> list[int]:
        await asyncio.sleep(0)
        return [r + 1 for r in reqs]

    batcher: Batcher[int, int] = Batcher(run, "test batch", deadline_s=5.0)
    assert await asyncio.gather(*(batcher.call("k", i) for i in range(5))) == [1, 2, 3, 4, 5]
    await batcher.aclose()


async def test_the_python_client_retries_an_unavailable_buy_with_its_rid_until_it_is_decided(
        make_server: Callable[..., Awaitable[Any]], settings: Settings, uid: str, redis: Redis) -> None:
    room = await make_room(make_server, settings, uid, answer_deadline_ms=DEADLINE_MS)
    try:
        sale = await room.api.ok("POST", f"/api/rooms/{room.id}/sales", room.host,
                                 {"product_id": "p0", "units": 3, "per_user_limit": 1}, 201)
        token, _user = viewer(room.secret, "Bo")
        base = str(room.client.make_url("/")).rstrip("/")
        async with aio.connect(base, room=room.id, token=token, request_timeout=timeout(20),
                               retry=RetryPolicy(max_attempts=12)) as live:
            await _paused(redis, 1200)  # ends by itself: the client's retries outlast it
            got = await live.buy(sale["sale_id"], rid="client-b1")
            assert got.code == "RESERVED" and got.hold, got
            again = await live.buy(sale["sale_id"], rid="client-b1")
            assert again.hold == got.hold
        state = await room.api.ok("GET", f"/api/sales/{sale['sale_id']}", status=200)
        assert state["units_left"] == 2, state  # one unit, however many attempts
    finally:
        await room.close()

"""`livesale settle --check`: the settlement workers' heartbeats in Redis (inventory/settle_heartbeat.py), read
by a separate process: no worker -> 1, one running `livesale settle` -> 0, settlement lagging past the bound
-> 1, the worker stopped -> 1 again (a clean stop removes its heartbeat). Real processes on a private
embedded Valkey and a SQLite file."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from conftest import timeout
from inventory import keys as K
from proc_helpers import ServerProc, split_env
from redis_helpers import redis_for
from server.embedded import EmbeddedRedis

pytestmark = pytest.mark.timeout(240, method="thread")

SECRET = "settle-check-secret-" + secrets.token_hex(16)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[str, Redis]]:
    server = EmbeddedRedis(tmp_path / "engine")
    url = await asyncio.to_thread(server.start)
    client = redis_for(url)
    try:
        yield url, client
    finally:
        await client.aclose()
        await asyncio.to_thread(server.stop)


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    return split_env(SECRET, url, f"sqlite:///{tmp_path / 'livesale.db'}", tmp_path / "data", 0,
                     LIVESALE_SETTLE_HEARTBEAT_S="0.2", LIVESALE_SETTLE_CLAIM_IDLE_MS="3600000",
                     LIVESALE_RECONCILE_INTERVAL_S="0", LIVESALE_REFUND_RETRY_S="0")


async def check(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await ServerProc.start(env, ("--check", *args), command="settle")
    rc = await asyncio.wait_for(proc.proc.wait(), timeout(60))
    await proc.stop()
    out = "\n".join(proc.lines)
    assert SECRET not in out
    return rc, out


async def until(probe: Callable[[], Awaitable[bool]], what: str, wait: float = 30.0) -> None:
    """Poll a condition in Redis, bounded (the heartbeat is written every 0.2 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(wait)
    while not await probe():
        assert loop.time() < deadline, f"not within {wait}s: {what}"
        await asyncio.sleep(0.05)  # polling a condition with a deadline


async def test_check_fails_without_a_worker_passes_with_one_and_fails_after_it_stops(
        engine: tuple[str, Redis], tmp_path: Path) -> None:
    url, redis = engine
    env = _env(url, tmp_path)
    rc, out = await check(env)
    assert rc == 1 and "unhealthy: no settlement worker alive" in out, out
    worker = await ServerProc.start(env, command="settle")
    try:
        await worker.wait_lines("livesale settlement worker running")
        consumers: list[str] = []

        async def beating() -> bool:
            nonlocal consumers
            consumers = list(await redis.zrange(K.SETTLE_WORKERS, 0, -1))
            return bool(consumers) and bool(await redis.exists(K.settle_alive_key(consumers[0])))

        await until(beating, "a heartbeat")
        beat = await redis.hgetall(K.settle_alive_key(consumers[0]))
        assert beat["pid"] == str(worker.proc.pid) and beat["consumer"] == consumers[0]
        assert 0 < int(await redis.pttl(K.settle_alive_key(consumers[0]))) <= 600  # 3 x 0.2 s
        rc, out = await check(env)
        assert rc == 0 and out.startswith("ok: 1 worker alive") and consumers[0] in out, out
    finally:
        assert await worker.stop() == 0
    assert not await redis.exists(K.settle_alive_key(consumers[0]))  # a clean stop removes it at once
    rc, out = await check(env)
    assert rc == 1 and "no settlement worker alive" in out, out


async def test_check_fails_when_settlement_lags_past_the_bound(engine: tuple[str, Redis], tmp_path: Path) -> None:
    url, redis = engine
    env = _env(url, tmp_path)
    # an order entry two minutes old, delivered to a consumer that died and not yet reclaimable (the claim idle
    # time is an hour here): settlement lags by two minutes
    outbox = K.sale_keys("lagging-" + secrets.token_hex(4)).outbox
    sec, _usec = await redis.time()
    await redis.xadd(outbox, {"v": "1"}, id=f"{int(sec) * 1000 - 120_000}-0")
    await redis.xgroup_create(outbox, K.SETTLE_GROUP, id="0")
    await redis.xreadgroup(K.SETTLE_GROUP, "ghost", {outbox: ">"}, count=10)
    await redis.sadd(K.OUTBOX_REGISTRY, outbox)
    worker = await ServerProc.start(env, command="settle")
    try:
        await worker.wait_lines("livesale settlement worker running")

        async def lagging() -> bool:
            for c in await redis.zrange(K.SETTLE_WORKERS, 0, -1):
                lag = await redis.hget(K.settle_alive_key(c), "lag_ms")
                if lag is not None and int(lag) >= 120_000:
                    return True
            return False

        await until(lagging, "the lag in a heartbeat")
        rc, out = await check(env, "--max-lag-s", "60")
        assert rc == 1 and "unhealthy: settlement lags" in out and "over the 60 s bound" in out, out
        assert "1 pending" in out, out
        rc, out = await check(env, "--max-lag-s", "3600")
        assert rc == 0 and out.startswith("ok:"), out
    finally:
        assert await worker.stop() == 0

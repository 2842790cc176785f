"""The startup check of the engine's settings (inventory/engine_check.py) against real engines: a private
Valkey set to evict, one whose user may not run CONFIG, and the embedded cluster with one primary on
``cluster-require-full-coverage yes``."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from cluster_helpers import TestCluster
from inventory.engine_check import engine_warnings, log_engine_warnings
from inventory.redis_link import connect
from server.embedded import EmbeddedRedis

pytestmark = pytest.mark.timeout(60, method="thread")


async def test_eviction_policy_is_warned_about_and_refused_config_is_not_a_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    home = Path(tempfile.mkdtemp(prefix="ls-ec-"))  # short: the engine's unix socket path
    server = EmbeddedRedis(home)
    server.start()
    r = Redis.from_url(server.url, decode_responses=True)
    try:
        assert await engine_warnings(r) == []  # the embedded default: noeviction
        await r.config_set("maxmemory", "512mb")
        await r.config_set("maxmemory-policy", "allkeys-lru")
        with caplog.at_level(logging.WARNING, logger="inventory.engine_check"):
            found = await log_engine_warnings(r)
        assert [w.code for w in found] == ["EVICTION_POLICY"]
        assert "allkeys-lru" in found[0].message and found[0].node == str(server.socket_path)
        assert "EVICTION_POLICY" in caplog.text and "noeviction" in caplog.text
        await r.config_set("maxmemory-policy", "noeviction")
        assert await engine_warnings(r) == []

        # a user without CONFIG (as on managed engines): nothing read, nothing raised
        await r.config_set("maxmemory-policy", "allkeys-lru")
        await r.acl_setuser("noconfig", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                            commands=["+@all", "-config"])
        limited = Redis(unix_socket_path=str(server.socket_path), username="noconfig", password="pw",
                        decode_responses=True)
        try:
            assert await limited.ping()
            assert await engine_warnings(limited) == []
        finally:
            await limited.aclose()
    finally:
        await r.aclose()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


async def test_a_cluster_primary_requiring_full_coverage_is_warned_about(redis_cluster: TestCluster) -> None:
    rc = connect(redis_cluster.url, cluster=True, decode=True)  # the client the server uses (GatedCluster)
    assert isinstance(rc, RedisCluster)
    await rc.initialize()
    primary = rc.get_primaries()[0]
    before = await rc.config_get("cluster-require-full-coverage", target_nodes=primary)
    try:
        base = {w.node for w in await engine_warnings(rc) if w.code == "FULL_COVERAGE"}
        assert primary.name not in base  # the embedded cluster runs with `no`
        await rc.config_set("cluster-require-full-coverage", "yes", target_nodes=primary)
        found = [w for w in await engine_warnings(rc) if w.code == "FULL_COVERAGE"]
        assert {w.node for w in found} - base == {primary.name}
    finally:
        await rc.config_set("cluster-require-full-coverage", before["cluster-require-full-coverage"],
                            target_nodes=primary)
        await rc.aclose()

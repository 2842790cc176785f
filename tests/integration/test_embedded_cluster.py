"""The embedded Redis/Valkey Cluster (server/embedded_cluster.py): it forms, redis-py's cluster client
reads and writes every shard and carries sharded pub/sub, a killed master's replica takes over and the
same client recovers, nothing is left behind, and `livesale serve --cluster N` runs on one."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from redis import Redis as SyncRedis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster_helpers import TestCluster, killable
from conftest import timeout
from proc_helpers import ServerProc, free_port
from server.embedded_cluster import EmbeddedCluster, parse_cluster_nodes


@pytest.fixture
async def rc(redis_cluster: TestCluster) -> AsyncIterator[RedisCluster]:
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=40)
    client = RedisCluster.from_url(redis_cluster.url, decode_responses=True, retry=retry)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


def _keys_on_every_master(rc: RedisCluster, prefix: str) -> dict[str, str]:
    """One key per master: master name -> key."""
    found: dict[str, str] = {}
    masters = {n.name for n in rc.get_primaries()}
    for i in range(10_000):
        key = f"{prefix}:{i}"
        node = rc.get_node_from_key(key)
        assert node is not None
        found.setdefault(node.name, key)
        if set(found) == masters:
            return found
    raise AssertionError(f"no key for every master: {found}")


def _pid_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_parse_cluster_nodes() -> None:
    text = ("07c3 127.0.0.1:30004@31004,h replica,myself e7d1 0 1426238317239 4 connected\n"
            "e7d1 127.0.0.1:30001@31001 master - 0 1426238316232 1 connected 0-5460 [5461->-67ed]\n"
            "67ed :0@0 master,fail?,noaddr - 1 1426238316232 2 disconnected 7000\n")
    a, b, c = parse_cluster_nodes(text)
    assert (a.node_id, a.port, a.is_master, a.master_id, a.healthy) == ("07c3", 30004, False, "e7d1", True)
    assert (b.port, b.is_master, b.slots, b.master_id) == (30001, True, ((0, 5460),), None)
    assert (c.port, c.healthy, c.slots) == (0, False, ((7000, 7000),))


def test_cluster_forms(redis_cluster: TestCluster) -> None:
    seed = urlsplit(redis_cluster.url)
    host = seed.hostname or "127.0.0.1"
    with SyncRedis(host=host, port=seed.port or 6379, decode_responses=True) as r:
        views = parse_cluster_nodes(str(r.execute_command("CLUSTER", "NODES")))
    masters = [v for v in views if v.is_master]
    replicas = [v for v in views if not v.is_master]
    assert sum(hi - lo + 1 for m in masters for lo, hi in m.slots) == 16384
    for v in views:
        assert v.healthy, v
        with SyncRedis(host=host, port=v.port, decode_responses=True) as r:
            text = str(r.execute_command("CLUSTER", "INFO"))
            info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384, (v.port, info)
    if isinstance(redis_cluster, EmbeddedCluster):
        assert (len(masters), len(replicas)) == (3, 3)
        assert {n.port for n in redis_cluster.nodes} == {v.port for v in views}
        by_id = {v.node_id: v for v in masters}
        assert all(v.master_id in by_id for v in replicas)  # each replica follows a live master


async def test_set_get_on_every_shard(rc: RedisCluster, uid: str) -> None:
    keys = _keys_on_every_master(rc, uid)
    assert len(keys) == 3
    try:
        for name, key in keys.items():
            assert await rc.set(key, name)
        for name, key in keys.items():
            assert await rc.get(key) == name
    finally:
        await rc.delete(*keys.values())


async def test_sharded_pubsub(rc: RedisCluster, uid: str) -> None:
    channels = list(_keys_on_every_master(rc, f"{uid}:ch").values())
    ps = rc.pubsub()
    try:
        for ch in channels:
            await ps.ssubscribe(ch)
        for ch in channels:
            # a subscription reaches its shard's node asynchronously: publish until someone listens
            deadline = time.monotonic() + timeout(5)
            while await rc.spublish(ch, f"hello {ch}") < 1:
                assert time.monotonic() < deadline, f"no subscriber on {ch}"
                await asyncio.sleep(0.02)
        got: set[str] = set()
        deadline = time.monotonic() + timeout(5)
        while len(got) < len(channels) and time.monotonic() < deadline:
            msg = await ps.get_sharded_message(ignore_subscribe_messages=True, timeout=0.5)
            if msg is not None:
                assert msg["data"] == f"hello {msg['channel']}"
                got.add(msg["channel"])
        assert got == set(channels)
    finally:
        await ps.aclose()


async def _until_ok(rc: RedisCluster, key: str, value: str, wait: float) -> int:
    """SET through ``rc`` until it succeeds; returns how many ConnectionErrors reached the caller. (redis-py
    8.1's cluster client retries a command on a dead node without any backoff: its ``retry`` only sets the
    count, so 40 retries are spent in well under a second, before a replica can be promoted.)"""
    errors = 0
    deadline = time.monotonic() + wait
    while True:
        try:
            assert await rc.set(key, value)
            return errors
        except RedisConnectionError:
            errors += 1
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)


async def test_killed_master_fails_over_and_the_client_recovers(redis_cluster: TestCluster, rc: RedisCluster,
                                                                uid: str) -> None:
    cluster = killable(redis_cluster)
    key = f"{uid}:failover"
    assert await rc.set(key, "before")
    victim = cluster.master_for(key)
    t0 = time.monotonic()
    cluster.kill(victim)
    try:
        promoted = await asyncio.to_thread(cluster.wait_failover, victim, timeout(5))
        elapsed = time.monotonic() - t0
        assert elapsed < timeout(5), f"failover took {elapsed:.1f}s"
        assert promoted.role == "master" and promoted is not victim
        assert cluster.master_for(key) is promoted
        # the same client object finds the promoted replica by itself
        await _until_ok(rc, key, "after", timeout(5))
        assert await rc.get(key) == "after"
    finally:  # the session's cluster stays whole for the next tests: the old master rejoins
        await asyncio.to_thread(cluster.restart, victim, timeout(30))
    assert victim.role == "replica" and victim.master_id == promoted.node_id
    assert await rc.get(key) == "after"


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    with EmbeddedCluster(tmp_path, masters=3, replicas=0) as cluster:
        pids = [n.pid for n in cluster.nodes]
        assert len(pids) == 3 and all(not _pid_gone(p) for p in pids)
        assert all((n.dir / "nodes.conf").exists() for n in cluster.nodes)
    assert all(_pid_gone(p) for p in pids)
    assert not (tmp_path / "cluster").exists()


def test_start_stops_a_crashed_runs_nodes(tmp_path: Path) -> None:
    """A run that died without stop() left its nodes and nodes.conf: the next start clears both."""
    crashed = EmbeddedCluster(tmp_path, masters=1, replicas=0)
    crashed.start()
    old = [n.pid for n in crashed.nodes]
    try:
        with EmbeddedCluster(tmp_path, masters=1, replicas=0) as fresh:
            assert all(_pid_gone(p) for p in old)
            assert fresh.nodes[0].node_id != crashed.nodes[0].node_id  # a new cluster, not the old one rejoined
    finally:
        crashed.stop()


@pytest.mark.slow
async def test_serve_on_an_embedded_cluster(tmp_path: Path) -> None:
    """`livesale serve --cluster 3 --replicas 0` without REDIS_URL: its own cluster, removed at exit."""
    port = free_port()
    data = tmp_path / "data"
    server = await ServerProc.start({"LIVESALE_DATA_DIR": str(data), "LIVESALE_HOST": "127.0.0.1"},
                                    args=("--cluster", "3", "--replicas", "0", "--port", str(port)),
                                    unset=("REDIS_URL", "DATABASE_URL", "LIVESALE_SECRET",
                                           "LIVESALE_EMBEDDED_CLUSTER", "LIVESALE_REDIS_CLUSTER"))
    pids: list[int] = []
    try:
        await server.wait_lines("livesale listening on", wait=60)
        pids = [int(p.read_text()) for p in (data / "cluster").glob("*/server.pid")]
        assert len(pids) == 3
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200, await resp.text()
    finally:
        rc = await server.stop()
    assert rc == 0, "\n".join(server.lines[-30:])
    assert all(_pid_gone(p) for p in pids)
    assert not (data / "cluster").exists()
    assert not os.path.exists(data / "valkey" / "valkey.sock")  # not the single embedded server

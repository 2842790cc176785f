"""One Redis server or a Redis/Valkey Cluster: building the client, and the few calls that differ.

Everything else talks to the client through the commands both kinds share. What differs:

- the client class (``redis.asyncio.Redis`` over a blocking pool, or ``RedisCluster``, which routes each
  command to the shard owning its key's hash slot and follows MOVED / failovers with retries);
- reading streams in several slots (one XREADGROUP cannot span slots on a cluster: ``by_slot``);
- a pub/sub subscription: room channels are *sharded* channels (SPUBLISH / SSUBSCRIBE) in both modes, so
  on a cluster a room's events travel only through the shard that owns the room's hash tag; the cluster
  client's pub/sub holds one connection per shard and reads them with ``get_sharded_message``.

The cluster client is typed as ``Redis`` for the rest of the code (``RedisCluster`` offers the same
command methods); this module is where the difference is known.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError

from .redis_pack import packed

__all__ = ["connect", "GatedCluster", "is_cluster", "by_slot", "slot_of", "FAILOVER_RETRIES", "TORN"]

# A cluster command that meets a dead master is retried by redis-py at once, each retry refreshing the slot
# map (redis-py 8.1's async cluster client applies no backoff between them): many retries only multiply
# topology refreshes during a failover, while the promotion takes ~2 s whatever the client does. So a few,
# then the caller gets the ConnectionError, which the gateway answers as the retryable UNAVAILABLE and the
# background loops (settlement, reaper, room reader) meet with their own backoff.
FAILOVER_RETRIES = 3
DOWN_FOR_S = 0.25  # GatedCluster: after a node fails a command, its other commands fail fast this long
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 0.25
SOCKET_TIMEOUT_S = 5.0   # every client's least read timeout (socket_timeout_for)
CONNECT_TIMEOUT_S = 2.0  # a node that does not accept a connection in this long is down


# redis-py 8.1 closes every node's connections when a command meets CLUSTERDOWN (``RedisCluster.aclose``), while
# other commands may be writing on them: those fail with these instead of a ConnectionError. They mean the
# same thing (the topology is changing; try again), so callers see them as one.
TORN = _TORN = (RuntimeError, AttributeError)
# A torn connection fails before the command is written (its writer was closed under it), so trying again is
# safe; redis-py closes a node's free connections on any connection error, and a burst (e.g. every client
# reloading its scripts after SCRIPT FLUSH) can tear a second connection while the first retry connects. A lost
# connection to a live node is tried again as often (redis-py's own retries do the same; the money scripts are
# idempotent per request id).
TORN_RETRIES = 3


def _unreachable(exc: BaseException) -> bool:
    """The node could not be connected to at all (refused, timed out): dead or partitioned, not one broken
    connection. redis-py words every connect failure "Error ... connecting to <host>:<port>"."""
    return "connecting to" in str(exc)


def _torn(exc: BaseException) -> ConnectionError:
    return ConnectionError(f"connection closed under a cluster topology change ({exc})")


class GatedCluster(RedisCluster):
    """A cluster client whose callers wait for a free slot instead of failing.

    redis-py's async cluster client opens up to ``max_connections`` per node and then raises
    ``MaxConnectionsError`` (no blocking pool as for one server): a burst of 5,000 payments would fail
    most of them. Here at most ``inflight`` commands and pipelines are in flight at once, each on one
    connection per node, so a node's pool (sized above it) is never exhausted and the rest queue.
    """

    def __init__(self, *args: Any, inflight: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # commands packed in C (inventory/redis_pack.py): the nodes known now, and those found later
        kw = self.nodes_manager.connection_kwargs
        kw["connection_class"] = packed(kw.get("connection_class") or Connection)
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = cast(type[Connection], packed(node.connection_class))
        self.gate = asyncio.Semaphore(inflight)
        self._down: dict[str, float] = {}  # node name -> refuse its commands until (monotonic s)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.gate:
            if self._down and await self._to_down_node(args):
                raise ConnectionError("the shard owning this key is unreachable (failing over); retry")
            for attempt in range(TORN_RETRIES + 1):
                try:
                    return await super().execute_command(*args, **kwargs)
                except ConnectionError as exc:
                    if _unreachable(exc):  # a dead node: fail fast, the caller retries later
                        self._mark_down(exc)
                        raise
                    if attempt == TORN_RETRIES:
                        raise
                    # a live node's connection lost (redis-py closes a node's free connections on any error,
                    # and a burst of reconnects can lose the ones being set up): once more, shortly
                    await asyncio.sleep(0.01 * (attempt + 1))
                except _TORN as exc:  # not sent: again on a fresh connection, then as a ConnectionError
                    if attempt == TORN_RETRIES:
                        raise _torn(exc) from exc
                    await asyncio.sleep(0.01 * (attempt + 1))
            raise AssertionError("unreachable")

    def is_down(self, name: str) -> bool:
        return self._down.get(name, 0.0) > time.monotonic()

    def mark_down(self, name: str) -> None:
        self._down[name] = time.monotonic() + DOWN_FOR_S

    def _mark_down(self, exc: BaseException) -> None:
        """A node could not be connected to: fail its commands fast for a moment. redis-py reloads the
        slot map before the next command after every such error, and a burst of commands meeting a dead
        master would otherwise reload it thousands of times a second (every command of every shard waits
        on that reload) until the replica is promoted."""
        name = getattr(exc, "last_failed_node_name", None)
        if name:
            self.mark_down(name)

    async def _to_down_node(self, args: tuple[Any, ...]) -> bool:
        now = time.monotonic()
        for name, until in list(self._down.items()):
            if until <= now:
                del self._down[name]
        if not self._down:
            return False
        try:
            slot = await self._determine_slot(*args)
            node = self.nodes_manager.get_node_from_slot(slot)
        except Exception:  # a command without a key (TIME, SCRIPT LOAD, ...): let redis-py route it
            return False
        return node is not None and node.name in self._down

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py, as it should be
        return _GatedPipeline(self, transaction)  # type: ignore[abstract]  # redis-py's ABC attribute is set in __init__


class _GatedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        async with self._gate_of():
            try:
                return await super().execute(raise_on_error, allow_redirections)
            except _TORN as exc:
                raise _torn(exc) from exc

    def _gate_of(self) -> asyncio.Semaphore:
        return cast(GatedCluster, self.cluster_client).gate


def socket_timeout_for(wait_ms: int) -> float:
    """Every client's read timeout: above the longest wait a command may legitimately take (``WAIT``
    holds an answer up to ``wait_ms``; XREADGROUP blocks below 5 s, server/config.py; pub/sub reads pass their
    own), so a reply that never comes (a connection left half-open by a failover, a host gone without a
    reset) ends as a retryable error instead of holding a pool connection or one of ``GatedCluster``'s
    in-flight slots for good."""
    return max(SOCKET_TIMEOUT_S, wait_ms / 1000 + 2.0)


def connect(url: str, *, cluster: bool, decode: bool, pool_size: int = 64, wait_ms: int = 1000) -> Redis:
    """A client for ``url``: a single server (a pool that makes callers wait for a free connection
    rather than fail) or, with ``cluster``, a cluster client seeded from that node (``pool_size``
    commands in flight at once, the rest wait: ``GatedCluster``). Either way reads time out after
    ``socket_timeout_for(wait_ms)`` and a connection is made within ``CONNECT_TIMEOUT_S`` or not at all."""
    if not cluster:
        pool = BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=20,
                                               decode_responses=decode, health_check_interval=30,
                                               socket_timeout=socket_timeout_for(wait_ms),
                                               socket_connect_timeout=CONNECT_TIMEOUT_S)
        pool.connection_class = packed(pool.connection_class)  # commands packed in C (inventory/redis_pack.py)
        return Redis(connection_pool=pool)
    if url.startswith("unix:"):
        raise ValueError("a Redis Cluster needs TCP: REDIS_URL must be redis:// or rediss:// with "
                         "LIVESALE_REDIS_CLUSTER")
    retry = Retry(ExponentialWithJitterBackoff(base=_BACKOFF_BASE_S, cap=_BACKOFF_CAP_S), retries=FAILOVER_RETRIES)
    client = GatedCluster.from_url(url, decode_responses=decode, max_connections=pool_size + 16,
                                   retry=retry, health_check_interval=30, inflight=pool_size,
                                   socket_timeout=socket_timeout_for(wait_ms), socket_connect_timeout=CONNECT_TIMEOUT_S)
    return cast(Redis, client)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def slot_of(key: str | bytes) -> int:
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def by_slot(keys: Iterable[str]) -> dict[int, list[str]]:
    """Keys grouped by hash slot (in first-seen order): one multi-key read per group on a cluster."""
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(slot_of(key), []).append(key)
    return groups

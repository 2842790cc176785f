"""Acknowledged means replicated: a script followed by ``WAIT <replicas> <ms>`` on the same connection.

Redis replicates asynchronously: a hold or a payment its master answered and then lost in a crash,
before any replica had it, is gone after the failover although the buyer was told it exists. With
``LIVESALE_REDIS_WAIT_REPLICAS`` > 0 the money scripts (reserve, confirm) are sent pipelined with
``WAIT`` on one connection, so the answer leaves only once that many replicas have every write the
connection made, the script's included. Fewer replicas within the timeout: ``NotReplicated``, which
callers answer with the retryable ``UNAVAILABLE`` -- the write stays on the master, and a retry with the
same request id gets the same answer (the scripts remember request ids), waited for again.

Single server: a plain pipeline (EVALSHA + WAIT). Cluster: redis-py refuses scripts in a cluster
pipeline and sends WAIT to every node, so the pair goes to the key's master through that node's own
connection pool (``ClusterNode.execute_pipeline``), with the cluster client's MOVED / failover handling
done here: refresh the slot map and try again, as the client does for its own commands.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError, ClusterDownError, ConnectionError, MovedError, NoScriptError, SlotNotCoveredError, TimeoutError,
    TryAgainError,
)

from .redis_link import FAILOVER_RETRIES, is_cluster

__all__ = ["NotReplicated", "run_acked"]

_REROUTE = (MovedError, AskError, ClusterDownError, TryAgainError, ConnectionError, TimeoutError)


class NotReplicated(Exception):
    """The script ran on the master, but fewer replicas than required confirmed it in time."""

    def __init__(self, acked: int, wanted: int) -> None:
        super().__init__(f"{acked} of {wanted} replica(s) confirmed the write in time")
        self.acked = acked
        self.wanted = wanted


async def run_acked(redis: Redis, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any],
                    replicas: int, timeout_ms: int) -> Any:
    """The script's reply, once ``replicas`` replicas confirmed it (``replicas`` 0: no wait at all)."""
    if replicas <= 0:
        return await script(keys=list(keys), args=list(args))
    if is_cluster(redis):
        reply, acked = await _on_cluster(redis, script, keys, args, replicas, timeout_ms)  # type: ignore[arg-type]
    else:
        reply, acked = await _on_server(redis, script, keys, args, replicas, timeout_ms)
    if acked < replicas:
        raise NotReplicated(acked, replicas)
    return reply


async def _on_server(redis: Redis, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any],
                     replicas: int, timeout_ms: int) -> tuple[Any, int]:
    for attempt in (0, 1):
        async with redis.pipeline(transaction=False) as p:
            p.evalsha(script.sha, len(keys), *keys, *args)
            p.execute_command("WAIT", replicas, timeout_ms)
            reply, acked = await p.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError) and attempt == 0:  # a restarted or flushed server: load, again
            await redis.script_load(script.script)
            continue
        if isinstance(reply, Exception):
            raise reply
        return reply, int(acked)
    raise AssertionError("unreachable")


async def _on_cluster(rc: RedisCluster, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any],
                      replicas: int, timeout_ms: int) -> tuple[Any, int]:
    last: Exception | None = None
    for attempt in range(FAILOVER_RETRIES):
        if attempt:
            await asyncio.sleep(min(0.25, 0.05 * 2 ** min(attempt, 4)) * random.uniform(0.5, 1.0))
        try:
            if not rc.nodes_manager.slots_cache:
                await rc.initialize()
            node = rc.get_node_from_key(keys[0])
            if node is None:
                raise SlotNotCoveredError(f"no master for {keys[0]!r}")
        except (SlotNotCoveredError, *_REROUTE) as exc:
            last = exc
            await _refresh(rc)
            continue
        cmds = [PipelineCommand(0, "EVALSHA", script.sha, len(keys), *keys, *args),
                PipelineCommand(1, "WAIT", replicas, timeout_ms)]
        try:
            await node.execute_pipeline(cmds)
        except _REROUTE as exc:  # the node died or moved: find the slot's master again
            last = exc
            await _refresh(rc)
            continue
        reply, acked = cmds[0].result, cmds[1].result
        if isinstance(reply, NoScriptError):  # a promoted replica that never loaded it
            await node.execute_command("SCRIPT", "LOAD", script.script)
            continue
        if isinstance(reply, _REROUTE):
            last = reply
            await _refresh(rc)
            continue
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):
            raise acked
        return reply, int(acked)
    raise last if last is not None else ConnectionError("no master for the slot")


async def _refresh(rc: RedisCluster) -> None:
    try:
        await rc.nodes_manager.initialize()
    except Exception:  # every node unreachable for now: the next attempt tries again
        pass

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
import contextlib
import random
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError, ClusterDownError, ConnectionError, MovedError, NoScriptError, SlotNotCoveredError, TimeoutError,
    TryAgainError,
)

from .redis_link import TORN as _TORN
from .redis_link import GatedCluster, is_cluster

__all__ = ["NotReplicated", "run_acked"]

# A master that has fewer replicas connected than required (its replica was just promoted elsewhere, or is
# resyncing) refuses the money scripts for this long without running them, so a click storm does not queue
# behind WAIT timeouts on that shard while the others serve. A WAIT that merely timed out (replicas
# connected but slow, e.g. a saturated machine) does not pause anything: the next call waits again.
SHORT_PAUSE_S = 0.5
_SHORT: dict[str, float] = {}  # node name ('' = the single server) -> refuse until (monotonic s)
ACKED_ATTEMPTS = 8  # ~1 s of tries over a failover before the caller gets UNAVAILABLE
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
        if _SHORT.get("", 0.0) > time.monotonic():
            raise NotReplicated(0, replicas)
        reply, acked = await _on_server(redis, script, keys, args, replicas, timeout_ms)
        if acked < replicas and _replicas_of(await redis.execute_command("ROLE")) < replicas:
            _SHORT[""] = time.monotonic() + SHORT_PAUSE_S
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
    """The pair on the key's master. A dead or unreachable master fails at once (``ConnectionError``: the
    buyer's UNAVAILABLE, retried by the client with the same request id), as the cluster client's own
    commands do (``GatedCluster``); a moved slot or a master without the script is retried here."""
    last: Exception | None = None
    gated = rc if isinstance(rc, GatedCluster) else None
    gate = gated.gate if gated is not None else contextlib.nullcontext()
    for attempt in range(ACKED_ATTEMPTS):
        if attempt:
            await asyncio.sleep(min(0.25, 0.05 * 2 ** min(attempt, 4)) * random.uniform(0.5, 1.0))
        try:
            await rc.initialize()  # a no-op unless a command found the slot map stale (coalesced under a lock)
            node = rc.get_node_from_key(keys[0])
            if node is None:
                raise SlotNotCoveredError(f"no master for {keys[0]!r}")
        except (SlotNotCoveredError, *_REROUTE, *_TORN) as exc:  # torn: a reload's connection closed under it
            last = exc
            rc._initialize = True  # reload the slot map before the next command
            continue
        if gated is not None and gated.is_down(node.name):
            raise ConnectionError("the shard owning this key is unreachable (failing over); retry")
        if _SHORT.get(node.name, 0.0) > time.monotonic():  # its replicas were missing a moment ago
            raise NotReplicated(0, replicas)
        cmds = [PipelineCommand(0, "EVALSHA", script.sha, len(keys), *keys, *args),
                PipelineCommand(1, "WAIT", replicas, timeout_ms)]
        try:
            async with gate:  # the cluster client's in-flight bound (redis_link.GatedCluster): its pools never run dry
                await node.execute_pipeline(cmds)
        except Exception as exc:  # the node died, or redis-py closed its connections under us (it does on
            rc._initialize = True  # CLUSTERDOWN and on slot-map reloads): the script may have run; a retry
            if "connecting to" in str(exc):  # with the same request id is answered from it (idempotent)
                if gated is not None:  # the master is gone: fail fast, the buyer retries
                    gated.mark_down(node.name)
                raise ConnectionError(f"the shard owning this key failed the request ({exc}); retry") from exc
            last = exc  # one connection broke: try again here
            continue
        reply, acked = cmds[0].result, cmds[1].result
        if isinstance(reply, NoScriptError):  # a promoted replica that never loaded it
            try:
                await node.execute_command("SCRIPT", "LOAD", script.script)
            except (*_REROUTE, *_TORN) as exc:
                last = exc
            continue
        if isinstance(reply, _REROUTE):  # MOVED / ASK / TRYAGAIN / CLUSTERDOWN: the slot map changed
            last = reply
            rc._initialize = True
            continue
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):
            raise acked
        if int(acked) < replicas:  # slow replicas, or none connected? Only the latter pauses the master
            with contextlib.suppress(Exception):
                if _replicas_of(await node.execute_command("ROLE")) < replicas:
                    _SHORT[node.name] = time.monotonic() + SHORT_PAUSE_S
        return reply, int(acked)
    if last is None or isinstance(last, _TORN):  # redis-py closed the connection under us every time
        raise ConnectionError(f"the shard owning this key kept closing its connections ({last}); retry") from last
    raise last


def _replicas_of(role: Any) -> int:
    """Connected replicas in a ``ROLE`` reply of a master (``[master, offset, [[ip, port, offset], ...]]``)."""
    try:
        return len(role[2]) if role and str(role[0], "utf-8") == "master" else 0
    except TypeError:  # a str reply (decoded client)
        return len(role[2]) if role and role[0] == "master" else 0

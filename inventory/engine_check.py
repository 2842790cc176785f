"""The engine settings livesale's guarantees rest on: read once at startup, each one that undermines them logged.

- ``maxmemory-policy``: with a memory limit (``maxmemory`` > 0), any policy but ``noeviction`` lets the engine
  delete keys to make room: a hold, a sale's counters or an outbox entry could vanish (units sold twice or
  lost, an acknowledged order never settled). With ``noeviction`` a full engine refuses writes instead and
  nothing already written is lost.
- ``cluster-require-full-coverage`` (clusters, every primary): with ``yes`` (the engine's default), while one
  shard is down and not yet failed over every node refuses every command, so one shard's failover stalls
  every sale (docs/SCALING.md).

The verdicts are pure (``advice``); ``engine_warnings`` reads the settings with ``CONFIG GET``. Managed engines
often refuse ``CONFIG``: a setting that cannot be read is skipped (logged at debug), never a failure.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .redis_link import is_cluster

__all__ = ["EngineWarning", "advice", "engine_warnings", "log_engine_warnings", "SETTINGS"]

log = logging.getLogger(__name__)

SETTINGS = ("maxmemory", "maxmemory-policy", "cluster-require-full-coverage")


class EngineWarning(NamedTuple):
    code: str     # EVICTION_POLICY | FULL_COVERAGE
    node: str     # host:port of the engine (a cluster's primary)
    message: str


def advice(node: str, conf: dict[str, str], cluster: bool) -> list[EngineWarning]:
    """What in one engine's settings (``CONFIG GET`` answers; a missing key was not readable) undermines
    livesale's guarantees."""
    out: list[EngineWarning] = []
    policy = conf.get("maxmemory-policy", "").lower()
    limit = conf.get("maxmemory", "")
    if policy and policy != "noeviction" and limit not in ("", "0"):
        out.append(EngineWarning(
            "EVICTION_POLICY", node,
            f"maxmemory-policy is {policy} with maxmemory {limit}: when full, the engine deletes keys (holds, "
            "stock counters, unsettled orders) to make room; set maxmemory-policy noeviction"))
    if cluster and conf.get("cluster-require-full-coverage", "").lower() == "yes":
        out.append(EngineWarning(
            "FULL_COVERAGE", node,
            "cluster-require-full-coverage is yes: while one shard is down and not yet failed over, every "
            "node refuses every command, so every sale stalls; set it to no on every node (docs/SCALING.md)"))
    return out


async def _read(redis: Any, name: str, **target: Any) -> dict[str, str]:
    try:
        got = await redis.config_get(name, **target)
    except RedisError as exc:  # CONFIG renamed or refused (managed engines), an ACL without it, ...
        log.debug("engine check: CONFIG GET %s not answered (%s)", name, type(exc).__name__)
        return {}
    return {str(k): str(v) for k, v in (got or {}).items()}


async def engine_warnings(redis: Redis) -> list[EngineWarning]:
    """Read ``SETTINGS`` from the server, or from every primary of a cluster, and judge them."""
    names: tuple[str, ...]
    if is_cluster(redis):
        nodes = [(p.name, {"target_nodes": p}) for p in redis.get_primaries()]  # type: ignore[attr-defined]
        names = SETTINGS
    else:
        kw = redis.connection_pool.connection_kwargs
        nodes = [(str(kw["path"]) if kw.get("path") else f"{kw.get('host', '?')}:{kw.get('port', 6379)}", {})]
        names = SETTINGS[:2]  # full coverage is a cluster's setting
    out: list[EngineWarning] = []
    for node, target in nodes:
        conf: dict[str, str] = {}
        for name in names:
            conf.update(await _read(redis, name, **target))
        out.extend(advice(node, conf, cluster=bool(target)))
    return out


async def log_engine_warnings(redis: Redis) -> list[EngineWarning]:
    """``engine_warnings``, each logged as a warning (startup: server/app.py); never raises."""
    try:
        found = await engine_warnings(redis)
    except Exception as exc:  # a startup check must not stop a start
        log.debug("engine check skipped (%s)", type(exc).__name__)
        return []
    for w in found:
        log.warning("engine setting %s on %s: %s", w.code, w.node, w.message)
    return found

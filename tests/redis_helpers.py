"""The tests' Redis client, for fixtures and for the test helper processes alike.

``LIVESALE_TEST_REDIS=cluster`` (inherited by helper processes) makes it a cluster client."""

from __future__ import annotations

import os

from redis.asyncio import Redis

from inventory.redis_link import connect

CLUSTER = os.environ.get("LIVESALE_TEST_REDIS", "") == "cluster"


def redis_for(url: str, *, decode: bool = True) -> Redis:
    """A client of the tests' Redis: a cluster client when the session runs on a cluster."""
    return connect(url, cluster=CLUSTER, decode=decode)

if CLUSTER:  # the server and helper processes the tests start inherit it: cluster clients there too
    os.environ.setdefault("LIVESALE_REDIS_CLUSTER", "true")

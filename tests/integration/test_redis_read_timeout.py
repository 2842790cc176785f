"""A single server that stops answering (inventory/redis_link.py ``connect``): a command waiting for a reply
that never comes fails (a timeout, or a connection error for a command queued behind it) after ``socket_timeout_for(wait_ms)`` instead of holding its pool
connection for good, and once the server answers again the same client serves at once (the stuck
connections were dropped, not kept until the pool's 20 s wait for a free one runs out).

The server is made silent for real: SIGSTOP on a private Valkey (the kernel still accepts the bytes, as
with a host gone without a reset, but nothing answers)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeout

from inventory.redis_link import SOCKET_TIMEOUT_S, connect, socket_timeout_for
from server.embedded import EmbeddedRedis

pytestmark = pytest.mark.timeout(60, method="thread")


async def test_a_silent_server_times_out_and_the_pool_recovers() -> None:
    home = Path(tempfile.mkdtemp(prefix="ls-rt-"))  # short: the engine's unix socket path
    server = EmbeddedRedis(home)
    server.start()
    assert server._proc is not None
    pid = server._proc.pid
    client = connect(server.url, cluster=False, decode=True, pool_size=2, wait_ms=1000)
    assert socket_timeout_for(1000) == SOCKET_TIMEOUT_S
    stopped = False
    try:
        assert await client.set("rt:k", "1")
        os.kill(pid, signal.SIGSTOP)
        stopped = True
        started = time.monotonic()
        got = await asyncio.wait_for(asyncio.gather(client.get("rt:k"), client.incr("rt:n"), return_exceptions=True),
                                     SOCKET_TIMEOUT_S + 5)  # without a read timeout: stuck here, and fails
        waited = time.monotonic() - started
        # both pool connections were waiting: each fails as the retryable kinds the gateway answers UNAVAILABLE
        assert all(isinstance(g, (RedisTimeout, RedisConnectionError)) for g in got), got
        assert any(isinstance(g, RedisTimeout) for g in got), got
        assert SOCKET_TIMEOUT_S - 0.5 <= waited < SOCKET_TIMEOUT_S + 3, waited
        os.kill(pid, signal.SIGCONT)
        stopped = False
        started = time.monotonic()
        assert await asyncio.wait_for(client.get("rt:k"), 3) == "1"
        assert await asyncio.wait_for(client.incr("rt:n"), 3) >= 1  # (the timed-out INCR may have run)
        assert time.monotonic() - started < 2
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        await client.aclose()
        await client.connection_pool.disconnect()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)

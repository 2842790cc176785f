"""GET /healthz (liveness: local facts only) and GET /readyz (Redis, SQL, the room subscription), with the
X-Request-Id echo, on real apps: the session's engines, and private ones this test stops or takes away."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.appkeys import CORE
from server.config import Settings
from server.embedded import EmbeddedRedis

pytestmark = pytest.mark.timeout(120, method="thread")


async def test_healthz_is_liveness_with_local_facts_and_request_ids(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings.replace(settle_in_process=False)))
    r = await client.get("/healthz", headers={"X-Request-Id": "lb-probe.42:7"})
    assert r.status == 200 and r.headers["X-Request-Id"] == "lb-probe.42:7"
    body = await r.json()
    assert body["status"] == "ok" and body["ok"] is True and body["pid"] == os.getpid()
    assert body["uptime_s"] >= 0 and body["rooms"] >= 0 and body["connections"] == 0 and body["gateway"]
    assert {"events", "resyncs"} <= set(body["stats"])
    r = await client.get("/healthz", headers={"X-Request-Id": "not a sane id; " + "x" * 200})
    generated = r.headers["X-Request-Id"]
    assert len(generated) == 16 and int(generated, 16) >= 0
    r2 = await client.get("/healthz")
    assert r2.headers["X-Request-Id"] not in ("", generated)
    r = await client.get("/api/sales/nope-nope", headers={"X-Request-Id": "e1"})  # an error answer too
    assert r.status == 404 and r.headers["X-Request-Id"] == "e1"


async def test_readyz_on_a_healthy_app(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings.replace(settle_in_process=False)))
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 200, body
    assert body["status"] == "ready" and set(body["checks"]) == {"redis", "database", "room_bus"}
    assert all(c["ok"] is True and c["ms"] >= 0 and "error" not in c for c in body["checks"].values()), body


def _private(settings: Settings, tmp_path: Path, redis_url: str) -> Settings:
    return settings.replace(redis_url=redis_url, redis_cluster=False, data_dir=str(tmp_path),
                            database_url=f"sqlite:///{tmp_path / 'db' / 'livesale.db'}", settle_in_process=False,
                            reconcile_interval_s=0, refund_retry_s=0, shutdown_timeout_s=1)


async def _readyz(client: Any) -> tuple[int, dict[str, Any]]:
    r = await client.get("/readyz")
    return r.status, await r.json()


async def test_readyz_503_when_redis_is_down(aiohttp_client: Any, settings: Settings, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "engine")
    url = await asyncio.to_thread(server.start)
    try:
        (tmp_path / "db").mkdir()
        client = await aiohttp_client(create_app(_private(settings, tmp_path, url)))
        status, body = await _readyz(client)
        assert status == 200, body
        await asyncio.to_thread(server.stop)
        status, body = await _readyz(client)
        assert status == 503, body
        assert body["status"] == "unready" and body["checks"]["redis"]["ok"] is False
        assert body["checks"]["redis"]["error"] and body["checks"]["database"]["ok"] is True
        assert body["error"]["code"] == "UNAVAILABLE" and "redis" in body["error"]["message"]
        r = await client.get("/healthz")  # liveness does not depend on Redis
        assert r.status == 200
    finally:
        await asyncio.to_thread(server.stop)


async def test_readyz_503_when_the_database_is_unreachable(aiohttp_client: Any, settings: Settings,
                                                           tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "engine")
    url = await asyncio.to_thread(server.start)
    try:
        (tmp_path / "db").mkdir()
        app = create_app(_private(settings, tmp_path, url))
        client = await aiohttp_client(app)
        status, body = await _readyz(client)
        assert status == 200, body
        # the SQLite file's directory goes away: no connection can be opened to it any more
        await app[CORE].store.engine.dispose()
        shutil.rmtree(tmp_path / "db")
        status, body = await _readyz(client)
        assert status == 503, body
        assert body["checks"]["database"]["ok"] is False and body["checks"]["redis"]["ok"] is True
        assert "database" in body["error"]["message"]
    finally:
        await asyncio.to_thread(server.stop)

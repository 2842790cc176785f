"""`livesale serve` with LIVESALE_LOG_FORMAT=json: every log line on stderr is one JSON object, the access
log has one per request (path without its query string, status, request id), and the token and the secret
used in the run appear in no line (server/logs.py, server/access_log.py). A real process on the session's
engines."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from commerce.identity import mint_viewer_token
from proc_helpers import ServerProc, free_port, split_env
from server.config import Settings

pytestmark = pytest.mark.timeout(180, method="thread")


async def test_json_logs_carry_request_ids_and_never_tokens_or_secrets(settings: Settings, tmp_path: Path) -> None:
    secret = "json-logs-secret-" + secrets.token_hex(16)
    token, _user = mint_viewer_token(secret, "Ana")
    port = free_port()
    env = split_env(secret, settings.redis_url, settings.database_url, tmp_path / "data", port,
                    LIVESALE_LOG_FORMAT="json", LIVESALE_LOG_LEVEL="INFO", LIVESALE_REDIS_CLUSTER=str(
                        settings.redis_cluster).lower())
    server = await ServerProc.start(env)
    base = f"http://127.0.0.1:{port}"
    statuses: dict[str, int] = {}
    try:
        await server.wait_lines("livesale listening on")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz", headers={"X-Request-Id": "probe-1"}) as r:
                statuses["healthz"] = r.status
                assert r.headers["X-Request-Id"] == "probe-1"
            async with http.get(f"{base}/api/rooms?token={token}", headers={"X-Request-Id": "rooms-1"}) as r:
                statuses["rooms"] = r.status
            async with http.post(f"{base}/api/rooms", json={"room_id": "nope", "title": "x"},
                                 headers={"Authorization": f"Bearer {token}", "X-Request-Id": "create-1"}) as r:
                statuses["create"] = r.status
            async with http.get(f"{base}/api/me/orders", headers={"Authorization": f"Bearer {token}x"}) as r:
                statuses["orders"] = r.status
            async with http.get(f"{base}/ws?token={token}") as r:  # not an upgrade: refused, logged by path
                statuses["ws"] = r.status
    finally:
        assert await server.stop() == 0
    assert statuses["healthz"] == 200 and statuses["rooms"] == 200 and statuses["create"] == 403, statuses
    assert statuses["orders"] == 401, statuses
    output = "\n".join(server.lines)
    assert token not in output and secret not in output and token[-20:] not in output
    records: list[dict[str, Any]] = []
    for line in server.lines:
        if line.startswith("livesale ") or not line.strip():  # the announcements on stdout (same pipe here)
            continue
        records.append(orjson.loads(line))  # anything else must be one JSON object
    assert all({"ts", "level", "logger", "pid", "message"} <= set(r) for r in records), records
    access = [r for r in records if r["logger"] == "livesale.access"]
    by_id = {r["request_id"]: r for r in access}
    assert by_id["probe-1"]["path"] == "/healthz" and by_id["probe-1"]["status"] == 200
    assert by_id["probe-1"]["method"] == "GET" and by_id["probe-1"]["duration_ms"] >= 0
    assert by_id["probe-1"]["bytes"] > 0 and by_id["probe-1"]["remote"] == "127.0.0.1"
    assert by_id["rooms-1"]["path"] == "/api/rooms"  # the query string (with its token) is not logged
    assert by_id["create-1"]["status"] == 403 and by_id["create-1"]["method"] == "POST"
    assert any(r["path"] == "/ws" for r in access) and len(access) >= 5

"""Tokens signed by the platform's own key, against a real server: the JWKS as a file, and served over
HTTP with a key rotation the running gateway picks up without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway_helpers import JSON, Api, WsClient, viewer
from server.app import create_app
from server.appkeys import VERIFIER
from server.config import Settings
from token_keys_helpers import PlatformKey, write_jwks

pytestmark = pytest.mark.timeout(90, method="thread")


async def join(client: Any, room: str, token: str) -> dict[str, Any]:
    ws = await WsClient.connect(client, "/ws", JSON)
    try:
        await ws.wait(lambda m: m["type"] == "hello")
        return await ws.join(room, token)
    finally:
        await ws.ws.close()


async def test_platform_signed_tokens_over_ws_and_http(aiohttp_client: Any, settings: Settings, tmp_path: Path,
                                                        uid: str) -> None:
    ed, rs = PlatformKey("ed-1"), PlatformKey("rs-1", "rsa")
    path = write_jwks(tmp_path / "jwks.json", ed, rs)
    client = await aiohttp_client(create_app(settings.replace(jwks=str(path), tick_ms=50, settle_block_ms=100)))
    api = Api(client)

    host = rs.sign({"sub": "platform-host", "role": "host", "rooms": [uid]})
    await api.ok("POST", "/api/rooms", host, {"room_id": uid, "title": "Platform room"}, 201)

    snap = await join(client, uid, ed.sign({"sub": "p-ana", "name": "Ana"}))
    assert snap["type"] == "snapshot" and snap["you"] == {"user": "p-ana", "name": "Ana", "role": "viewer", "team": None}, snap
    assert await api.ok("GET", "/api/me/orders", ed.sign({"sub": "p-ana"}), status=200) is not None

    # HS256 with livesale's own secret still works next to the platform's keys
    assert (await join(client, uid, viewer(settings.secret, "Ben")[0]))["type"] == "snapshot"

    forged = [PlatformKey("ed-1").sign(), PlatformKey("rs-1", "rsa").sign(), PlatformKey("ed-9").sign(),
              ed.sign(kid=None)]
    for token in forged:
        err = await join(client, uid, token)
        assert err["type"] == "error" and err["code"] == "UNAUTHORIZED", err
        st, body = await api.call("GET", "/api/me/orders", token)
        assert st == 401 and body["error"]["code"] == "UNAUTHORIZED", (st, body)
    st, _ = await api.call("POST", "/api/rooms", PlatformKey("rs-1", "rsa").sign(
        {"sub": "platform-host", "role": "host", "rooms": ["*"]}), {"room_id": uid + "x", "title": "no"})
    assert st == 401


async def test_jwks_url_rotation_without_restart(aiohttp_client: Any, aiohttp_server: Any, settings: Settings,
                                                 uid: str) -> None:
    k1, k2, k3 = PlatformKey("2026-01"), PlatformKey("2026-02", "rsa"), PlatformKey("2026-03")
    served: list[PlatformKey] = [k1]
    fetches = 0

    async def jwks(_request: web.Request) -> web.Response:
        nonlocal fetches
        fetches += 1
        return web.json_response({"keys": [k.jwk() for k in served]})

    platform = web.Application()
    platform.router.add_get("/.well-known/jwks.json", jwks)
    platform_server = await aiohttp_server(platform, host="127.0.0.1")
    url = str(platform_server.make_url("/.well-known/jwks.json"))

    app = create_app(settings.replace(jwks=url, jwks_refresh_s=3600, tick_ms=50, settle_block_ms=100))
    keys = app[VERIFIER].keys
    assert keys is not None
    keys.min_refetch_s = 0  # the production spacing (5 s) of reloads on an unknown kid would only slow the test
    client = await aiohttp_client(app)
    api = Api(client)
    assert fetches >= 1 and keys.kids == ("2026-01",)  # fetched at start

    host = k1.sign({"sub": "platform-host", "role": "host", "rooms": ["*"]})
    await api.ok("POST", "/api/rooms", host, {"room_id": uid, "title": "Rotating"}, 201)
    old = k1.sign({"sub": "p-old"})
    assert (await join(client, uid, old))["type"] == "snapshot"

    # the platform publishes its next key and signs with it at once: the gateway reloads on the new kid
    served.append(k2)
    assert keys.kids == ("2026-01",)
    snap = await join(client, uid, k2.sign({"sub": "p-new", "name": "New"}))
    assert snap["type"] == "snapshot" and snap["you"]["user"] == "p-new", snap
    assert (await join(client, uid, old))["type"] == "snapshot"  # both keys during the window
    served.append(k3)  # first seen on an HTTP call: the middleware reloads before the handler
    assert "2026-03" not in keys.kids
    await api.ok("GET", "/api/me/orders", k3.sign({"sub": "p-http"}), status=200)

    # the window ends: k1 leaves the set; held until the next periodic reload (every
    # LIVESALE_JWKS_REFRESH_S; tests/unit/test_token_keys.py runs that loop), run here at once
    served.remove(k1)
    assert (await join(client, uid, old))["type"] == "snapshot"
    before = fetches
    await keys.refresh()
    assert fetches == before + 1 and keys.kids == ("2026-02", "2026-03")
    err = await join(client, uid, old)
    assert err["type"] == "error" and err["code"] == "UNAUTHORIZED", err
    st, _ = await api.call("GET", "/api/me/orders", old)
    assert st == 401
    assert (await join(client, uid, k2.sign({"sub": "p-new"})))["type"] == "snapshot"


async def test_unreachable_jwks_url_does_not_stop_the_gateway(aiohttp_client: Any, settings: Settings,
                                                              uid: str) -> None:
    client = await aiohttp_client(create_app(settings.replace(jwks="http://127.0.0.1:9/jwks.json",
                                                              tick_ms=50, settle_block_ms=100)))
    api = Api(client)
    st, body = await api.call("GET", "/api/me/orders", PlatformKey("k").sign())
    assert st == 401 and body["error"]["code"] == "UNAUTHORIZED", (st, body)
    # HS256 tokens keep working while the platform's key set cannot be fetched
    await api.ok("GET", "/api/me/orders", viewer(settings.secret, "Ana")[0], status=200)

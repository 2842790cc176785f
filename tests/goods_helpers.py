"""Shared by the goods tests (pools, channels, variants, pre-sales, refunds, my orders): an app on real
engines with a merchant's and a host's token, and polling with a timeout."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from commerce.identity import mint_merchant_token
from conftest import timeout
from gateway_helpers import Api, host_token
from server.app import create_app
from server.config import Settings

__all__ = ["GoodsEnv", "open_goods_env", "until"]


@dataclass
class GoodsEnv:
    api: Api
    client: Any          # the aiohttp TestClient of the app (a real socket on 127.0.0.1)
    settings: Settings
    merchant_id: str
    merchant: str        # the merchant's token (owns the pools it opens)
    host: str            # a host token for every room


async def open_goods_env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    """The app with fast ticks, settlement and reaper (so returns, journals and orders land quickly)."""
    s = settings.replace(tick_ms=50, settle_block_ms=100, reap_interval_ms=50)
    client = await aiohttp_client(create_app(s))
    merchant_id = "m-" + secrets.token_hex(3)
    return GoodsEnv(Api(client), client, s, merchant_id, mint_merchant_token(s.secret, merchant_id),
                    host_token(s.secret))


async def until(what: str, check: Callable[[], Awaitable[Any]], limit: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy (returned), failing after ``limit`` s (scaled)."""
    deadline = time.monotonic() + timeout(limit)
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)

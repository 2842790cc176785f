"""aiohttp application keys (typed): the components server/app.py puts on the application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from commerce.service import Commerce
from stream_gateway.handler import Gateway
from stream_gateway.hub import Hub

from .config import Settings

if TYPE_CHECKING:
    from .app import Core

__all__ = ["SETTINGS", "CORE", "COMMERCE", "HUB", "GATEWAY"]

SETTINGS = web.AppKey("settings", Settings)
CORE: web.AppKey[Core] = web.AppKey("core")
COMMERCE = web.AppKey("commerce", Commerce)
HUB = web.AppKey("hub", Hub)
GATEWAY = web.AppKey("gateway", Gateway)

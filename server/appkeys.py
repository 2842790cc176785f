"""aiohttp application keys (typed): the components server/app.py puts on the application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from commerce.addresses import AddressRate, Network
from commerce.identity import TokenVerifier
from commerce.service import Commerce
from stream_gateway.handler import Gateway
from stream_gateway.hub import Hub

from .config import Settings

if TYPE_CHECKING:
    from .app import Core, Settlement

__all__ = ["SETTINGS", "CORE", "COMMERCE", "HUB", "GATEWAY", "GUEST_RATE", "PROXIES", "VERIFIER", "SETTLEMENT"]

SETTINGS = web.AppKey("settings", Settings)
CORE: web.AppKey[Core] = web.AppKey("core")
COMMERCE = web.AppKey("commerce", Commerce)
HUB = web.AppKey("hub", Hub)
GATEWAY = web.AppKey("gateway", Gateway)
GUEST_RATE = web.AppKey("guest_rate", AddressRate)      # guest tokens per client address (this process)
PROXIES: web.AppKey[tuple[Network, ...]] = web.AppKey("proxies")  # LIVESALE_TRUSTED_PROXIES, parsed
VERIFIER = web.AppKey("verifier", TokenVerifier)  # every token check: HS256 secrets + platform JWKS
SETTLEMENT: web.AppKey[Settlement] = web.AppKey("settlement")  # in-process settlement (server/metrics.py reads it)

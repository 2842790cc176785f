"""Typed application keys: every shared resource of a process, set up in server/app.py."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from inventory.scripts import Inventory
from inventory.settlement import SettlementWorker
from inventory.store import OrderStore
from commerce.room_bus import RoomBus
from stream_gateway.handler import Gateway
from stream_gateway.hub import Hub
from commerce.service import RoomService

from .config import Settings

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", OrderStore)
INVENTORY = web.AppKey("inventory", Inventory)
BUS = web.AppKey("bus", RoomBus)
SERVICE = web.AppKey("service", RoomService)
HUB = web.AppKey("hub", Hub)
GATEWAY = web.AppKey("gateway", Gateway)
WORKER = web.AppKey("worker", SettlementWorker)

"""The composition root: builds the aiohttp application from Settings. Wiring only.

Resources start in order through ``cleanup_ctx`` (embedded Valkey if needed -> Redis clients ->
SQL store -> scripts -> room bus/service/hub -> settlement worker + reaper) and stop in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis

from inventory.reaper import Reaper
from inventory.scripts import Inventory
from inventory.settlement import SettlementWorker
from inventory.store import OrderRecord, OrderStore
from commerce.room_bus import RoomBus
from stream_gateway.handler import Gateway, GatewayLimits
from stream_gateway.hub import Hub
from commerce.service import RoomService

from . import api, pages
from .config import Settings
from .embedded import EmbeddedRedis
from .appkeys import BUS, GATEWAY, HUB, INVENTORY, REDIS, SERVICE, SETTINGS, STORE, WORKER

__all__ = ["create_app", "redis_client", "Core"]

log = logging.getLogger(__name__)


def redis_client(url: str, pool_size: int, decode: bool) -> Redis:
    """A client whose pool makes callers wait for a free connection instead of failing."""
    pool = BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=20,
                                           decode_responses=decode, health_check_interval=30)
    return Redis(connection_pool=pool)


def order_message(o: OrderRecord) -> dict[str, object]:
    return {"type": "order_confirmed",
            "order": {"order_id": o.order_id, "sale_id": o.sale_id, "sku": o.sku, "qty": o.qty,
                      "unit_price": o.unit_price, "total": o.total, "currency": o.currency,
                      "confirmed_at": o.confirmed_at_ms, "settled_at": o.settled_at_ms}}


def notify_orders(bus: RoomBus) -> Callable[[Sequence[OrderRecord]], Awaitable[None]]:
    """The settlement worker's ``on_committed``: "order_confirmed" to the buyer's sockets in the
    sale's room, only after the DB commit. Any publish error propagates: the worker then leaves the
    batch unacked and repeats it (at least once; clients de-duplicate by ``order.order_id``)."""
    async def on_committed(orders: Sequence[OrderRecord]) -> None:
        for o in orders:
            await bus.to_user(o.room_id, o.user_id, order_message(o))
    return on_committed


async def _engine(app: web.Application) -> AsyncIterator[None]:
    settings: Settings = app[SETTINGS]
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_path)
        await asyncio.to_thread(embedded.start)
        settings = settings.replace(redis_url=embedded.url)
        app[SETTINGS] = settings
    yield
    if embedded is not None:
        await asyncio.to_thread(embedded.stop)


@dataclass
class Core:
    """The shared resources of a process: Redis clients (text and bytes), store, scripts, bus, service."""

    redis: Redis
    raw: Redis
    store: OrderStore
    inventory: Inventory
    bus: RoomBus
    service: RoomService

    @classmethod
    async def open(cls, s: Settings) -> Core:
        s.data_path.mkdir(parents=True, exist_ok=True)
        redis = redis_client(s.redis_url, s.redis_pool_size, decode=True)
        raw = redis_client(s.redis_url, s.redis_pool_size, decode=False)
        store = await OrderStore.open(s.sqlalchemy_url)
        inventory = Inventory(redis, max_qty=s.max_qty_per_request)
        await inventory.load()
        bus = RoomBus(raw, replay_keep=s.replay_buffer)
        await bus.load_script()
        service = RoomService(store, inventory, bus, s.default_hold_ttl_s, s.max_qty_per_request)
        return cls(redis, raw, store, inventory, bus, service)

    async def close(self) -> None:
        await self.service.close()
        await self.store.close()
        for client in (self.redis, self.raw):
            await client.aclose()
            await client.connection_pool.disconnect()


async def _resources(app: web.Application) -> AsyncIterator[None]:
    s: Settings = app[SETTINGS]
    core = await Core.open(s)
    redis, raw, store, inventory, bus, service = (core.redis, core.raw, core.store, core.inventory, core.bus,
                                                  core.service)
    service.start()
    hub = Hub(raw, bus, tick_ms=s.tick_ms, replay_keep=s.replay_buffer, soft_limit=s.ws_soft_limit,
              heartbeat_s=s.heartbeat_s, sample_threshold=s.sample_threshold, ambient_rate=s.ambient_rate,
              on_open=service.fire_open, on_close=service.fire_close)
    await hub.start()
    gateway = Gateway(hub, service, s.signing_secret(),
                      GatewayLimits(max_msg=s.ws_max_msg, buy_rate=s.buy_rate, comment_rate=s.comment_rate,
                                    tick_ms=s.tick_ms, soft_limit=s.ws_soft_limit, hard_limit=s.ws_hard_limit))
    app[REDIS], app[STORE], app[INVENTORY], app[BUS] = redis, store, inventory, bus
    app[SERVICE], app[HUB], app[GATEWAY] = service, hub, gateway
    try:
        yield
    finally:
        await hub.stop()
        await core.close()


async def _settlement(app: web.Application) -> AsyncIterator[None]:
    s: Settings = app[SETTINGS]
    if not s.settle_in_process:
        yield
        return
    tasks, worker, reaper = await start_settlement(s, app[REDIS], app[STORE], app[INVENTORY], app[BUS],
                                                   app[SERVICE])
    app[WORKER] = worker
    try:
        yield
    finally:
        await stop_settlement(tasks, worker, reaper, s.shutdown_timeout_s)


async def start_settlement(s: Settings, redis: Redis, store: OrderStore, inventory: Inventory, bus: RoomBus,
                           service: RoomService) -> tuple[list[asyncio.Task[None]], SettlementWorker, Reaper]:
    worker = SettlementWorker(redis, store, consumer=f"{socket.gethostname()}-{os.getpid()}", batch=s.settle_batch,
                              block_ms=s.settle_block_ms, claim_idle_ms=s.settle_claim_idle_ms,
                              max_deliveries=s.settle_max_deliveries, on_committed=notify_orders(bus))
    reaper = Reaper(redis, inventory, s.reap_interval_ms, on_restock=service.restocked)
    tasks = [asyncio.create_task(worker.run(), name="settlement"), asyncio.create_task(reaper.run(), name="reaper")]
    return tasks, worker, reaper


async def stop_settlement(tasks: list[asyncio.Task[None]], worker: SettlementWorker, reaper: Reaper,
                          timeout: float) -> None:
    reaper.stop()
    await worker.stop(timeout=timeout)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t


async def _on_shutdown(app: web.Application) -> None:
    hub = app.get(HUB)
    if hub is not None:
        await hub.stop()


def create_app(settings: Settings) -> web.Application:
    # request lines up to MAX_REQUEST_LINE reach the middleware, which answers URLs over
    # MAX_URL_BYTES with a JSON 414 (aiohttp's parser would answer a plain-text 400 past 8 KiB)
    app = web.Application(middlewares=[api.error_middleware], client_max_size=64 * 1024,
                          handler_args={"max_line_size": api.MAX_REQUEST_LINE})
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_engine)
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(_settlement)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/ws", _ws)
    api.setup(app)
    pages.setup(app)
    return app


async def _ws(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].handle(request)

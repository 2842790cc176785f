"""The composition root: builds the aiohttp application from Settings. Wiring only.

Components start in this order and stop in reverse, each with ``start()`` / ``aclose()``:
embedded Valkey (if no REDIS_URL) -> the platform key set (``LIVESALE_JWKS``, if set) -> ``Core`` (Redis
clients, SQL store, scripts, room bus, ``Commerce``) -> ``Hub`` + ``Gateway`` (WebSocket) -> ``Settlement``
(worker + reaper), through ``cleanup_ctx``; aiohttp closes the listening sockets and open connections
before the cleanups run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from redis.asyncio import Redis

from commerce.addresses import AddressRate, parse_proxies
from commerce.identity import TokenVerifier
from commerce.jwks import KeySet
from commerce.payments.refunds import RefundRetry
from commerce.recovery import ReconcileLoop
from commerce.room_bus import RoomBus
from commerce.service import Commerce
from commerce.tasks import Every, OwnedTasks
from inventory.engine_check import log_engine_warnings
from inventory.growth import CommissionHook
from inventory.reaper import Reaper
from inventory.redis_link import connect, is_cluster
from inventory.scripts import Inventory
from inventory.settle_heartbeat import SettleHeartbeat
from inventory.settlement import SettlementWorker
from inventory.signal_sink import SignalSink
from inventory.store import Store
from stream_gateway.handler import Gateway, GatewayLimits
from stream_gateway.hub import Hub
from stream_gateway.interest import WatchSignals

from . import api, api_goods, api_interaction, pages
from . import api_growth
from . import api_reengage
from . import api_shelf
from . import api_reports
from . import api_audiences
from . import openapi
from . import access_log, health, logs
from .appkeys import COMMERCE, CORE, GATEWAY, GUEST_RATE, HUB, PROXIES, SETTINGS
from .appkeys import SETTLEMENT, VERIFIER
from .config import Settings
from .embedded import EmbeddedRedis
from .payment_setup import payment_provider

__all__ = ["create_app", "redis_client", "Core", "Settlement"]

log = logging.getLogger(__name__)


def redis_client(url: str, pool_size: int, decode: bool, cluster: bool = False, wait_ms: int = 1000) -> Redis:
    """A single server's client whose pool makes callers wait for a free connection instead of failing,
    or a cluster client seeded from ``url`` (inventory/redis_link.py; ``wait_ms``: LIVESALE_REDIS_WAIT_MS,
    which its read timeout stays above)."""
    return connect(url, cluster=cluster, decode=decode, pool_size=pool_size, wait_ms=wait_ms)


async def _engine(app: web.Application) -> AsyncIterator[None]:
    from .embedded_cluster import EmbeddedCluster

    settings: Settings = app[SETTINGS]
    embedded: EmbeddedRedis | EmbeddedCluster | None = None
    if not settings.redis_url and settings.embedded_cluster > 0:  # `livesale serve --cluster N`
        embedded = EmbeddedCluster(settings.data_path, settings.embedded_cluster, settings.embedded_replicas)
        await asyncio.to_thread(embedded.start)
        settings = settings.replace(redis_url=embedded.url, redis_cluster=True)
        app[SETTINGS] = settings
    elif not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_path)
        await asyncio.to_thread(embedded.start)
        settings = settings.replace(redis_url=embedded.url)
        app[SETTINGS] = settings
    yield
    if embedded is not None:
        await asyncio.to_thread(embedded.stop)


@dataclass
class Core:
    """The shared resources of a process: Redis clients (text and bytes), store, scripts, bus, commerce."""

    redis: Redis
    raw: Redis
    store: Store
    inventory: Inventory
    bus: RoomBus
    commerce: Commerce

    @classmethod
    async def open(cls, s: Settings) -> Core:
        s.data_path.mkdir(parents=True, exist_ok=True)
        redis = redis_client(s.redis_url, s.redis_pool_size, decode=True, cluster=s.redis_cluster,
                             wait_ms=s.redis_wait_ms)
        raw = redis_client(s.redis_url, s.redis_pool_size, decode=False, cluster=s.redis_cluster,
                           wait_ms=s.redis_wait_ms)
        store = await Store.open(s.sqlalchemy_url)
        store.order_hooks.append(CommissionHook(s.commission_bps))  # share commissions, in the orders' transaction
        inventory = Inventory(redis, max_qty=s.max_qty_per_request, wait_replicas=s.redis_wait_replicas,
                              wait_ms=s.redis_wait_ms)
        await inventory.load()
        await log_engine_warnings(redis)  # settings that undermine the guarantees (inventory/engine_check.py)
        bus = RoomBus(raw, replay_keep=s.replay_buffer, retain_room_s=s.retain_room_s, retain_ended_s=s.retain_ended_s)
        await bus.load_script()
        mode, provider = payment_provider(s)
        commerce = Commerce(store, inventory, bus, default_hold_ttl_s=s.default_hold_ttl_s,
                            max_qty=s.max_qty_per_request, payment_mode=mode, payment_provider=provider,
                            signals_on=s.signals_on, signal_flush_s=s.signal_flush_ms / 1000,
                            growth={"window_s": s.share_window_s, "default_bps": s.commission_bps,
                                    "pending_s": s.commission_pending_s, "link_rate": s.share_link_rate},
                            personal_shelf=s.personal_shelf, answer_deadline_s=s.answer_deadline_ms / 1000)
        return cls(redis, raw, store, inventory, bus, commerce)

    async def aclose(self) -> None:
        await self.commerce.aclose()
        await self.store.close()
        for client in (self.redis, self.raw):
            await client.aclose()
            if not is_cluster(client):
                await client.connection_pool.disconnect()


class Settlement:
    """The settlement worker, the hold reaper and the signal sink of a process, as one component."""

    def __init__(self, s: Settings, core: Core) -> None:
        self.timeout = s.shutdown_timeout_s
        self.worker = SettlementWorker(core.redis, core.store, consumer=f"{socket.gethostname()}-{os.getpid()}",
                                       batch=s.settle_batch, block_ms=s.settle_block_ms,
                                       claim_idle_ms=s.settle_claim_idle_ms, max_deliveries=s.settle_max_deliveries,
                                       on_committed=core.commerce.notify_settled)
        # interest signals: the stream -> the `signals` table (inventory/signal_sink.py)
        self.signals = SignalSink(core.raw, core.store, consumer=f"{socket.gethostname()}-{os.getpid()}",
                                  batch=s.signal_batch, block_ms=s.settle_block_ms,
                                  claim_idle_ms=s.settle_claim_idle_ms,
                                  retention_ms=s.signal_retention_days * 86_400_000,
                                  on_batch=core.commerce.shelf.absorb)  # the per-viewer shelf's scores
        self.reaper = Reaper(core.redis, core.inventory, s.reap_interval_ms,
                             on_restock=core.commerce.sales.restocked, store=core.store,
                             retain_ms=s.retain_ended_s * 1000, on_retired=core.commerce.sale_retired,
                             on_deposits=core.commerce.presales.deposits_expired)
        # alive, counters and lag in Redis every few seconds, for `livesale settle --check`
        self.heartbeat = SettleHeartbeat(core.redis, self.worker, s.settle_heartbeat_s)
        self._tasks = OwnedTasks(log, "settlement")

    def start(self) -> None:
        self._tasks.spawn(self.worker.run())
        self._tasks.spawn(self.reaper.run())
        self._tasks.spawn(self.signals.run())
        self._tasks.spawn(self.heartbeat.run())

    async def aclose(self) -> None:
        """The reaper stops; the worker finishes the batch in hand (bounded), then both are cancelled;
        the heartbeat is removed (this worker is gone now, not 3 intervals later)."""
        self.reaper.stop()
        self.signals.stop()
        self.heartbeat.stop()
        await self.worker.stop(timeout=self.timeout)
        if await self._tasks.cancel(5.0):
            log.warning("settlement: a task did not stop")
        try:
            await asyncio.wait_for(self.heartbeat.forget(), 2.0)
        except Exception as exc:  # Redis down: the heartbeat expires on its own
            log.warning("settlement heartbeat not removed (%s); it expires on its own", type(exc).__name__)


class Upkeep:
    """The low-rate checks every gateway and settlement process runs: the comparison of live sales
    with SQL (one process a round; commerce/recovery.py), the resending of refunds the provider
    has not accepted (commerce/payments/refunds.py), the finishing of order refunds a stopped
    process left half done (commerce/order_refunds.py), the interaction deadlines, and re-engagement:
    reminders no hook fired and the due webhook deliveries (commerce/reminders.py, commerce/webhooks.py)."""

    def __init__(self, s: Settings, core: Core) -> None:
        self.reconcile = ReconcileLoop(core.commerce, s.reconcile_interval_s)
        self.refunds = RefundRetry(core.commerce.payments, s.refund_retry_s)
        # order refunds a stopped process left half done (commerce/order_refunds.py)
        self.order_refunds = Every(max(1.0, s.refund_retry_s / 4) if s.refund_retry_s else 0,
                                   core.commerce.order_refunds.recover, log, "order refund recovery")
        # polls closing, coupon drops ending, draws drawing and redrawing, coupons left half applied
        self.interaction = Every(0.25, core.commerce.interaction_upkeep, log, "interaction deadlines")
        # reminders no hook fired, and the signed webhook deliveries to the platform (commerce/reminders.py)
        self.reengage = core.commerce.reengage.upkeep(s.webhook_url, s.webhook_signing_secret, s.webhook_attempts)

    def start(self) -> None:
        self.reconcile.start()
        self.refunds.start()
        self.order_refunds.start()
        self.interaction.start()
        self.reengage.start()

    async def aclose(self) -> None:
        await self.reconcile.aclose()
        await self.refunds.aclose()
        await self.order_refunds.aclose()
        await self.interaction.aclose()
        await self.reengage.aclose()


def token_verifier(s: Settings) -> TokenVerifier:
    """Every token check of the process: HS256 with LIVESALE_SECRET (resolved) and the earlier secrets of
    LIVESALE_SECRETS_PREVIOUS, plus RS256/EdDSA with the platform's LIVESALE_JWKS. Loads nothing yet."""
    keys = KeySet(s.jwks, refresh_s=s.jwks_refresh_s) if s.jwks else None
    return TokenVerifier((s.secret, *s.secrets_previous), keys, issuer=s.token_issuer, audience=s.token_audience)


async def _token_keys(app: web.Application) -> AsyncIterator[None]:
    """The platform key set: loaded before the gateway accepts anyone, reloaded in the background."""
    verifier = app[VERIFIER]
    await verifier.start()
    try:
        yield
    finally:
        await verifier.aclose()


async def _resources(app: web.Application) -> AsyncIterator[None]:
    s: Settings = app[SETTINGS]
    core = await Core.open(s)
    commerce = core.commerce
    commerce.start()
    watch = WatchSignals(commerce.signals, s.signal_watch_s * 1000)  # join / leave / watched signals
    hub = Hub(core.raw, core.bus, core.inventory, tick_ms=s.tick_ms, replay_keep=s.replay_buffer,
              soft_limit=s.ws_soft_limit, heartbeat_s=s.heartbeat_s, sample_threshold=s.sample_threshold,
              ambient_rate=s.ambient_rate,
              on_open=commerce.sales.fire_open, on_close=commerce.sales.fire_close, on_presence=commerce.presence,
              on_loaded=commerce.room_loaded, on_second=watch.check, on_online=commerce.reengage.online.report)
    await hub.start()
    gateway = Gateway(hub, commerce, app[VERIFIER],
                      GatewayLimits(max_msg=s.ws_max_msg, buy_rate=s.buy_rate, comment_rate=s.comment_rate,
                                    tick_ms=s.tick_ms, soft_limit=s.ws_soft_limit, hard_limit=s.ws_hard_limit,
                                    guests=s.guest_tokens, conn_per_addr=s.conn_per_addr,
                                    join_rate_per_addr=s.join_rate_per_addr,
                                    trusted_proxies=parse_proxies(s.trusted_proxies)), watch)
    app[CORE], app[COMMERCE], app[HUB], app[GATEWAY] = core, commerce, hub, gateway
    upkeep = Upkeep(s, core)
    upkeep.start()
    try:
        yield
    finally:
        await upkeep.aclose()
        await hub.aclose()  # the hub's one stop; _on_shutdown only closed its connections
        await core.aclose()


async def _settlement(app: web.Application) -> AsyncIterator[None]:
    s: Settings = app[SETTINGS]
    if not s.settle_in_process:
        yield
        return
    settlement = Settlement(s, app[CORE])
    app[SETTLEMENT] = settlement
    settlement.start()
    try:
        yield
    finally:
        await settlement.aclose()


async def _on_shutdown(app: web.Application) -> None:
    """Before aiohttp waits for the handlers: close every WebSocket (1001) so they end at once."""
    hub = app.get(HUB)
    if hub is not None:
        await hub.close_connections()


def create_app(settings: Settings) -> web.Application:
    # request lines up to MAX_REQUEST_LINE reach the middleware, which answers URLs over
    # MAX_URL_BYTES with a JSON 414 (aiohttp's parser would answer a plain-text 400 past 8 KiB)
    app = web.Application(middlewares=[access_log.request_id_middleware, api.error_middleware,
                                       api.token_keys_middleware], client_max_size=64 * 1024,
                          handler_args={"max_line_size": api.MAX_REQUEST_LINE})
    # the signing secret is resolved once here (LIVESALE_SECRET or the data directory's file): no
    # request reads a file
    app[SETTINGS] = settings if settings.secret else settings.replace(secret=settings.signing_secret())
    app[PROXIES] = parse_proxies(settings.trusted_proxies)
    app[GUEST_RATE] = AddressRate(settings.guest_token_rate / 60.0, settings.guest_token_rate)
    app[VERIFIER] = token_verifier(app[SETTINGS])
    logs.protect(app[SETTINGS].secret)  # resolved just now: never in a log line (server/logs.py)
    access_log.setup(app)  # X-Request-Id on every response
    app.cleanup_ctx.append(_engine)
    app.cleanup_ctx.append(_token_keys)
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(_settlement)
    app.on_shutdown.append(_on_shutdown)
    if settings.metrics:  # GET /metrics, fed after the gateway and settlement started (server/metrics.py)
        from . import metrics

        metrics.setup(app)
    app.router.add_get("/ws", _ws)
    health.setup(app)  # /healthz, /readyz
    api.setup(app)
    api_goods.setup(app)
    api_interaction.setup(app)
    api_reengage.setup(app)
    api_audiences.setup(app)
    api_growth.setup(app)
    api_shelf.setup(app)
    api_reports.setup(app)
    pages.setup(app)
    openapi.setup(app)  # last: GET /api/openapi.json and /api/docs, built from the router at startup
    return app


async def _ws(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].handle(request)

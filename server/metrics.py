"""Prometheus metrics: ``GET /metrics`` (text exposition), every name prefixed ``livesale_``.

The hot paths never touch a Prometheus object: they add to plain counters (``Hub.stats``,
``connection.CLOSES``, the gateway's ``BuyMeter`` / ``ErrorMeter``, the reserve batcher's
``BatchMeter``, the settlement worker's ``SettlementStats``, the reaper's ``expired``), and ``Metrics``
moves the deltas into Prometheus counters and histograms about once a second and before every scrape
(``flush``). Gauges (connections, rooms) are set at the same moments; the settlement lag and the
dead-letter size are sampled from Redis every few seconds (``inventory/settle_lag.py``) by the
processes that run settlement.

One process: a registry of its own per application. ``livesale serve --workers N``: prometheus-client's
multiprocess mode (``server/metrics_dir.py``): every process (the gateways and the settling parent)
writes its values to files in one directory, and a scrape of any gateway adds them all up, so one
scrape shows the whole server. Counters and histograms are summed over every process that ever ran
(a restarted worker's counts stay); gauges use a "live" mode (``livesum``: connections and rooms of
the live processes; ``livemax``: settlement figures, measured the same by every settling process).
A separate ``livesale settle`` serves its own metrics with ``--metrics-port`` (``serve_settle``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.asyncio import Redis

from commerce.meters import (BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, REDIS_BUCKETS, BatchMeter, BuyMeter, ErrorMeter,
                             LocalHistogram, error_kind)
from commerce.tasks import Every
from inventory.settle_lag import settle_lag
from stream_gateway.connection import CLOSES

from .metrics_dir import ENV

if TYPE_CHECKING:
    from inventory.reaper import Reaper
    from inventory.settlement import SettlementWorker
    from stream_gateway.handler import Gateway
    from stream_gateway.hub import Hub

__all__ = ["Metrics", "setup", "METRICS", "FLUSH_S", "LAG_SAMPLE_S"]

log = logging.getLogger(__name__)

FLUSH_S = 1.0        # plain counters -> Prometheus
LAG_SAMPLE_S = 5.0   # settlement lag and dead letter, from Redis

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    """This process's metrics: the Prometheus objects, the plain counters they are fed from, the last
    values flushed (counters move by deltas), and the settlement lag sampler."""

    def __init__(self) -> None:
        self.multiprocess = ENV in os.environ
        # multiprocess: values live in the directory's files, collected at scrape time; else a registry
        # per application (tests run several in one process)
        own = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        r: dict[str, Any] = {"registry": own}
        self.connections = Gauge("livesale_websocket_connections", "Open WebSocket connections.",
                                 multiprocess_mode="livesum", **r)
        self.rooms = Gauge("livesale_rooms_loaded", "Rooms loaded by gateway processes (a room two workers serve "
                           "counts twice).", multiprocess_mode="livesum", **r)
        self.shed = Gauge("livesale_ambient_shed", "How many times less often a CPU-saturated gateway process "
                          "ticks (1: not shedding; ticks stay at least once a second).", multiprocess_mode="livemax",
                          **r)
        self.events = Counter("livesale_events_total", "Room events fanned out: critical (sequenced events) "
                              "and ambient (ticks).", ["lane"], **r)
        self.deliveries = Counter("livesale_deliveries_total", "Frames written to sockets, per lane (+n per "
                                  "fan-out to n sockets; skipped ambient frames not included).", ["lane"], **r)
        self.skipped = Counter("livesale_ambient_skipped_total", "Ambient frames skipped for a connection over "
                               "the soft write-buffer limit.", **r)
        self.slow_closes = Counter("livesale_slow_consumer_closes_total", "Connections closed 4008 (write buffer "
                                   "over the hard limit).", **r)
        self.resyncs = Counter("livesale_room_resyncs_total", "Room reloads after a seq gap, a new epoch or a lost "
                               "link.", **r)
        self.joins = Counter("livesale_joins_total", "Joins answered from the replay ring (resumed) or with a "
                             "snapshot.", ["kind"], **r)
        self.buy_results = Counter("livesale_buy_results_total", "Buy answers by code (RESERVED, SOLD_OUT, "
                                   "LIMIT, RATE_LIMITED, UNAVAILABLE...).", ["code"], **r)
        self.buy_latency = Histogram("livesale_buy_latency_seconds", "From the gateway's receipt of a buy to its "
                                     "answer.", buckets=LATENCY_BUCKETS, **r)
        self.batch_size = Histogram("livesale_reserve_batch_size", "Buys decided by one reserve script call.",
                                    buckets=BATCH_SIZE_BUCKETS, **r)
        self.reserve_redis = Histogram("livesale_reserve_redis_seconds", "Duration of one reserve script call "
                                       "(Redis round trip included).", buckets=REDIS_BUCKETS, **r)
        self.settled = Counter("livesale_settled_orders_total", "Outbox entries settled into SQL and acked "
                               "(redeliveries included).", **r)
        self.settle_batches = Counter("livesale_settlement_batches_total", "Settlement transactions committed and "
                                      "acked.", **r)
        self.dead_lettered = Counter("livesale_dead_lettered_total", "Entries this server moved to the dead-letter "
                                     "stream.", **r)
        self.lag = Gauge("livesale_settlement_lag_seconds", "Age of the oldest outbox entry not settled yet (0: "
                         "nothing waits).", multiprocess_mode="livemax", **r)
        self.backlog = Gauge("livesale_settlement_backlog", "Outbox entries not settled yet (pending and not "
                             "read).", multiprocess_mode="livemax", **r)
        self.dead_letter = Gauge("livesale_dead_letter_entries", "Entries in the dead-letter stream.",
                                 multiprocess_mode="livemax", **r)
        self.redis_errors = Counter("livesale_redis_errors_total", "Redis failures, by where (reserve, "
                                    "settlement, ws, http).", ["where"], **r)
        self.db_errors = Counter("livesale_db_errors_total", "Database failures, by where (settlement, ws, http).",
                                 ["where"], **r)
        self.expiries = Counter("livesale_hold_expiries_total", "Holds expired by the reaper (units back to "
                                "stock).", **r)
        self.http = Counter("livesale_http_requests_total", "HTTP requests by route and status.",
                            ["route", "status"], **r)
        self.registry = own if own is not None else self._multiprocess_registry()
        # the sources (each None where this process has no such part)
        self.hub: Hub | None = None
        self.buys: BuyMeter | None = None
        self.ws_errors: ErrorMeter | None = None
        self.batches: BatchMeter | None = None
        self.worker: SettlementWorker | None = None
        self.reaper: Reaper | None = None
        self.http_counts: dict[tuple[str, int], int] = {}
        self.http_errors = ErrorMeter()
        self._last: dict[Any, Any] = {}
        self._children: dict[Any, Any] = {}
        self._flush = Every(FLUSH_S, self._flush_round, log, "metrics flush")
        self._sample: Every | None = None
        self._sample_fn: Callable[[], Awaitable[None]] | None = None

    @staticmethod
    def _multiprocess_registry() -> CollectorRegistry:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry

    # -- sources ----------------------------------------------------------------------------------

    def watch_gateway(self, hub: Hub, gateway: Gateway, batches: BatchMeter) -> None:
        self.hub, self.buys, self.ws_errors, self.batches = hub, gateway.buys, gateway.errors, batches

    def watch_settlement(self, worker: SettlementWorker, reaper: Reaper, redis: Redis) -> None:
        self.worker, self.reaper = worker, reaper

        async def sample() -> None:
            lag = await settle_lag(redis, group=worker.group, registry=worker.registry,
                                   dead_letter=worker.dead_letter)
            self.lag.set(lag.age_s)
            self.backlog.set(lag.backlog)
            self.dead_letter.set(lag.dead_letter)
        self._sample_fn = sample
        self._sample = Every(LAG_SAMPLE_S, sample, log, "settlement lag sample")

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._flush.start()
        if self._sample is not None and self._sample_fn is not None:
            try:
                await self._sample_fn()  # a first value at once, not after LAG_SAMPLE_S
            except Exception as exc:
                log.warning("settlement lag sample failed: %s: %s", type(exc).__name__, exc)
            self._sample.start()

    async def aclose(self) -> None:
        await self._flush.aclose()
        if self._sample is not None:
            await self._sample.aclose()
        self.flush()  # the last counts of a stopping process still reach the files (multiprocess)

    # -- plain counters -> Prometheus ---------------------------------------------------------------

    async def _flush_round(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Move every plain counter's growth since the last flush into Prometheus; set the gauges."""
        hub = self.hub
        if hub is not None:
            st = hub.stats
            self.connections.set(len(hub.all))
            self.rooms.set(len(hub.rooms))
            self.shed.set(st["ambient_shed"])
            self._add(self.events, ("critical",), st["events"])
            self._add(self.events, ("ambient",), st["ticks"])
            self._add(self.deliveries, ("critical",), st["critical_deliveries"])
            self._add(self.deliveries, ("ambient",), st["ambient_deliveries"])
            self._add(self.skipped, (), st["skipped"])
            self._add(self.resyncs, (), st["resyncs"])
            self._add(self.joins, ("resumed",), st["resumed"])
            self._add(self.joins, ("snapshot",), st["snapshots"])
            self._add(self.slow_closes, (), CLOSES["slow"])
        if self.buys is not None:
            for code, n in list(self.buys.codes.items()):
                self._add(self.buy_results, (code,), n)
            self._histogram(self.buy_latency, self.buys.latency)
        if self.batches is not None:
            self._histogram(self.batch_size, self.batches.sizes)
            self._histogram(self.reserve_redis, self.batches.seconds)
            self._add(self.redis_errors, ("reserve",), self.batches.failures)
        for where, meter in (("ws", self.ws_errors), ("http", self.http_errors)):
            if meter is not None:
                for (kind, _), n in list(meter.counts.items()):
                    self._add(self.redis_errors if kind == "redis" else self.db_errors, (where,), n)
        if self.worker is not None:
            s = self.worker.stats
            self._add(self.settled, (), s.settled)
            self._add(self.settle_batches, (), s.batches)
            self._add(self.dead_lettered, (), s.dead_lettered)
            self._add(self.redis_errors, ("settlement",), s.redis_failures)
            self._add(self.db_errors, ("settlement",), s.db_failures)
        if self.reaper is not None:
            self._add(self.expiries, (), self.reaper.expired)
        for (route, status), n in list(self.http_counts.items()):
            self._add(self.http, (route, str(status)), n)

    def _add(self, counter: Counter, labels: tuple[str, ...], total: int) -> None:
        key = (counter, labels)
        delta = total - self._last.get(key, 0)
        if delta > 0:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = counter.labels(*labels) if labels else counter
            child.inc(delta)
        self._last[key] = total

    def _histogram(self, hist: Histogram, local: LocalHistogram) -> None:
        """A histogram's bucket counts and sum moved by what ``local`` gained. prometheus-client has no
        public "observe n values at once": its (non-cumulative) bucket values and sum are added to
        directly, which is what ``observe`` does one value at a time; the bucket bounds are the same."""
        last = self._last.get(hist)
        if last is None:
            assert len(hist._upper_bounds) == len(local.counts), "bucket bounds differ"  # noqa: SLF001
            last = self._last[hist] = [[0] * len(local.counts), 0.0]
        counts, seen = local.counts, last[0]
        for i, n in enumerate(counts):
            if n != seen[i]:
                hist._buckets[i].inc(n - seen[i])  # noqa: SLF001
                seen[i] = n
        if local.sum != last[1]:
            hist._sum.inc(local.sum - last[1])  # noqa: SLF001
            last[1] = local.sum

    # -- HTTP ---------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        body = self.exposition()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    @web.middleware
    async def count_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost: every request by route template and final status (one dict addition)."""
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            info = request.match_info
            route = info.route.resource.canonical if info.route.resource is not None else "unmatched"
            key = (route, status)
            self.http_counts[key] = self.http_counts.get(key, 0) + 1

    @web.middleware
    async def count_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Innermost: a Redis or database failure of a handler, before the error middleware answers it."""
        try:
            return await handler(request)
        except Exception as exc:
            if error_kind(exc) is not None:
                self.http_errors.seen("http", exc)
            raise


METRICS: web.AppKey[Metrics] = web.AppKey("metrics")


def setup(app: web.Application) -> None:
    """``GET /metrics``, the request counters, and the flush / sample tasks (after the gateway and
    settlement components: their counters are what it reads)."""
    metrics = Metrics()
    app[METRICS] = metrics
    app.middlewares.insert(0, metrics.count_requests)
    app.middlewares.append(metrics.count_errors)
    app.router.add_get("/metrics", metrics.handle)
    app.cleanup_ctx.append(_feeding)


async def _feeding(app: web.Application) -> AsyncIterator[None]:
    from .appkeys import COMMERCE, CORE, GATEWAY, HUB, SETTLEMENT

    metrics = app[METRICS]
    metrics.watch_gateway(app[HUB], app[GATEWAY], app[COMMERCE].checkout.batcher.meter)
    settlement = app.get(SETTLEMENT)
    if settlement is not None:
        metrics.watch_settlement(settlement.worker, settlement.reaper, app[CORE].redis)
    await metrics.start()
    try:
        yield
    finally:
        await metrics.aclose()


async def serve_settle(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """``livesale settle --metrics-port``: a small aiohttp server with ``GET /metrics`` only."""
    app = web.Application()
    app.router.add_get("/metrics", metrics.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner

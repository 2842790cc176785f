"""The Python client package (livesale_client) against a real app: real sockets, real Redis/Valkey, real SQL.

The asyncio client joins, gets typed events, buys, pays, releases and checks out (through the sandbox
provider); a connection cut by a TCP proxy between client and server is resumed without losing a
sequenced event; a buy whose answer was lost is sent again with the same rid and answers the same hold;
the clock offset is sane; the synchronous facade does the core flow in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from conftest import timeout
from gateway_helpers import Api, host_token, setup_room, viewer
from livesale_client import (
    Announcement, BuyResult, JoinRefused, LiveSaleError, Message, OrderConfirmed, PaymentStarted, Resumed, SaleOpen,
    SaleScheduled, Snapshot, Tick,
)
from livesale_client import aio, sync
from server.app import create_app
from server.config import Settings
from server.sandbox_pay import SandboxPay

pytestmark = pytest.mark.timeout(120, method="thread")

M = TypeVar("M", bound=Message)
FAST = {"reconnect_steps": (0.05, 0.1, 0.2), "request_timeout": 20.0}


class Proxy:
    """A TCP proxy in front of the server: ``cut()`` severs every connection through it (the client sees
    the socket die, as on a network drop); ``mute`` swallows what the server sends (a lost answer)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mute = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.accepted = 0
        self.url = ""

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self.url

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    if downstream and self.mute:
                        continue
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def cut(self) -> None:
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Env:
    def __init__(self, client: Any, settings: Settings, room: str) -> None:
        self.client = client
        self.api = Api(client)
        self.settings = settings
        self.room = room
        self.host = host_token(settings.secret)
        self.url = str(client.make_url("/"))
        self.port = client.server.port

    async def launch(self, units: int = 5, limit: int = 5, starts_in_s: int = 0) -> str:
        sale = await self.api.ok("POST", f"/api/rooms/{self.room}/sales", self.host,
                                 {"product_id": "p0", "units": units, "per_user_limit": limit, "starts_in_s": starts_in_s,
                                  "duration_s": 300, "hold_ttl_s": 120}, 201)
        return str(sale["sale_id"])

    async def announce(self, text: str) -> None:
        await self.api.ok("POST", f"/api/rooms/{self.room}/actions/announce", self.host, {"text": text}, 200)

    async def sale(self, sale_id: str) -> dict[str, Any]:
        return dict(await self.api.ok("GET", f"/api/sales/{sale_id}", status=200))


async def make_env(aiohttp_client: Any, settings: Settings, room: str) -> Env:
    client = await aiohttp_client(create_app(settings.replace(tick_ms=50, settle_block_ms=100)))
    env = Env(client, settings, room)
    await setup_room(env.api, env.host, room, products=1)
    await env.api.ok("POST", f"/api/rooms/{room}/actions/go_live", env.host, {}, 200)
    return env


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings, uid: str) -> Env:
    return await make_env(aiohttp_client, settings, uid)


@pytest.fixture
async def proxy(env: Env) -> AsyncIterator[Proxy]:
    p = Proxy(env.port)
    await p.start()
    yield p
    await p.close()


class Collector:
    """Reads a client's events in the background; ``wait`` for one matching, with a timeout."""

    def __init__(self, client: aio.LiveSaleClient) -> None:
        self.events: list[Message] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(client))

    async def _read(self, client: aio.LiveSaleClient) -> None:
        async for ev in client.events():
            self.events.append(ev)
            self.changed.set()

    async def wait(self, kind: type[M], pred: Callable[[M], bool] = lambda _m: True, wait: float = 10.0) -> M:
        async def until() -> M:
            while True:
                for ev in self.events:
                    if isinstance(ev, kind) and pred(ev):
                        return ev
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(until(), timeout(wait))

    def of(self, kind: type[M]) -> list[M]:
        return [ev for ev in self.events if isinstance(ev, kind)]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_join_events_buy_pay_release(env: Env) -> None:
    token, user = viewer(env.settings.secret, "Ana")
    async with aio.connect(env.url, room=env.room, token=token, **FAST) as live:
        seen = Collector(live)
        snap = await seen.wait(Snapshot)
        assert snap.room["room_id"] == env.room and snap.you and snap.you["user"] == user
        assert live.you == snap.you and live.epoch == snap.epoch and live.seq == snap.seq
        assert live.limits["payments"] == "instant"
        sale = await env.launch(units=5, limit=3, starts_in_s=1)
        scheduled = await seen.wait(SaleScheduled, lambda e: e.sale["sale_id"] == sale)
        assert scheduled.sale["starts_at"] > live.server_now() - 1000
        opened = await seen.wait(SaleOpen, lambda e: e.sale["sale_id"] == sale)
        assert opened.seq is not None and opened.epoch == live.epoch

        first = await live.buy(sale)
        assert isinstance(first, BuyResult) and first.reserved and first.hold and first.pay_by, first
        assert first.units_left == 4 and first.sale == sale
        paid = await live.pay(first.hold)
        assert paid.confirmed and paid.order == first.hold, paid
        order = await seen.wait(OrderConfirmed, lambda e: e.order_id == first.hold, wait=20)
        assert order.order["qty"] == 1

        second = await live.buy(sale, 2)
        assert second.reserved and second.qty == 2
        released = await live.release(second.hold or "")
        assert released.code == "RELEASED" and released.hold == second.hold
        third = await live.buy(sale, 3)
        assert third.code == "LIMIT", third  # 1 bought + 3 > 3 per user

        await env.announce("hello room")
        ann = await seen.wait(Announcement, lambda e: e.text == "hello room")
        assert ann.seq == live.seq or (live.seq or 0) >= (ann.seq or 0)
        # ticks carry units only when they changed since the last tick (4 -> 2 -> 4 inside one tick: none
        # at all): the latest tick that carries the sale's units says the 4 left, once the ticks caught up
        async def latest_units_are_4() -> Tick:
            while True:
                ticks = [e for e in seen.events if isinstance(e, Tick) and sale in (e.units or {})]
                if ticks and (ticks[-1].units or {}).get(sale) == 4:
                    return ticks[-1]
                seen.changed.clear()
                await seen.changed.wait()
        tick = await asyncio.wait_for(latest_units_are_4(), timeout(10))
        assert tick.units is not None and tick.units[sale] == 4

        with pytest.raises(LiveSaleError) as err:  # instant mode: checkout is refused, typed
            await live.checkout(first.hold)
        assert err.value.code == "NO_PROVIDER" and err.value.message
        await seen.stop()
    assert live.state == "closed"


async def test_refused_join_is_typed(env: Env) -> None:
    with pytest.raises(JoinRefused) as err:
        await aio.connect(env.url, room=env.room + "-nope", **FAST)
    assert err.value.code == "NOT_FOUND"


async def test_resume_after_the_connection_is_cut(env: Env, proxy: Proxy) -> None:
    token, _user = viewer(env.settings.secret, "Bo")
    async with aio.connect(proxy.url, room=env.room, token=token, **FAST) as live:
        seen = Collector(live)
        await env.announce("before")
        before = await seen.wait(Announcement, lambda e: e.text == "before")
        proxy.cut()
        texts = [f"missed-{i}" for i in range(5)]
        for text in texts:  # published while the client is away (or before it noticed)
            await env.announce(text)
        resumed = await seen.wait(Resumed)
        assert resumed.epoch == before.epoch and resumed.from_seq == before.seq
        await seen.wait(Announcement, lambda e: e.text == texts[-1])
        got = [e for e in seen.of(Announcement) if e.text in texts]
        assert [e.text for e in got] == texts  # none lost, none twice, in order
        assert [e.seq for e in got] == list(range((before.seq or 0) + 1, (before.seq or 0) + 6))
        assert len(seen.of(Snapshot)) == 1  # resumed, not re-snapshotted
        assert live.connections == 2 and proxy.accepted == 2
        await seen.stop()


async def test_lost_buy_answer_is_retried_with_the_same_rid(env: Env, proxy: Proxy) -> None:
    token, _user = viewer(env.settings.secret, "Cy")
    sale = await env.launch(units=3, limit=3)
    async with aio.connect(proxy.url, room=env.room, token=token, **FAST) as live:
        proxy.mute = True  # the server's answer to the buy never arrives
        buying = asyncio.create_task(live.buy(sale, rid="tap-" + secrets.token_hex(4)))

        async def reserved() -> None:
            while (await env.sale(sale))["held"] != 1:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(reserved(), timeout(10))  # the reservation was made server-side
        assert not buying.done()
        proxy.mute = False
        proxy.cut()  # the client reconnects, resumes and sends the same rid again
        result = await asyncio.wait_for(buying, timeout(20))
        assert result.reserved and result.hold
        assert live.connections == 2
        counters = await env.sale(sale)
        assert counters["held"] == 1 and counters["units_left"] == 2, counters  # reserved once
        again = await live.buy(sale, rid=result.rid)  # and the same rid once more: the same hold
        assert again.reserved and again.hold == result.hold
        assert (await env.sale(sale))["held"] == 1


async def test_clock_offset_is_sane(env: Env) -> None:
    async with aio.connect(env.url, room=env.room, **FAST) as live:
        clock = await live.wait_clock(timeout(10))
        assert clock.samples == 5 and clock.synced
        assert clock.rtt is not None and 0 <= clock.rtt < 1000
        assert abs(clock.offset) < 250, clock.offset  # same host: the server's clock is ours
        assert abs(live.server_now() - (await _server_time(env))) < 500


async def _server_time(env: Env) -> float:
    body = await env.api.ok("GET", "/api/time", status=200)
    return float(body["server_time"])


async def test_sync_facade_core_flow(env: Env) -> None:
    token, user = viewer(env.settings.secret, "Di")
    sale = await env.launch(units=4, limit=4)

    def flow() -> dict[str, Any]:
        seen: list[Message] = []
        with sync.connect(env.url, room=env.room, token=token, on_event=seen.append, **FAST) as live:
            assert live.you and live.you["user"] == user
            bought = live.buy(sale, 2)
            assert bought.reserved and bought.hold, bought
            paid = live.pay(bought.hold)
            assert paid.confirmed, paid
            other = live.buy(sale)
            released = live.release(other.hold or "")
            assert released.code == "RELEASED"
            same = live.buy(sale, 2, rid=bought.rid)
            assert same.hold == bought.hold  # idempotent by rid
            assert live.wait_clock(10) and live.clock.synced
            events = list(live.events(timeout=0.2))
        return {"bought": bought, "seen": seen, "events": events, "state": live.state}

    out = await asyncio.wait_for(asyncio.to_thread(flow), timeout(60))
    assert out["state"] == "closed"
    kinds = {type(e).__name__ for e in out["seen"]}
    assert {"Snapshot", "BuyResult", "PayResult", "ReleaseResult"} <= kinds, kinds
    assert any(isinstance(e, Snapshot) for e in out["events"])
    counters = await env.sale(sale)
    assert counters["sold"] == 2 and counters["held"] == 0 and counters["units_left"] == 2, counters


# -- checkout through the sandbox provider ---------------------------------------------------------------

@pytest.fixture
async def sandbox_env(aiohttp_client: Any, settings: Settings, uid: str) -> AsyncIterator[Env]:
    secret = secrets.token_urlsafe(32)
    sandbox = SandboxPay(secret)
    runner = web.AppRunner(sandbox.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    s = settings.replace(payment_mode="sandbox", payment_webhook_secret=secret, sandbox_url=url)
    env = await make_env(aiohttp_client, s, uid)
    sandbox.webhook_url = str(env.client.make_url("/api/payments/webhook/sandbox"))
    try:
        yield env
    finally:
        await runner.cleanup()


async def test_checkout_through_the_sandbox(sandbox_env: Env) -> None:
    env = sandbox_env
    token, _user = viewer(env.settings.secret, "Eve")
    sale = await env.launch(units=2, limit=2)
    async with aio.connect(env.url, room=env.room, token=token, **FAST) as live:
        seen = Collector(live)
        assert live.limits["payments"] == "sandbox"
        bought = await live.buy(sale)
        assert bought.reserved and bought.hold
        refused = await live.pay(bought.hold)
        assert refused.code == "PAYMENT_REQUIRED"
        started = await live.checkout(bought.hold)
        assert isinstance(started, PaymentStarted) and started.provider == "sandbox" and started.redirect_url
        assert started.hold == bought.hold and started.currency == "EUR"
        async with aiohttp.ClientSession() as s:
            async with s.post(started.redirect_url, data={"action": "pay"},
                              headers={"Accept": "application/json"}) as r:
                assert (await r.json())["status"] == "succeeded"
        await seen.wait(OrderConfirmed, lambda e: e.order_id == bought.hold, wait=20)
        with pytest.raises(LiveSaleError) as err:
            await live.checkout(bought.hold)
        assert err.value.code == "ALREADY_CONFIRMED"
        await seen.stop()


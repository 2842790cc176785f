"""The asyncio client (on ``websockets``): join, auto-resume, typed events, requests by rid.

::

    async with connect("http://127.0.0.1:8080", room="demo", token=token) as live:
        async for event in live.events():
            if isinstance(event, SaleOpen):
                result = await live.buy(event.sale["sale_id"])

One owned task reads the socket and reconnects (backoff with equal jitter, 1-16 s) joining with
``resume {epoch, seq}``; one more per connection samples the clock. Requests are retried by the caller's
own coroutine, with the same rid: after a retryable ``error`` (``UNAVAILABLE``, ``INTERNAL``) a short
pause, after a lost connection the next join; at most ``RetryPolicy.max_attempts`` times, within the
request's timeout. Only requests the server deduplicates by rid (``core.IDEMPOTENT``) are sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from .clock import ClockSync, local_ms
from .codec import Codec, ws_url
from .core import BACKOFF_S, REPLY_OF, RetryPolicy, Step, backoff_delay, decide, new_rid
from .errors import ClientClosed, ConnectionLost, JoinRefused, LiveSaleError, RequestTimeout
from .messages import BuyResult, Message, Ok, PayResult, PaymentStarted, ReleaseResult, parse
from .session import Action, Session, SessionFacts

__all__ = ["LiveSaleClient", "connect"]

log = logging.getLogger(__name__)

EventCallback = Callable[[Message], None]


class LiveSaleClient(SessionFacts):
    """One viewer's (or host's) session in one room, across reconnects. ``start()`` (or ``connect()``)
    returns after the first join; ``close()`` ends it."""

    def __init__(self, url: str, *, room: str, token: str | None = None, protocol: str = "json",
                 request_timeout: float = 15.0, retry: RetryPolicy | None = None,
                 reconnect_steps: tuple[float, ...] = BACKOFF_S, clock_samples: int = 5,
                 open_timeout: float = 10.0, join_fields: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                 on_event: EventCallback | None = None, max_queue: int = 10_000) -> None:
        self.url = ws_url(url)
        self.codec = Codec(protocol)
        self.session = Session(room, token, join_fields)
        self.request_timeout = request_timeout
        self.retry = retry or RetryPolicy()
        self.reconnect_steps = reconnect_steps
        self.clock_samples = clock_samples
        self.open_timeout = open_timeout
        self.on_event = on_event
        self.state = "idle"  # idle | connecting | open | reconnecting | closed
        self.fatal: JoinRefused | None = None
        self.connections = 0   # sockets opened so far
        self.dropped_events = 0  # events dropped because the queue was full (nobody read them)
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(max_queue)
        self._ws: ClientConnection | None = None
        self._joined = asyncio.Event()
        self._closing = False  # closed, or the join was refused: no more connections
        self._close_started = False
        self._closed = asyncio.Event()
        self._first_join: asyncio.Future[None] | None = None
        self._waiters: dict[str, tuple[str, asyncio.Future[dict[str, Any] | None]]] = {}
        self._clock_wait: asyncio.Future[tuple[float, float, float, float]] | None = None
        self._clock_done = asyncio.Event()
        self._outbox: list[dict[str, Any]] = []
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- facts ---------------------------------------------------------------------------------------
    # clock, offset_ms, server_now, snapshot, you, limits, epoch, seq: SessionFacts (session.py)
    @property
    def joined(self) -> bool:
        return self._joined.is_set()

    async def wait_clock(self, timeout: float | None = None) -> ClockSync:
        """Wait for the clock samples of the current connection."""
        await asyncio.wait_for(self._clock_done.wait(), timeout)
        return self.session.clock

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self, timeout: float = 30.0) -> LiveSaleClient:
        """Connect and join; returns after the first ``snapshot`` / ``resumed``. Raises ``JoinRefused``
        (unknown room, bad token) or ``RequestTimeout`` (no join within ``timeout``: the client is closed)."""
        if self._runner is not None:
            raise RuntimeError("already started")
        self._first_join = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(), name=f"livesale-client {self.session.room}")
        try:
            await asyncio.wait_for(asyncio.shield(self._first_join), timeout)
        except TimeoutError:
            await self.close()
            raise RequestTimeout(message=f"no join within {timeout} s") from None
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close the socket, stop every task, fail what waits (``ClientClosed``), end ``events()``."""
        if self._close_started:
            await self._closed.wait()
            return
        self._close_started = True
        self._closing = True
        self._joined.set()  # wake requests waiting for a join: they see _closing
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        tasks = [t for t in (self._runner, *self._tasks) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._lost()
        if self._first_join is not None and not self._first_join.done():
            self._first_join.set_exception(self.fatal or ClientClosed(message="closed before the join"))
            self._first_join.exception()  # retrieved: no "never retrieved" warning
        self.state = "closed"
        self._put(None)
        self._closed.set()

    async def __aenter__(self) -> LiveSaleClient:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- events --------------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[Message]:
        """Every server message, typed, in order (not ``hello``, ``clock``, ``pong``; requests' answers
        too); ends when the client is closed."""
        while True:
            msg = await self._queue.get()
            if msg is None:
                self._put(None)  # for any other reader
                return
            yield msg

    def __aiter__(self) -> AsyncIterator[Message]:
        return self.events()

    # -- requests ------------------------------------------------------------------------------------
    async def request(self, type: str, fields: dict[str, Any] | None = None, *, reply: str | None = None,
                      rid: str | None = None, timeout: float | None = None) -> Message:
        """Send ``type`` with ``fields`` and a rid; wait for its reply (``reply``: its type, by default the
        request's own) and return it typed. Raises ``LiveSaleError`` on an ``error`` reply,
        ``RequestTimeout``, ``ConnectionLost`` or ``ClientClosed``. Sent once joined."""
        rid = rid or new_rid(type[:8])
        msg = {"type": type, **(fields or {}), "rid": rid}
        expect = reply or REPLY_OF.get(type, "ok")
        limit = self.request_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(self._attempts(type, msg, rid, expect), limit)
        except TimeoutError:
            raise RequestTimeout(message=f"no reply to {type} {rid} within {limit} s") from None

    async def _attempts(self, type: str, msg: dict[str, Any], rid: str, expect: str) -> Message:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            await self._joined.wait()
            ws = self._ws
            if self._closing:
                raise self.fatal or ClientClosed(message=f"client closed before the reply to {type}")
            if ws is None or not self._joined.is_set():
                await asyncio.sleep(0)
                continue
            attempt += 1
            fut: asyncio.Future[dict[str, Any] | None] = loop.create_future()
            self._waiters[rid] = (expect, fut)
            try:
                await ws.send(self.codec.encode(msg))
                answer = await fut
            except ConnectionClosed:
                answer = None
            finally:
                if self._waiters.get(rid, (None, None))[1] is fut:
                    del self._waiters[rid]
            if self._closing:
                raise ClientClosed(message=f"client closed before the reply to {type}")
            step = decide(type, answer, attempt, self.retry)
            if step is Step.RETURN:
                assert answer is not None
                return parse(answer)
            if step is Step.RAISE:
                if answer is None:
                    raise ConnectionLost(message=f"connection lost before the reply to {type} {rid}")
                raise LiveSaleError.from_reply(answer)
            if answer is not None:  # a retryable error: pause, then the same rid again
                await asyncio.sleep(self.retry.delay(attempt))

    async def buy(self, sale: str, qty: int = 1, *, rid: str | None = None,
                  timeout: float | None = None) -> BuyResult:
        """Reserve ``qty`` units: the ``buy_result`` (``code`` RESERVED with ``hold`` / ``pay_by``, SOLD_OUT,
        LIMIT, NOT_STARTED, ...). Keep ``rid`` to make "my tap on this sale" idempotent."""
        res = await self.request("buy", {"sale": sale, "qty": qty}, rid=rid, timeout=timeout)
        assert isinstance(res, BuyResult)
        return res

    async def pay(self, hold: str, *, coupon: str | None = None, rid: str | None = None,
                  timeout: float | None = None) -> PayResult:
        """Pay a hold (the ``instant`` payment mode): ``pay_result`` (CONFIRMED, PAYMENT_REQUIRED, ...)."""
        res = await self.request("pay", _hold(hold, coupon), rid=rid, timeout=timeout)
        assert isinstance(res, PayResult)
        return res

    async def checkout(self, hold: str, *, coupon: str | None = None, rid: str | None = None,
                       timeout: float | None = None) -> PaymentStarted:
        """Start the provider's payment of a hold: ``payment_started`` (open its ``redirect_url``)."""
        res = await self.request("checkout", _hold(hold, coupon), rid=rid, timeout=timeout)
        assert isinstance(res, PaymentStarted)
        return res

    async def release(self, hold: str, *, rid: str | None = None, timeout: float | None = None) -> ReleaseResult:
        res = await self.request("release", {"hold": hold}, rid=rid, timeout=timeout)
        assert isinstance(res, ReleaseResult)
        return res

    async def action(self, type: str, **fields: Any) -> Ok:
        """A host action (``launch_sale``, ``pin``, ``announce``, ...): its ``ok``."""
        res = await self.request(type, fields, reply="ok")
        assert isinstance(res, Ok)
        return res

    async def send(self, type: str, **fields: Any) -> None:
        """A message without a reply (``comment``, ``like``, ``view``); kept for the next join when not
        joined (the newest 200)."""
        msg = {"type": type, **fields}
        ws = self._ws
        if ws is not None and self._joined.is_set():
            try:
                await ws.send(self.codec.encode(msg))
                return
            except ConnectionClosed:
                pass
        self._outbox.append(msg)
        del self._outbox[:-200]

    async def comment(self, text: str) -> None:
        await self.send("comment", text=text)

    async def like(self, n: int = 1) -> None:
        await self.send("like", n=n)

    async def sync_clock(self, samples: int | None = None, timeout: float = 5.0) -> ClockSync:
        """Take ``samples`` clock samples now (one at a time) and keep the best; the client does it after
        every join by itself."""
        ws = self._ws
        for _ in range(samples or self.clock_samples):
            if ws is None or ws is not self._ws:
                break
            fut: asyncio.Future[tuple[float, float, float, float]] = asyncio.get_running_loop().create_future()
            self._clock_wait = fut
            try:
                await ws.send(self.codec.encode({"type": "clock", "t0": local_ms()}))
                t0, t1, t2, t3 = await asyncio.wait_for(fut, timeout)
            except (TimeoutError, ConnectionClosed):
                continue
            finally:
                self._clock_wait = None
            self.session.clock.add(t0, t1, t2, t3)
        return self.session.clock

    # -- the connection ------------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            self.state = "connecting" if self.connections == 0 else "reconnecting"
            resync = False
            try:
                async with ws_connect(self.url, subprotocols=[Subprotocol(self.codec.subprotocol)],
                                      compression=None, open_timeout=self.open_timeout, max_size=2**24) as ws:
                    self._ws = ws
                    self.connections += 1
                    await ws.send(self.codec.encode(self.session.join()))
                    async for frame in ws:
                        raw = self.codec.decode(frame)
                        if raw is None:
                            continue
                        out = self.session.receive(raw, local_ms())
                        if out.action is Action.JOINED:
                            attempt = 0
                        if out.action is Action.RESYNC:
                            self.session.resync()
                            resync = True
                            break
                        self._act(out, ws)
            except JoinRefused as exc:
                self.fatal = exc
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.debug("livesale client %s: %s", self.url, exc)
            finally:
                self._ws = None
                self._lost()
            if self.fatal is not None:
                if self._first_join is not None and not self._first_join.done():
                    self._first_join.set_exception(self.fatal)
                self.state = "closed"
                self._joined.set()
                self._closing = True
                self._put(None)
                return
            if self._closing:
                return
            if not resync:
                attempt += 1
                self.state = "reconnecting"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), backoff_delay(attempt, self.reconnect_steps))

    def _act(self, out: Any, ws: ClientConnection) -> None:
        action = out.action
        if action is Action.CLOCK:
            if self._clock_wait is not None and not self._clock_wait.done():
                self._clock_wait.set_result(out.clock)
            return
        if action is Action.IGNORE:
            return
        if action is Action.REFUSED:
            self._deliver(out.message)
            raise JoinRefused.from_reply(out.raw)
        if action is Action.JOIN_LATER:
            self._deliver(out.message)
            self._spawn(self._join_later(ws))
            return
        if action is Action.REPLY:
            rid = out.raw["rid"]
            waiting = self._waiters.get(rid)
            if waiting is not None and out.raw.get("type") in (waiting[0], "error") and not waiting[1].done():
                waiting[1].set_result(out.raw)
        self._deliver(out.message)
        if action is Action.JOINED:
            self.state = "open"
            self._joined.set()
            if self._first_join is not None and not self._first_join.done():
                self._first_join.set_result(None)
            self._clock_done.clear()
            self._spawn(self._after_join(ws))

    async def _after_join(self, ws: ClientConnection) -> None:
        outbox, self._outbox = self._outbox, []
        for msg in outbox:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self.codec.encode(msg))
        self.session.clock.reset()
        await self.sync_clock()
        self._clock_done.set()

    async def _join_later(self, ws: ClientConnection) -> None:
        await asyncio.sleep(1.0 + random.random())
        if ws is self._ws and not self.session.joined:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self.codec.encode(self.session.join()))

    def _lost(self) -> None:
        """The connection is gone: requests waiting on it learn it (they retry or fail)."""
        self.session.connection_lost()
        if not self._closing:
            self._joined.clear()
        for _expect, fut in list(self._waiters.values()):
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()
        if self._clock_wait is not None and not self._clock_wait.done():
            self._clock_wait.cancel()
        for t in list(self._tasks):
            t.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _deliver(self, msg: Message | None) -> None:
        if msg is None:
            return
        if self.on_event is not None:
            try:
                self.on_event(msg)
            except Exception:
                log.exception("livesale client: on_event failed on %s", msg.raw.get("type"))
        self._put(msg)

    def _put(self, msg: Message | None) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped_events += 1
        self._queue.put_nowait(msg)


def _hold(hold: str, coupon: str | None) -> dict[str, Any]:
    return {"hold": hold, **({"coupon": coupon} if coupon else {})}


class _Connect:
    """``connect(...)``: ``await`` it for a started client, or ``async with`` it (closed on exit)."""

    def __init__(self, client: LiveSaleClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    def __await__(self) -> Generator[Any, None, LiveSaleClient]:
        return self.client.start(self.timeout).__await__()

    async def __aenter__(self) -> LiveSaleClient:
        return await self.client.start(self.timeout)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.client.close()


def connect(url: str, *, room: str, token: str | None = None, timeout: float = 30.0, **options: Any) -> _Connect:
    """A client of ``room`` at ``url`` (``http(s)://host:port`` or ``ws(s)://host:port/ws``), started: joined
    once awaited. ``options``: those of ``LiveSaleClient``."""
    return _Connect(LiveSaleClient(url, room=room, token=token, **options), timeout)

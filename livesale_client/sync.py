"""The synchronous client (on ``websockets.sync.client``), the asyncio client's API without ``await``.

::

    with connect("http://127.0.0.1:8080", room="demo", token=token, on_event=print) as live:
        result = live.buy("s-1")
        if result.reserved:
            live.pay(result.hold)

A receiver thread reads the socket, reconnects (backoff with equal jitter) and joins with ``resume``; it
hands answers to the callers waiting on their rid and events to ``on_event`` (called on the receiver
thread: keep it short) and to the queue ``events()`` reads. Calls block the calling thread only, so many
threads can wait at once. Under gevent (locust) the monkey-patched threads, locks and sockets make the
receiver a greenlet.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from .clock import ClockSync, local_ms
from .codec import Codec, ws_url
from .core import BACKOFF_S, REPLY_OF, RetryPolicy, Step, backoff_delay, decide, new_rid
from .errors import ClientClosed, ConnectionLost, JoinRefused, LiveSaleError, RequestTimeout
from .messages import BuyResult, Message, Ok, PayResult, PaymentStarted, ReleaseResult, parse
from .session import Action, Outcome, Session, SessionFacts

__all__ = ["LiveSaleClient", "connect"]

log = logging.getLogger(__name__)

_LOST: dict[str, Any] = {}  # a slot's value when the connection went away before the reply


class _Slot:
    """One attempt's wait for a reply."""

    __slots__ = ("expect", "event", "value")

    def __init__(self, expect: str) -> None:
        self.expect = expect
        self.event = threading.Event()
        self.value: dict[str, Any] | None = None

    def set(self, value: dict[str, Any]) -> None:
        if not self.event.is_set():
            self.value = value
            self.event.set()


class LiveSaleClient(SessionFacts):
    """One session in one room, across reconnects; ``start()`` (or ``connect()``) returns after the first
    join, ``close()`` ends it. The options are the asyncio client's."""

    def __init__(self, url: str, *, room: str, token: str | None = None, protocol: str = "json",
                 request_timeout: float = 15.0, retry: RetryPolicy | None = None,
                 reconnect_steps: tuple[float, ...] = BACKOFF_S, clock_samples: int = 5,
                 open_timeout: float = 10.0, join_fields: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                 on_event: Callable[[Message], None] | None = None, max_queue: int = 10_000,
                 queue_events: bool = True) -> None:
        self.url = ws_url(url)
        self.codec = Codec(protocol)
        self.session = Session(room, token, join_fields)
        self.request_timeout = request_timeout
        self.retry = retry or RetryPolicy()
        self.reconnect_steps = reconnect_steps
        self.clock_samples = clock_samples
        self.open_timeout = open_timeout
        self.on_event = on_event
        self.queue_events = queue_events  # False: events go to on_event only
        self.state = "idle"
        self.fatal: JoinRefused | None = None
        self.connections = 0
        self.received = 0
        self.dropped_events = 0
        self._queue: queue.Queue[Message | None] = queue.Queue(max_queue)
        self._lock = threading.Lock()
        self._ws: ClientConnection | None = None
        self._joined = threading.Event()
        self._first = threading.Event()
        self._closing = False  # closed, or the join was refused: no more connections
        self._close_started = False
        self._closed = threading.Event()
        self._waiters: dict[str, _Slot] = {}
        self._clock_slot: _Slot | None = None
        self._clock_done = threading.Event()
        self._outbox: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None

    # -- facts ---------------------------------------------------------------------------------------
    # clock, offset_ms, server_now, snapshot, you, limits, epoch, seq: SessionFacts (session.py)
    @property
    def joined(self) -> bool:
        return self._joined.is_set() and not self._closing

    @property
    def closed(self) -> bool:
        return self._closing

    def wait_clock(self, timeout: float | None = None) -> bool:
        """Wait for the clock samples of the current connection; False on timeout."""
        return self._clock_done.wait(timeout)

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> LiveSaleClient:
        """Connect and join (returns after the first ``snapshot`` / ``resumed``); raises ``JoinRefused`` or
        ``RequestTimeout`` (the client is then closed)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=f"livesale-client {self.session.room}", daemon=True)
        self._thread.start()
        if not self._first.wait(timeout):
            self.close()
            raise RequestTimeout(message=f"no join within {timeout} s")
        if self.fatal is not None:
            self.close()
            raise self.fatal
        if self._closing:
            raise ClientClosed(message="closed before the join")
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Close the socket, stop the receiver, fail what waits (``ClientClosed``), end ``events()``."""
        with self._lock:
            if self._close_started:
                self._closed.wait(timeout)
                return
            self._close_started = True
            self._closing = True
        self._joined.set()
        self._first.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._lost()
        self.state = "closed"
        self._put(None)
        self._closed.set()

    def __enter__(self) -> LiveSaleClient:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- events --------------------------------------------------------------------------------------
    def events(self, timeout: float | None = None) -> Iterator[Message]:
        """The typed events in order (as the asyncio client's); ends when the client is closed, or after
        ``timeout`` seconds without one."""
        while True:
            try:
                msg = self._queue.get(timeout=timeout)
            except queue.Empty:
                return
            if msg is None:
                self._put(None)
                return
            yield msg

    def __iter__(self) -> Iterator[Message]:
        return self.events()

    # -- requests ------------------------------------------------------------------------------------
    def request(self, type: str, fields: dict[str, Any] | None = None, *, reply: str | None = None,
                rid: str | None = None, timeout: float | None = None) -> Message:
        """As ``aio.LiveSaleClient.request``: the typed reply; the same rid on every attempt."""
        rid = rid or new_rid(type[:8])
        msg = {"type": type, **(fields or {}), "rid": rid}
        expect = reply or REPLY_OF.get(type, "ok")
        limit = self.request_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        attempt = 0

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout(message=f"no reply to {type} {rid} within {limit} s")
            return remaining

        while True:
            if not self._joined.wait(left()):
                left()
                continue
            if self._closing:
                raise self.fatal or ClientClosed(message=f"client closed before the reply to {type}")
            ws = self._ws
            if ws is None:
                time.sleep(0.01)
                continue
            attempt += 1
            slot = _Slot(expect)
            with self._lock:
                self._waiters[rid] = slot
            try:
                try:
                    ws.send(self.codec.encode(msg))
                except (ConnectionClosed, OSError):
                    slot.set(_LOST)
                if not slot.event.wait(left()):
                    left()
            finally:
                with self._lock:
                    if self._waiters.get(rid) is slot:
                        del self._waiters[rid]
            if self._closing:
                raise self.fatal or ClientClosed(message=f"client closed before the reply to {type}")
            answer = None if slot.value is _LOST else slot.value
            step = decide(type, answer, attempt, self.retry)
            if step is Step.RETURN:
                assert answer is not None
                return parse(answer)
            if step is Step.RAISE:
                if answer is None:
                    raise ConnectionLost(message=f"connection lost before the reply to {type} {rid}")
                raise LiveSaleError.from_reply(answer)
            if answer is not None:
                time.sleep(min(self.retry.delay(attempt), max(0.0, deadline - time.monotonic())))
            else:  # wait for the receiver to see the loss before waiting for the next join
                while self._ws is ws and not self._closing and time.monotonic() < deadline:
                    time.sleep(0.01)

    def buy(self, sale: str, qty: int = 1, *, rid: str | None = None, timeout: float | None = None) -> BuyResult:
        res = self.request("buy", {"sale": sale, "qty": qty}, rid=rid, timeout=timeout)
        assert isinstance(res, BuyResult)
        return res

    def pay(self, hold: str, *, coupon: str | None = None, rid: str | None = None,
            timeout: float | None = None) -> PayResult:
        res = self.request("pay", _hold(hold, coupon), rid=rid, timeout=timeout)
        assert isinstance(res, PayResult)
        return res

    def checkout(self, hold: str, *, coupon: str | None = None, rid: str | None = None,
                 timeout: float | None = None) -> PaymentStarted:
        res = self.request("checkout", _hold(hold, coupon), rid=rid, timeout=timeout)
        assert isinstance(res, PaymentStarted)
        return res

    def release(self, hold: str, *, rid: str | None = None, timeout: float | None = None) -> ReleaseResult:
        res = self.request("release", {"hold": hold}, rid=rid, timeout=timeout)
        assert isinstance(res, ReleaseResult)
        return res

    def action(self, type: str, **fields: Any) -> Ok:
        res = self.request(type, fields, reply="ok")
        assert isinstance(res, Ok)
        return res

    def send(self, type: str, **fields: Any) -> None:
        """A message without a reply; kept for the next join when not joined (the newest 200)."""
        msg = {"type": type, **fields}
        ws = self._ws
        if ws is not None and self.joined:
            try:
                ws.send(self.codec.encode(msg))
                return
            except (ConnectionClosed, OSError):
                pass
        with self._lock:
            self._outbox.append(msg)
            del self._outbox[:-200]

    def comment(self, text: str) -> None:
        self.send("comment", text=text)

    def like(self, n: int = 1) -> None:
        self.send("like", n=n)

    def sync_clock(self, samples: int | None = None, timeout: float = 5.0) -> ClockSync:
        """Take clock samples now, one at a time (not on the receiver thread); done after each join."""
        ws = self._ws
        for _ in range(samples or self.clock_samples):
            if ws is None or ws is not self._ws or self._closing:
                break
            slot = _Slot("clock")
            self._clock_slot = slot
            try:
                ws.send(self.codec.encode({"type": "clock", "t0": local_ms()}))
            except (ConnectionClosed, OSError):
                break
            if slot.event.wait(timeout) and slot.value is not None and slot.value is not _LOST:
                v = slot.value
                self.session.clock.add(v["t0"], v["t1"], v["t2"], v["t3"])
            self._clock_slot = None
        return self.session.clock

    # -- the receiver --------------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._closing:
            self.state = "connecting" if self.connections == 0 else "reconnecting"
            resync = False
            try:
                with ws_connect(self.url, subprotocols=[Subprotocol(self.codec.subprotocol)], compression=None,
                                open_timeout=self.open_timeout, max_size=2**24) as ws:
                    self._ws = ws
                    self.connections += 1
                    if self._closing:
                        break
                    ws.send(self.codec.encode(self.session.join()))
                    for frame in ws:
                        raw = self.codec.decode(frame)
                        if raw is None:
                            continue
                        self.received += 1
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
                self.state = "closed"
                self._closing = True
                self._joined.set()
                self._first.set()
                self._put(None)
                return
            if self._closing:
                return
            if not resync:
                attempt += 1
                self.state = "reconnecting"
                self._closed.wait(backoff_delay(attempt, self.reconnect_steps))

    def _act(self, out: Outcome, ws: ClientConnection) -> None:
        action = out.action
        if action is Action.CLOCK:
            slot = self._clock_slot
            if slot is not None and out.clock is not None:
                t0, t1, t2, t3 = out.clock
                slot.set({"t0": t0, "t1": t1, "t2": t2, "t3": t3})
            return
        if action is Action.IGNORE:
            return
        if action is Action.REFUSED:
            self._deliver(out.message)
            assert out.raw is not None
            raise JoinRefused.from_reply(out.raw)
        if action is Action.JOIN_LATER:
            self._deliver(out.message)
            threading.Thread(target=self._join_later, args=(ws,), daemon=True).start()
            return
        if action is Action.REPLY and out.raw is not None:
            with self._lock:
                slot = self._waiters.get(out.raw["rid"])
            if slot is not None and out.raw.get("type") in (slot.expect, "error"):
                slot.set(out.raw)
        self._deliver(out.message)
        if action is Action.JOINED:
            self.state = "open"
            self._clock_done.clear()
            self._joined.set()
            self._first.set()
            with self._lock:
                outbox, self._outbox = self._outbox, []
            for msg in outbox:
                with contextlib.suppress(ConnectionClosed, OSError):
                    ws.send(self.codec.encode(msg))
            threading.Thread(target=self._after_join, name="livesale-clock", daemon=True).start()

    def _after_join(self) -> None:
        self.session.clock.reset()
        self.sync_clock()
        self._clock_done.set()

    def _join_later(self, ws: ClientConnection) -> None:
        time.sleep(1.0 + random.random())
        if ws is self._ws and not self.session.joined:
            with contextlib.suppress(ConnectionClosed, OSError):
                ws.send(self.codec.encode(self.session.join()))

    def _lost(self) -> None:
        self.session.connection_lost()
        if not self._closing:
            self._joined.clear()
        with self._lock:
            slots = list(self._waiters.values())
            self._waiters.clear()
        for slot in slots:
            slot.set(_LOST)
        clock = self._clock_slot
        if clock is not None:
            clock.set(_LOST)

    def _deliver(self, msg: Message | None) -> None:
        if msg is None:
            return
        if self.on_event is not None:
            try:
                self.on_event(msg)
            except Exception:
                log.exception("livesale client: on_event failed on %s", msg.raw.get("type"))
        if self.queue_events:
            self._put(msg)

    def _put(self, msg: Message | None) -> None:
        while True:
            try:
                self._queue.put_nowait(msg)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self.dropped_events += 1


def _hold(hold: str, coupon: str | None) -> dict[str, Any]:
    return {"hold": hold, **({"coupon": coupon} if coupon else {})}


def connect(url: str, *, room: str, token: str | None = None, timeout: float = 30.0, **options: Any) -> LiveSaleClient:
    """A started client of ``room`` at ``url`` (joined); use it in a ``with`` block to close it."""
    return LiveSaleClient(url, room=room, token=token, **options).start(timeout)

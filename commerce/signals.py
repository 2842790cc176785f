"""The recorder of interest signals (inventory/signal_log.py has the kinds and the format).

``record`` is synchronous and cheap (an append to a list: the buy path calls it); a flush task writes
what accumulated as ONE stream entry every ``flush_s`` (``XADD ls:signals``), so a gateway makes one
Redis call per flush whatever the rate of signals, and never writes the database. Signals are
observations, not acknowledged requests: if Redis is away the buffer keeps up to ``max_buffer``
signals and retries; past that the oldest are dropped and counted (``dropped``). ``aclose`` flushes.

``on_signal(signal)``, if set, sees every signal as it is recorded (the per-viewer shelf keeps its
affinity scores from it); it must not block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from inventory.signal_log import SIGNAL_STREAM, Signal, SignalKind, encode_batch

from .tasks import OwnedTasks

__all__ = ["Signals", "SignalKind", "viewer_key"]

log = logging.getLogger(__name__)

_TAP, _HELD, _SOLD_OUT = SignalKind.TAP._value_, SignalKind.HELD._value_, SignalKind.SOLD_OUT._value_
_new = tuple.__new__
_PER_ENTRY = 5000  # signals per stream entry at most (an entry stays well under a megabyte)


def viewer_key(user: str, device: str = "", session: str = "") -> str:
    """Who a signal is about: the token's user id, else the page's per-browser id, else the session."""
    if user:
        return user
    if device:
        return "b:" + device
    return "s:" + session if session else ""


class Signals:
    def __init__(self, redis: Redis, *, flush_s: float = 0.2, enabled: bool = True, max_buffer: int = 200_000,
                 stream: str = SIGNAL_STREAM) -> None:
        self.redis = redis
        self.flush_s = flush_s
        self.enabled = enabled
        self.max_buffer = max_buffer
        self.stream = stream
        self.on_signal: Callable[[Signal], None] | None = None
        self.recorded = 0
        self.dropped = 0
        self._buf: list[Signal] = []
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._closing = False
        self._tasks = OwnedTasks(log, "signal flush")

    def record(self, kind: SignalKind, user: str, room: str = "", *, sale: str = "", product: str = "",
               ref: str = "", detail: str = "", value: int = 0, at_ms: int | None = None) -> None:
        if not self.enabled or not user:
            return
        self._add((Signal(kind._value_, user, at_ms if at_ms is not None else int(time.time() * 1000), room, sale,
                          product, ref, detail, int(value)),))

    def decided(self, user: str, room: str, sale: str, hold: str | None, pay_by: int, sold_out: bool) -> None:
        """A decided buy's signals in one call (the buy path: one clock read, no keyword arguments): ``tap``,
        then ``held`` (the hold, its pay-by) or ``sold_out``; what two or three ``record`` calls would record."""
        if not self.enabled or not user:
            return
        now_ms = int(time.time() * 1000)
        tap = _new(Signal, (_TAP, user, now_ms, room, sale, "", "", "", 0))  # a NamedTuple without its __new__
        if hold:
            self._add((tap, _new(Signal, (_HELD, user, now_ms, room, sale, "", hold, "", int(pay_by)))))
        elif sold_out:
            self._add((tap, _new(Signal, (_SOLD_OUT, user, now_ms, room, sale, "", "", "", 0))))
        else:
            self._add((tap,))

    def _add(self, signals: tuple[Signal, ...]) -> None:
        """Buffer ``signals`` (the oldest dropped past ``max_buffer``) and show each to ``on_signal``."""
        buf = self._buf
        buf += signals
        self.recorded += len(signals)
        if len(buf) > self.max_buffer:
            cut = len(buf) - self.max_buffer
            del buf[:cut]
            self.dropped += cut
        if self.on_signal is not None:
            for s in signals:
                try:
                    self.on_signal(s)
                except Exception:  # a hook's bug must not fail the buy path
                    log.exception("signal hook failed")

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.enabled:
            self._tasks.spawn(self._loop())

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        await self._tasks.drain(5.0)
        await self._tasks.cancel(1.0)
        try:
            await self.flush()
        except Exception as exc:
            log.warning("signals: %d not written at shutdown: %s", len(self._buf), exc)

    async def flush(self) -> int:
        """Write what is buffered; returns how many signals were written. Flushes run one at a time (the
        loop's, a caller's, the last one at shutdown): each takes the buffer whole, so a signal is written
        once, and what a failed write did not send goes back in front of what arrived meanwhile."""
        async with self._flushing:
            taken, self._buf = self._buf, []
            written = 0
            try:
                while written < len(taken):
                    batch = taken[written:written + _PER_ENTRY]
                    await self.redis.xadd(self.stream, {"d": encode_batch(batch)})
                    written += len(batch)
            finally:
                if written < len(taken):
                    self._buf[:0] = taken[written:]
            return written

    async def _loop(self) -> None:
        delay = self.flush_s
        while not self._closing:
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._closing:
                return
            try:
                await self.flush()
                delay = self.flush_s
            except Exception as exc:  # Redis away: keep the buffer, back off
                delay = min(5.0, delay * 2)
                log.warning("signals flush failed (%d buffered): %s", len(self._buf), exc)

    def stats(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "dropped": self.dropped, "buffered": len(self._buf)}

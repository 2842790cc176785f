"""Signed webhook deliveries to the platform (docs/WEBHOOKS.md): the signature, and the ``Deliverer`` that
sends the due ones from SQL (``inventory/reengage.py`` ``deliveries``).

Every attempt is a POST of the stored body with ``X-Livesale-Delivery`` (the idempotency id, the same on
every retry), ``X-Livesale-Timestamp`` (unix seconds of this attempt) and ``X-Livesale-Signature:
v1=<hex HMAC-SHA256 over "<timestamp>.<delivery_id>.<raw body>">``. 2xx: sent; 4xx other than 408 and 429
(and 3xx: redirects are not followed): failed at once; 5xx, 408, 429 and connection errors: retried with an
exponential backoff (``backoff_s`` x 2^n, at most ``cap_s``, jittered) until ``attempts``, then failed.

Several processes may run a ``Deliverer`` over the same table: each claims a delivery with a conditional
UPDATE before sending it (``ReengageStore.claim_due``), so two never send the same attempt at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from typing import Any

import aiohttp

from inventory.reengage import FAILED, PENDING, SENT, Delivery, ReengageStore

from .tasks import Every, OwnedTasks

__all__ = ["DELIVERY_HEADER", "TIMESTAMP_HEADER", "SIGNATURE_HEADER", "sign", "signed_headers", "backoff_s",
           "outcome", "Deliverer"]

log = logging.getLogger(__name__)

DELIVERY_HEADER = "X-Livesale-Delivery"
TIMESTAMP_HEADER = "X-Livesale-Timestamp"
SIGNATURE_HEADER = "X-Livesale-Signature"
_RETRY_STATUSES = {408, 429}


def sign(secret: str, timestamp: int, delivery_id: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<delivery_id>.<body>``."""
    return hmac.new(secret.encode(), f"{timestamp}.{delivery_id}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, delivery_id: str, body: bytes, now_s: float) -> dict[str, str]:
    ts = int(now_s)
    return {"Content-Type": "application/json", DELIVERY_HEADER: delivery_id, TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: f"v1={sign(secret, ts, delivery_id, body)}", "User-Agent": "livesale-webhooks/1"}


def backoff_s(attempt: int, base_s: float, cap_s: float, rand: float) -> float:
    """The wait after the ``attempt``-th failed attempt (1, 2, ...): base x 2^(attempt-1), at most ``cap_s``,
    times a jitter factor in [0.8, 1.2) taken from ``rand`` in [0, 1)."""
    return min(cap_s, base_s * (1 << min(max(attempt - 1, 0), 30))) * (0.8 + 0.4 * rand)


def outcome(status: int | None) -> str:
    """``sent``, ``failed`` (not worth retrying) or ``retry`` for an HTTP status (None: no answer)."""
    if status is None or status >= 500 or status in _RETRY_STATUSES:
        return "retry"
    if 200 <= status < 300:
        return SENT
    return FAILED


class Deliverer:
    """Sends the due deliveries: every ``poll_s`` (the deliveries other processes queued, and retries whose
    time came), and at once when this process queues one (``kick``) or a retry of its own falls due."""

    def __init__(self, sql: ReengageStore, url: str, secret: str, attempts: int, *, backoff_s: float = 1.0,
                 cap_s: float = 300.0, timeout_s: float = 10.0, lease_s: float = 60.0, batch: int = 20,
                 poll_s: float = 1.0) -> None:
        self.sql = sql
        self.url = url
        self._secret = secret
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.cap_s = cap_s
        self.timeout_s = timeout_s
        self.lease_ms = int(lease_s * 1000)
        self.batch = batch
        self.stats = {"sent": 0, "failed": 0, "retried": 0}
        self._session: aiohttp.ClientSession | None = None
        self._every = Every(poll_s, self.run_due, log, "webhook deliveries")
        self._tasks = OwnedTasks(log, "webhook delivery")
        self._draining: asyncio.Task[Any] | None = None
        self._again = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        self._every.start()
        self.kick()  # what is due already (a restart)

    async def aclose(self) -> None:
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        await self._every.aclose()
        await self._tasks.drain(2.0)  # an attempt cut short here is claimed again once its lease lapses
        await self._tasks.cancel(1.0)
        if self._session is not None:
            await self._session.close()

    def kick(self) -> None:
        """Send what is due now, in the background (a round already running goes round once more)."""
        if self._closed or self._session is None:
            return
        self._again = True
        if self._draining is None or self._draining.done():
            self._draining = self._tasks.spawn(self._drain())

    async def _drain(self) -> None:
        while self._again and not self._closed:
            self._again = False
            await self.run_due()

    async def run_due(self) -> int:
        """Claim and send the due deliveries until none is left; returns how many attempts were made."""
        made = 0
        while not self._closed:
            claimed = await self.sql.claim_due(_now_ms(), self.lease_ms, self.batch)
            if not claimed:
                return made
            await asyncio.gather(*(self._attempt(d) for d in claimed))
            made += len(claimed)
        return made

    async def _attempt(self, d: Delivery) -> None:
        assert self._session is not None
        body = d.body.encode()
        status: int | None = None
        error = ""
        try:
            async with self._session.post(self.url, data=body, allow_redirects=False,
                                          headers=signed_headers(self._secret, d.delivery_id, body, time.time())) as r:
                status = r.status
                await r.content.read(4096)  # a little of the answer, so the connection can be reused
            if outcome(status) != SENT:
                error = f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # the kind of failure only: no address, URL or answer text (the URL may carry a token)
            errno = exc.errno if isinstance(exc, OSError) else None
            error = type(exc).__name__ + (f" (errno {errno})" if errno else "")
        verdict = outcome(status)
        tries = d.attempts + 1
        now = _now_ms()
        if verdict == "retry" and tries < self.attempts:
            wait = backoff_s(tries, self.backoff_s, self.cap_s, random.random())
            if await self.sql.record(d, PENDING, now + int(wait * 1000), status or 0, error, now):
                self.stats["retried"] += 1
                self._later(wait)
            return
        final = SENT if verdict == SENT else FAILED
        if await self.sql.record(d, final, now, status or 0, error, now):
            self.stats[final] += 1
            if final == FAILED:
                log.warning("webhook delivery %s failed after %d attempt(s): %s", d.delivery_id, tries, error)

    def _later(self, wait_s: float) -> None:
        """A retry of ours falls due in ``wait_s``: send it then (other processes' poll finds it too)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self.kick()
        handle = loop.call_later(wait_s + 0.005, fire)
        self._timers.add(handle)


def _now_ms() -> int:
    return int(time.time() * 1000)

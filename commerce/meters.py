"""Plain in-process counters for the hot paths (a click, a reserve batch, a failed request).

Counting here costs an int or a float addition and, for a histogram, one ``bisect``: no lock, no
Prometheus object, no I/O. ``server/metrics.py`` turns these into Prometheus values about once a
second and at every scrape (deltas since the last flush), so the gateway's CPU per click stays what
it was. Nothing here knows about Prometheus.
"""

from __future__ import annotations

import logging
import time
import traceback
from bisect import bisect_left

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["LocalHistogram", "BuyMeter", "BatchMeter", "ErrorMeter", "RareLog", "LATENCY_BUCKETS",
           "BATCH_SIZE_BUCKETS", "REDIS_BUCKETS", "error_kind"]

# click -> answer, seconds: a reservation is answered in about a millisecond on a quiet server
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# buys decided by one reserve.lua call (Batcher.max_batch is 256)
BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
# one reserve.lua call, seconds
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LocalHistogram:
    """Counts per bucket (``bounds`` ascending, finite; the last count is +Inf) and the sum: the same
    buckets a Prometheus histogram with these bounds has, not cumulative."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: Prometheus's `le`
        self.sum += value


class BuyMeter:
    """Every buy answer: how many per code, and how long from the gateway's receipt to the answer."""

    __slots__ = ("codes", "latency")

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.latency = LocalHistogram(LATENCY_BUCKETS)

    def answered(self, code: str, seconds: float) -> None:
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.latency.observe(seconds)


class BatchMeter:
    """Reserve batches: their sizes, the script call's duration, the calls Redis failed."""

    __slots__ = ("sizes", "seconds", "failures")

    def __init__(self) -> None:
        self.sizes = LocalHistogram(BATCH_SIZE_BUCKETS)
        self.seconds = LocalHistogram(REDIS_BUCKETS)
        self.failures = 0


def error_kind(exc: BaseException) -> str | None:
    """``redis`` or ``db`` for a failure of that engine (or of the network to it), else None."""
    if isinstance(exc, RedisError):
        return "redis"
    if isinstance(exc, SQLAlchemyError):
        return "db"
    if isinstance(exc, (ConnectionError, TimeoutError)):  # redis-py raises the builtins on a lost link
        return "redis"
    return None


class ErrorMeter:
    """Redis and database failures seen by a request path, by where (``ws``, ``http``)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}  # (kind, where) -> failures

    def seen(self, where: str, exc: BaseException) -> None:
        kind = error_kind(exc)
        if kind is not None:
            self.counts[(kind, where)] = self.counts.get((kind, where), 0) + 1


class RareLog:
    """A failover answers thousands of requests UNAVAILABLE in a second: log the first of each second, with how
    many were left out, instead of one line (and one traceback walk) per request."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._next = 0.0
        self._skipped = 0

    def note(self, kind: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        self._log.warning("%s answered UNAVAILABLE: %s (at %s; %d more in the last second)", kind, exc,
                          _where(exc), self._skipped)
        self._next, self._skipped = now + 1.0, 0


def _where(exc: BaseException) -> str:
    """The innermost frame of our own code an exception came through (for the log of a Redis failure)."""
    ours = [f for f in traceback.extract_tb(exc.__traceback__)
            if "/site-packages/" not in f.filename and "/lib/python" not in f.filename]
    return f"{ours[-1].filename.rsplit('/', 2)[-2]}/{ours[-1].name}:{ours[-1].lineno}" if ours else "?"

"""Scraping ``GET /metrics`` in tests: the text exposition parsed into {(sample name, labels): value}."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(session: aiohttp.ClientSession, base: str) -> Samples:
    async with session.get(base + "/metrics") as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain"), r.headers["Content-Type"]
        text = await r.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape_until(session: aiohttp.ClientSession, base: str, ok: Callable[[Samples], bool],
                       wait: float) -> Samples:
    """Scrape until ``ok`` holds (a worker flushes its counters about once a second), at most ``wait`` s;
    the last scrape either way."""
    async def poll() -> Samples:
        while True:
            s = await scrape(session, base)
            if ok(s):
                return s
            await asyncio.sleep(0.2)  # polling a condition (bounded by wait_for)
    try:
        return await asyncio.wait_for(poll(), wait)
    except TimeoutError:
        return await scrape(session, base)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


__all__ = ["scrape", "scrape_until", "value", "names", "Samples", "Any"]

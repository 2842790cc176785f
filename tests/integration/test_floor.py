"""loadtest/floor.py, tiny: 50 connections, 500 clicks/s for 1 s against each server kind (raw uvloop
Protocol, aiohttp, raw + orjson). Every click gets its answer, nothing else arrives, and the CPU and
latency fields are there and sane; the table has a row per kind."""

from __future__ import annotations

import math

import pytest

from loadtest import floor

pytestmark = pytest.mark.timeout(60, method="thread")


def test_frames_have_the_fixed_sizes() -> None:
    assert floor.CLICK[0] == 0x81 and floor.CLICK[1] == 0x80 | len(floor.CLICK_BODY)
    assert floor._unmask(floor.CLICK_MASK, floor.CLICK[6:]) == floor.CLICK_BODY
    assert floor.CLICK_LEN == 6 + len(floor.CLICK_BODY) and floor.ANSWER_LEN == 2 + len(floor.ANSWER_BODY)
    assert 50 <= len(floor.CLICK_BODY) <= 70 and 100 <= len(floor.ANSWER_BODY) <= 120


async def test_every_click_is_answered_on_each_kind() -> None:
    cfg = floor.plan(conns=50, rate=500, seconds=1, warm=0.5, kinds=list(floor.KINDS))
    res = await floor.run(cfg, log=print)
    rows = res["results"]
    assert [r["kind"] for r in rows] == list(floor.KINDS)
    for r in rows:
        assert r["sent"] == 500 and r["answers"] == r["sent"] and r["missing"] == 0, r
        assert r["stray_bytes"] == 0 and r["closed"] == 0, r
        assert r["warmup"]["answers"] == r["warmup"]["sent"] == 250, r
        for key in ("server_utime_s", "server_stime_s", "cpu_us_per_click", "kernel_us_per_click",
                    "user_us_per_click"):
            assert isinstance(r[key], float) and r[key] >= 0, (key, r)
        assert r["cpu_us_per_click"] == pytest.approx(r["kernel_us_per_click"] + r["user_us_per_click"], abs=0.2), r
        for key in ("p50_ms", "p99_ms", "max_ms", "answered_per_s"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] >= 0, (key, r)
        assert r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], r
    table = floor.table(rows)
    assert len(table) == 2 + len(rows) and table[0].startswith("| server | conns | offered/s |")

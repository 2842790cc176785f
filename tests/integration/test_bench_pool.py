"""``make bench ARGS="--only pool"``: the pool-backed vs plain checkout burst (loadtest/pool_ab.py).

A tiny live run of the step's own code path (a `livesale serve` subprocess on a private Valkey, one room,
the bench's stock pool opened with a merchant token minted from the secret, one plain and one pool-backed
burst of 200 buyers): both sell out without oversell, the pool-backed sale is drawn from the pool, the pool
audits clean, and both kinds get a CPU-per-click figure. Also the section's verdict and its doc splice
(one pool section, replaced in place, the rest of the document kept).
"""

from __future__ import annotations

import pytest

from loadtest import bench, pool_ab

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240, method="thread")]


def _machine() -> dict:
    return {"date": "2026-01-01 00:00 UTC", "cpu": "Test CPU", "cores": 2, "python": "3.11", "kernel": "6",
            "checkout": "abc1234"}


async def test_tiny_interleaved_run_sells_both_kinds_out_from_one_server() -> None:
    p = dict(pool_ab.plan(True), buyers=200, units=20, repeat=1, warmup=0)
    r = await bench.pool_runs(True, p)
    assert r["order"] == ["plain", "pool"] and not r["warmup"]
    plain, pool = r["runs"]["plain"][0], r["runs"]["pool"][0]
    for x in (plain, pool):
        assert pool_ab.complete(x), x
        assert x["results"] == x["clicks"] == 200 and x["codes"].get("RESERVED") == 20, x
        assert x["server_us_per_click"] and x["server_us_per_click"] > 0, x
        assert x["core_busy"] and x["loadavg_before"] >= 0
    assert pool["sale"].startswith(pool_ab.POOL_ID + "--") and pool["pool"] == pool_ab.POOL_ID
    assert "--" not in plain["sale"] and "pool" not in plain
    assert r["audit"]["ok"], r["audit"]
    assert r["audit"]["at_sales"] == 20  # the pool-backed sale's allocation (ended, its holds still out)
    assert r["cpu_ratio"] == round(pool["server_us_per_click"] / plain["server_us_per_click"], 3)

    sec = pool_ab.section(r, _machine(), "python -m loadtest.bench --only pool --quick")
    text = "\n".join(sec)
    assert sec[0] == pool_ab.START and sec[-1] == pool_ab.END
    assert pool["sale"] in text and plain["sale"] in text and "quick smoke run" in text


def _fake(cpu_plain: float, cpu_pool: float) -> dict:
    def runs(cpu: float, kind: str) -> list[dict]:
        return [{"sale": f"{kind}-{i}", "server_us_per_click": cpu + d, "p99_ms": 900.0, "clicks_per_s": 8000,
                 "results": 1000, "clicks": 1000, "joined": 1000, "codes": {"RESERVED": 100, "SOLD_OUT": 900},
                 "oversell": False, "consistent": True, "core_busy": {"0": 0.9, "1": 0.8}, "loadavg_before": 1.0}
                for i, d in enumerate((-5.0, 0.0, 5.0))]
    rs = {"plain": runs(cpu_plain, "plain"), "pool": runs(cpu_pool, "pool")}
    summ = {k: pool_ab.summarize(v) for k, v in rs.items()}
    ratio = round(summ["pool"]["cpu"] / summ["plain"]["cpu"], 3)
    return {"what": "checkout burst", "buyers": 1000, "units": 100, "repeat": 3, "quick": False,
            "order": ["plain", "pool"] * 3, "warmup": [], "runs": rs, "summary": summ, "cpu_ratio": ratio,
            "verdict": pool_ab.verdict(ratio)}


def test_verdict_and_doc_splice_replace_one_section() -> None:
    assert pool_ab.verdict(1.10).startswith("within 10%") and pool_ab.verdict(0.95).startswith("within 10%")
    assert pool_ab.verdict(1.11).startswith("**not within 10%**") and pool_ab.verdict(None) == "no result"
    doc = "# Benchmarks\n\n## Checkout\n\nx\n\n## Targets\n\n| t |\n"
    one = pool_ab.splice(doc, pool_ab.section(_fake(100.0, 104.0), _machine(), "python -m loadtest.bench"))
    assert one.count(pool_ab.START) == 1 and one.index(pool_ab.END) < one.index("## Targets")
    assert "| gateway CPU µs/click | 100.0 (95.0 / 100.0 / 105.0) | 104.0 (99.0 / 104.0 / 109.0) | 1.040 | " \
           "within 10% (+4%) |" in one
    two = pool_ab.splice(one, pool_ab.section(_fake(100.0, 125.0), _machine(), "python -m loadtest.bench"))
    assert two.count(pool_ab.START) == 1 and "**not within 10%** (+25%)" in two and "## Checkout" in two
    assert pool_ab.old_section(two)[0] == pool_ab.START and pool_ab.old_section("# Benchmarks\n") == []
    t = pool_ab.target(_fake(100.0, 104.0))
    assert t is not None and t[2] and "1.040x" in t[1]

"""``make bench``'s coupon-claim row (issue "Interaction", Done-when): the checkout step runs the buy
burst and then the same buyers tap "claim" on a coupon drop, on one server in one run. A tiny live run
of that code path (quick mode: 1,000 buyers on a private Valkey): the claim row answers every click, at
most the drop's coupons are claimed and the count agrees with the drop, and it has its throughput, p99
and gateway CPU per click beside the buy burst's; the document's checkout table prints the row."""

from __future__ import annotations

import pytest

from loadtest import bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]


async def test_claim_row_beside_the_buy_burst_in_one_run() -> None:
    r = await bench.checkout_runs(True, only=("burst", "claim"))
    burst, claim = r["burst"], r["claim"]
    assert burst["codes"].get("RESERVED") == 100 and not burst["oversell"], burst
    assert claim["mode"] == "claim" and claim["results"] == claim["clicks"] == 1000, claim
    assert claim["codes"] == {"CLAIMED": 100, "ALL_CLAIMED": 900}, claim["codes"]
    assert not claim["oversell"] and claim["consistent"], claim
    assert claim["drop_after"]["claimed"] == 100 and claim["drop_after"]["state"] == "claimed_out"
    assert claim["clicks_per_s"] > 0 and claim["p99_ms"] is not None and claim["server_us_per_click"] > 0

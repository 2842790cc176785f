"""`livesale serve` with LIVESALE_WORKERS=2: one scrape of either gateway child adds up both children
(prometheus-client multiprocess mode) and the settling parent (its settlement gauges)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrics_helpers import value
from server.config import Settings
from test_metrics import UNITS, VIEWERS, burst_and_scrape

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180, method="thread")]


async def test_one_scrape_sums_both_workers(settings: Settings, redis_url: str, database_url: str,
                                            tmp_path: Path, uid: str) -> None:
    from proc_helpers import free_port

    port = free_port()
    data = tmp_path / "d"
    data.mkdir()
    env = {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(data), "LIVESALE_SECRET": settings.secret,
           "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_WORKERS": "2",
           "LIVESALE_BUY_RATE": "100", "LIVESALE_PAYMENT_MODE": "instant"}
    codes, s, server = await burst_and_scrape(settings, env, uid, listening=2)
    try:
        assert codes == {"RESERVED": UNITS, "SOLD_OUT": VIEWERS - UNITS}, codes
        assert value(s, "livesale_buy_results_total", code="RESERVED") == UNITS
        assert value(s, "livesale_buy_results_total", code="SOLD_OUT") == VIEWERS - UNITS
        assert value(s, "livesale_buy_latency_seconds_count") == VIEWERS
        # the buys landed on both children (the kernel spreads the sockets): both wrote counters
        pids = {f.stem.rsplit("_", 1)[1] for f in (data / "prometheus").glob("histogram_*.db")}
        assert len(pids) >= 2, sorted(p.name for p in (data / "prometheus").iterdir())
        # the parent settles: its gauges are in a child's scrape
        assert ("livesale_settlement_lag_seconds", ()) in s and ("livesale_dead_letter_entries", ()) in s
    finally:
        assert await server.stop(30) == 0, server.lines[-30:]

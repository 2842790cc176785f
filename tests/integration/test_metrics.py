"""``GET /metrics`` of a real `livesale serve` process (settlement in it) after a burst of buys over real
WebSocket sockets (tests/viewer_burst_proc.py, several OS processes): the counts equal the answers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from commerce.identity import mint_viewer_token
from conftest import timeout
from gateway_helpers import Api, host_token, setup_room
from metrics_helpers import names, scrape, scrape_until, value
from proc_helpers import ServerProc, free_port, viewer_burst
from server.app import create_app
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180, method="thread")]

UNITS, VIEWERS, PROCS = 15, 40, 2


async def burst_and_scrape(settings: Settings, env: dict[str, str], uid: str, listening: int = 1) -> tuple[
        Counter[str], dict[tuple[str, tuple[tuple[str, str], ...]], float], ServerProc]:
    """A sale of UNITS, VIEWERS viewers tapping buy at once; then the scrape once every answer is counted."""
    server = await ServerProc.start(env)
    try:
        await server.wait_lines("livesale listening on", listening)
        base = f"http://127.0.0.1:{env['LIVESALE_PORT']}"
        async with aiohttp.ClientSession() as session:
            api = Api(session, base)
            host = host_token(settings.secret)
            room = uid + "m"
            await setup_room(api, host, room, products=1)
            await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
            sale = await api.ok("POST", f"/api/rooms/{room}/sales", host,
                                {"product_id": "p0", "units": UNITS, "per_user_limit": 1,
                                 "starts_in_s": 0, "duration_s": 120}, 201)
            viewers = [(mint_viewer_token(settings.secret, f"v{i}", user=f"{uid}-v{i}")[0], "v")
                       for i in range(VIEWERS)]
            results = await viewer_burst(base, room, sale["sale_id"], viewers, PROCS)
            codes = Counter(code for _, code, _, _ in results)

            def counted(s: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> bool:
                return value(s, "livesale_buy_latency_seconds_count") >= len(results)
            samples = await scrape_until(session, base, counted, timeout(10))
    except BaseException:
        await server.stop(30)
        raise
    return codes, samples, server


async def test_a_burst_of_buys_is_counted_exactly(settings: Settings, redis_url: str, database_url: str,
                                                  tmp_path: Path, uid: str) -> None:
    port = free_port()
    (tmp_path / "d").mkdir()
    env = {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(tmp_path / "d"), "LIVESALE_SECRET": settings.secret,
           "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_BUY_RATE": "100",
           "LIVESALE_PAYMENT_MODE": "instant"}
    codes, s, server = await burst_and_scrape(settings, env, uid)
    try:
        assert codes == {"RESERVED": UNITS, "SOLD_OUT": VIEWERS - UNITS}, codes
        assert value(s, "livesale_buy_results_total", code="RESERVED") == UNITS
        assert value(s, "livesale_buy_results_total", code="SOLD_OUT") == VIEWERS - UNITS
        assert value(s, "livesale_buy_latency_seconds_count") == VIEWERS
        assert value(s, "livesale_buy_latency_seconds_bucket", le="+Inf") == VIEWERS
        assert 0 < value(s, "livesale_buy_latency_seconds_sum") < VIEWERS * 10
        assert value(s, "livesale_reserve_batch_size_sum") == VIEWERS  # every buy in exactly one batch
        batches = value(s, "livesale_reserve_batch_size_count")
        assert 1 <= batches <= VIEWERS and value(s, "livesale_reserve_redis_seconds_count") == batches
        assert value(s, "livesale_joins_total", kind="snapshot") >= VIEWERS
        assert value(s, "livesale_events_total", lane="critical") >= 1  # the sale's events at least
        assert value(s, "livesale_deliveries_total", lane="critical") >= 1  # +n per fan-out to n sockets
        assert value(s, "livesale_http_requests_total", route="/api/rooms/{room}/sales", status="201") == 1
        assert ("livesale_settlement_lag_seconds", ()) in s and ("livesale_dead_letter_entries", ()) in s
        assert all(n.startswith("livesale_") for n in names(s)), sorted(names(s))
        assert value(s, "livesale_redis_errors_total", where="reserve") == 0
    finally:
        assert await server.stop(30) == 0, server.lines[-30:]


async def test_metrics_off_has_no_route(settings: Settings) -> None:
    app = create_app(settings.replace(metrics=False))
    assert "/metrics" not in {r.canonical for r in app.router.resources()}
    app = create_app(settings)
    assert "/metrics" in {r.canonical for r in app.router.resources()}

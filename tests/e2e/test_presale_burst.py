"""A pre-sale under a real multi-process burst (issue "Goods", Done-when): 2,000 viewers on several OS
processes tap buy at once on a pre-sale of 100 units drawn from a pool; exactly 100 get a hold and pay
its deposit, nobody more. Nobody pays the balance: when the balance window closes, every deposit hold
expires, each deposit's rule is applied once, and the 100 units return to the pool exactly once
(the pool is back to its opening stock, the ledger's returns sum to 100, the audit balances)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from commerce.identity import mint_merchant_token, mint_viewer_token
from conftest import timeout
from gateway_helpers import Api, host_token
from inventory.presales import DepositStore
from inventory.store import Store
from proc_helpers import ServerProc, free_port, viewer_burst
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]

UNITS, VIEWERS, PROCS, POOL_UNITS = 100, 2000, 8, 150


async def test_presale_burst_takes_at_most_its_units_and_unpaid_balances_return_once(
        settings: Settings, redis_url: str, database_url: str, tmp_path: Path, uid: str) -> None:
    port = free_port()
    (tmp_path / "d").mkdir()
    env = {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(tmp_path / "d"), "LIVESALE_SECRET": settings.secret,
           "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_WORKERS": "2",
           "LIVESALE_PAYMENT_MODE": "instant", "LIVESALE_BUY_RATE": "100", "LIVESALE_REAP_INTERVAL_MS": "100"}
    server = await ServerProc.start(env)
    try:
        await server.wait_lines("livesale listening on", 2)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            api = Api(session, base)
            host, merchant = host_token(settings.secret), mint_merchant_token(settings.secret, f"m-{uid}")
            pool, sku, room = f"pl{uid}", f"PHONE-{uid}", f"r{uid}"
            await api.ok("POST", "/api/pools", merchant, {"pool_id": pool, "sku": sku, "title": "Phone X",
                                                         "unit_price": 89900, "units": POOL_UNITS}, 201)
            await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Launch night"}, 201)
            await api.ok("POST", f"/api/rooms/{room}/products", host,
                         {"product_id": "p0", "sku": sku, "title": "Phone X", "unit_price": 89900}, 201)
            await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
            window_s = int(timeout(45))
            launched = time.monotonic()
            sale = await api.ok("POST", f"/api/rooms/{room}/sales", host,
                                {"product_id": "p0", "units": UNITS, "pool": pool, "per_user_limit": 1,
                                 "deposit": 10000, "deposit_rule": "refund", "duration_s": 600, "balance_in_s": 0,
                                 "balance_window_s": window_s, "hold_ttl_s": 600}, 201)
            sale_id = sale["sale_id"]
            tokens = [mint_viewer_token(settings.secret, f"v{i}", user=f"{uid}-v{i}")[0] for i in range(VIEWERS)]
            results = await viewer_burst(base, room, sale_id, [(t, str(i)) for i, t in enumerate(tokens)],
                                         PROCS, ready_s=120)
            assert len(results) == VIEWERS
            codes = Counter(code for _, code, _, _ in results)
            assert codes == {"RESERVED": UNITS, "SOLD_OUT": VIEWERS - UNITS}, codes  # never more than the units
            winners = [(tokens[int(kind)], hold) for kind, code, hold, _ in results if code == "RESERVED"]
            assert len({hold for _, hold in winners}) == UNITS

            # every winner pays the deposit (at once, over HTTP); nobody pays the balance
            async def deposit(token: str, hold: str) -> dict[str, Any]:
                return dict(await api.ok("POST", f"/api/holds/{hold}/pay", token, {}, 201))
            deposits = await asyncio.gather(*(deposit(t, h) for t, h in winners))
            assert all(d["status"] == "deposit" for d in deposits)
            view = await api.ok("GET", f"/api/sales/{sale_id}")
            assert view["held"] == UNITS and view["sold"] == 0 and view["units_left"] == 0, view
            await api.ok("POST", f"/api/rooms/{room}/actions/end_sale", host, {"sale": sale_id}, 200)
            pool_view = await api.ok("GET", f"/api/pools/{pool}", merchant)
            assert pool_view["available"] == POOL_UNITS - UNITS  # the deposit holds keep their units

            # the window closes: the reaper expires the 100 deposit holds; their units go back once
            async def pool_refilled() -> bool:
                return int((await api.ok("GET", f"/api/pools/{pool}", merchant))["available"]) >= POOL_UNITS
            deadline = launched + window_s + timeout(60)
            while not await pool_refilled():
                assert time.monotonic() < deadline, "the unpaid deposits' units never came back to the pool"
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # a few more reaper passes: nothing may come back twice
            final = await api.ok("GET", f"/api/pools/{pool}", merchant)
            assert final["available"] == POOL_UNITS and final["at_sales"] == 0, final
            report = await api.ok("GET", f"/api/pools/{pool}/audit", merchant)
            assert report["ok"], report["problems"]

            async def ledger_returns() -> int:
                entries = (await api.ok("GET", f"/api/pools/{pool}/ledger", merchant))["entries"]
                return sum(e["units"] for e in entries if e["kind"] == "return")
            deadline = time.monotonic() + timeout(15)
            while await ledger_returns() != UNITS:
                assert time.monotonic() < deadline, await ledger_returns()
                await asyncio.sleep(0.1)
        store = await Store.open(database_url)
        try:
            outcomes = await DepositStore(store).of_sale(sale_id)
        finally:
            await store.close()
        assert len(outcomes) == UNITS and {o.outcome for o in outcomes} == {"refunded"}
        assert {o.hold_id for o in outcomes} == {hold for _, hold in winners}
    finally:
        await server.stop(30)

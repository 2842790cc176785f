"""The default payment mode is the sandbox provider (issue 11, item 2): `livesale serve` on embedded
defaults (a subprocess: no REDIS_URL, DATABASE_URL, LIVESALE_PAYMENT_MODE, LIVESALE_SANDBOX_URL or
webhook secret) starts the bundled sandbox provider itself on a free port, keeps the webhook secret
in the data directory (0600), refuses `pay` (PAYMENT_REQUIRED) and takes payments through `checkout`
and the provider's hosted page. With `--workers 2` the parent runs the one sandbox the gateways share."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from conftest import timeout
from gateway_helpers import JSON, Api, WsClient, host_token, setup_room, viewer
from proc_helpers import ServerProc, free_port

pytestmark = pytest.mark.slow

SECRET = "payment-default-test-secret-0123456789"
UNSET = ("REDIS_URL", "DATABASE_URL", "LIVESALE_PAYMENT_MODE", "LIVESALE_SANDBOX_URL",
         "LIVESALE_PAYMENT_WEBHOOK_SECRET", "LIVESALE_SANDBOX_PORT", "LIVESALE_WORKERS")


async def _pay_through_the_sandbox(base: str, sandbox_url: str, room: str) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, base)
        host = host_token(SECRET)
        await setup_room(api, host, room, products=1, unit_price=2500)
        sale = await api.ok("POST", f"/api/rooms/{room}/sales", host,
                            {"product_id": "p0", "units": 2, "per_user_limit": 1}, 201)
        token, _user = viewer(SECRET, "Default Buyer")
        ws = await WsClient.connect(http, base + "/ws", JSON)
        try:
            hello = await ws.wait(lambda m: m["type"] == "hello", timeout(10))
            assert hello["limits"]["payments"] == "sandbox", hello
            assert (await ws.join(room, token, timeout=timeout(10)))["type"] == "snapshot"
            r = await ws.request({"type": "buy", "sale": sale["sale_id"], "qty": 1}, timeout(10))
            assert r["type"] == "buy_result" and r["code"] == "RESERVED", r
            hold = r["hold"]
            r = await ws.request({"type": "pay", "hold": hold}, timeout(10))  # confirm at once: refused
            assert r["type"] == "pay_result" and r["code"] == "PAYMENT_REQUIRED", r
            started = await ws.request({"type": "checkout", "hold": hold}, timeout(15))
            assert started["type"] == "payment_started" and started["provider"] == "sandbox", started
            assert started["amount"] == 2500 and started["currency"] == "EUR"
            page = started["redirect_url"]
            assert page.startswith(sandbox_url + "/pay/pay_"), (page, sandbox_url)
            async with http.get(page) as resp:  # the provider's hosted page
                assert resp.status == 200 and "Sandbox payment" in await resp.text()
            # the buyer presses Pay there: the signed webhook confirms the order
            async with http.post(page, data={"action": "pay"}, headers={"Accept": "application/json"}) as resp:
                paid = await resp.json()
            assert resp.status == 200 and paid["status"] == "succeeded", paid
            assert paid["webhook"]["status"] == 200, paid
            order = await ws.wait(lambda m: m.get("type") == "order_confirmed", timeout(15))
            assert order["order"]["order_id"] == hold and order["order"]["total"] == 2500, order
        finally:
            await ws.close()


async def test_serve_on_embedded_defaults_pays_through_the_bundled_sandbox(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = await ServerProc.start({"LIVESALE_DATA_DIR": str(data), "LIVESALE_PORT": "0", "LIVESALE_HOST": "127.0.0.1",
                                   "LIVESALE_SECRET": SECRET}, unset=UNSET)
    try:
        sandbox_line = (await proc.wait_lines("sandbox payment provider on", wait=90))[0]
        m = re.search(r"provider on (http://127\.0\.0\.1:\d+) ", sandbox_line)
        assert m, sandbox_line
        sandbox_url = m.group(1)
        base = (await proc.wait_lines("livesale listening on", wait=90))[0].split()[-1]
        key = data / "payment-webhook.key"
        assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_text().strip()) >= 32
        assert key.read_text().strip() not in "\n".join(proc.lines)  # never printed
        await _pay_through_the_sandbox(base, sandbox_url, "pd" + str(free_port()))
    finally:
        rc = await proc.stop()
    assert rc == 0, "\n".join(proc.lines[-30:])


async def test_workers_share_the_parents_sandbox(tmp_path: Path) -> None:
    port = free_port()
    proc = await ServerProc.start({"LIVESALE_DATA_DIR": str(tmp_path / "data"), "LIVESALE_HOST": "127.0.0.1",
                                   "LIVESALE_SECRET": SECRET}, args=("--workers", "2", "--port", str(port)),
                                  unset=UNSET)
    try:
        await proc.wait_lines("livesale listening on", count=2, wait=90)
        lines = await proc.wait_lines("sandbox payment provider on")
        assert len(lines) == 1, lines  # one sandbox, in the parent; the children were given its URL
        sandbox_url = lines[0].split("provider on ", 1)[1].split()[0]
        await _pay_through_the_sandbox(f"http://127.0.0.1:{port}", sandbox_url, "pw" + str(port))
    finally:
        rc = await proc.stop()
    assert rc == 0, "\n".join(proc.lines[-30:])

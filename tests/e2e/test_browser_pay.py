"""The viewer page pays through the sandbox provider's hosted page (issue 11, item 2): `livesale
serve` in LIVESALE_PAYMENT_MODE=sandbox (a subprocess), the sandbox provider's app in this process,
Chromium through Playwright. Buy -> Pay (checkout) -> the provider's page opens in a new window ->
its Pay button -> signed webhook -> the viewer page shows the order confirmed; the order is in SQL
with the provider's payment id."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from browser_helpers import (
    LAPTOP, PRICE, LiveServer, _free_port, _mint_host_token, _open, _shot, chromium, expect, launch_sale, ms,
    new_room,
)
from inventory.store import Store
from server.sandbox_pay import SandboxPay

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150, method="thread")]


@pytest.fixture
async def paid_server(redis_url: str, database_url: str, tmp_path: Any) -> AsyncIterator[tuple[LiveServer, SandboxPay]]:
    secret = secrets.token_urlsafe(32)
    port = _free_port()
    sandbox = SandboxPay(secret, f"http://127.0.0.1:{port}/api/payments/webhook/sandbox")
    runner = web.AppRunner(sandbox.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    sandbox_port = runner.addresses[0][1]
    env = {**os.environ, "LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(tmp_path),
           "LIVESALE_SECRET": "browser-test-" + secrets.token_hex(16), "REDIS_URL": redis_url,
           "DATABASE_URL": database_url, "LIVESALE_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
           "LIVESALE_GUEST_TOKENS": "1", "LIVESALE_GUEST_TOKEN_RATE": "100000",
           "LIVESALE_PAYMENT_MODE": "sandbox", "LIVESALE_PAYMENT_WEBHOOK_SECRET": secret,
           "LIVESALE_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}"}
    server = LiveServer(env=env, port=port, log_path=tmp_path / "server.log")
    server.start()
    try:
        server.host_token = _mint_host_token(env)
        yield server, sandbox
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.stop()
        await runner.cleanup()


async def test_viewer_pays_on_the_sandbox_page(paid_server: tuple[LiveServer, SandboxPay], database_url: str) -> None:
    live, sandbox = paid_server
    room = new_room(live, pin="p-earbuds")
    sale = launch_sale(live, room, "p-earbuds", units=3)
    errors: list[str] = []
    async with chromium() as browser:
        page = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
        buy = page.get_by_test_id("buy-button")
        await expect(buy).to_be_enabled(timeout=ms(15))
        await buy.click()
        await expect(page.get_by_test_id("status")).to_contain_text("pay within", timeout=ms(10))
        async with page.context.expect_page(timeout=ms(15)) as popup_info:
            await page.get_by_test_id("pay-button").click()
        pay_page = await popup_info.value  # opened blank during the tap, then sent to the provider's page
        await pay_page.wait_for_url(live.env["LIVESALE_SANDBOX_URL"] + "/pay/pay_*", timeout=ms(15))
        await expect(pay_page.locator("#amount")).to_have_text(f"{PRICE // 100}.{PRICE % 100:02d} EUR")
        # nothing is paid by opening the page
        await expect(page.get_by_test_id("status")).not_to_have_attribute("data-state", "confirmed")
        await pay_page.screenshot(path=_shot("sandbox-pay-page.png"))
        await pay_page.locator("#pay").click()
        await expect(pay_page.locator("#note")).to_contain_text("Payment received", timeout=ms(15))

        await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "confirmed", timeout=ms(15))
        await expect(page.get_by_test_id("status")).to_contain_text("Order confirmed")
        await page.screenshot(path=_shot("viewer-paid-through-sandbox.png"))
    assert not errors, errors

    [payment] = [p for p in sandbox.payments.values() if p.status == "succeeded"]
    assert payment.deliveries[-1]["status"] == 200, payment.deliveries
    store = await Store.open(database_url)
    try:
        order = await store.get_order(payment.reference)
        assert order is not None and order.sale_id == sale["sale_id"] and order.payment_ref == payment.payment_id
    finally:
        await store.close()

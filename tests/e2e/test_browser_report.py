"""Browser test for issue #11 item 6, show reports for brands, in a real Chromium.

A real show on the module's server: three viewers join over real WebSockets (one leaves), two tap buy
over HTTP, one pays (instant mode) and the order settles. The host panel (laptop, 1280x800) shows the
request counts under its funnel of unique viewers and links to the report; its "Show report" opens
/rooms/<room>/report in a new tab signed in with the host token (#token=), which draws the show's
numbers: unique viewers, peak, orders, the funnel, watch time, GMV by source and SKU, as inline SVG; its
"Download CSV" downloads the CSV. A merchant signs in on the report page with the form.

Screenshot: test-output/screenshots/report-laptop.png (copied to docs/screenshots/ with
LIVESALE_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

import aiohttp
import pytest

from browser_helpers import (DOC_SHOTS, LAPTOP, UPDATE_DOC_SHOTS, LiveServer, _open, _shot, chromium, expect,
                             launch_sale, ms, new_room, viewer_token)
from browser_helpers import live  # noqa: F401  (the module-scoped server)
from commerce.identity import mint_merchant_token
from conftest import timeout

pytestmark = pytest.mark.browser

LIVE_PAYMENT_MODE = "instant"  # the test's buyer pays over HTTP; the report is about what was bought
PRICE = 4999


async def _watch(session: aiohttp.ClientSession, live: LiveServer, room: str, token: str) -> Any:
    """A viewer's socket joined to the room (hello, then its snapshot)."""
    ws = await session.ws_connect(f"{live.base}/ws", protocols=("livesale.v1.json",))
    await ws.send_json({"type": "join", "room": room, "token": token})
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), timeout(10))
        if msg["type"] == "snapshot":
            return ws
        assert msg["type"] in ("hello",), msg


def _until(what: str, check: Any, limit: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout(limit)
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # polling the server's report with a deadline


async def test_the_report_page_shows_a_real_show(live: LiveServer) -> None:  # noqa: F811
    room = new_room(live, "Report night", pin="p-earbuds")
    sale = launch_sale(live, room, "p-earbuds", units=10, per_user_limit=3)["sale_id"]
    viewers = [viewer_token(live, name) for name in ("Ana", "Ben", "Cy")]
    async with aiohttp.ClientSession() as session:
        socks = [await _watch(session, live, room, tok) for tok, _ in viewers]
        (ana, _), (ben, _), _ = viewers
        h1 = live.api("POST", f"/api/sales/{sale}/reserve", {"qty": 2, "request_id": "a1"}, token=ana)["hold_id"]
        live.api("POST", f"/api/sales/{sale}/reserve", {"qty": 1, "request_id": "b1"}, token=ben)
        order = live.api("POST", f"/api/holds/{h1}/pay", {}, token=ana)["order_id"]
        await socks[2].close()  # Cy leaves

        def ready() -> Any:
            r = live.api("GET", f"/api/rooms/{room}/report")
            ok = r["orders"]["count"] == 1 and r["unique_viewers"] == 3 and r["sessions"]["count"] == 3 \
                and r["funnel"]["tapped"] == 2 and r["sessions"]["open"] == 2
            return r if ok else None
        report = await asyncio.to_thread(_until, f"order {order} and the joins in SQL", ready)
        assert report["funnel"] == {"viewers": 3, "tapped": 2, "reserved": 2, "paid": 1}
        assert report["peak_concurrent"] == 3

        errors: list[str] = []
        async with chromium() as browser:
            host = await _open(browser, f"{live.base}/host/{room}#token={live.host_token}", LAPTOP, errors)
            await expect(host.get_by_test_id("panel")).to_be_visible(timeout=ms(10))
            await expect(host.get_by_test_id("funnel-requests")).to_have_attribute("data-tapped", "2", timeout=ms(10))
            await expect(host.get_by_test_id("funnel-requests")).to_contain_text("2 taps")
            await host.get_by_test_id("funnel").locator("xpath=..").screenshot(path=_shot("report-host-funnel.png"))
            async with host.context.expect_page(timeout=ms(10)) as opened:
                await host.get_by_test_id("report-link").click()
            page = await opened.value
            await page.wait_for_load_state()
            assert "token=" not in page.url  # taken out of the address bar
            await expect(page.get_by_test_id("report")).to_be_visible(timeout=ms(10))
            await expect(page.get_by_test_id("report-title")).to_have_text("Report night")
            await expect(page.get_by_test_id("room-status")).to_have_text("live")
            for testid, value in (("unique-viewers", "3"), ("peak-concurrent", "3"), ("orders-count", "1"),
                                  ("orders-units", "2")):
                await expect(page.get_by_test_id(testid)).to_have_attribute("data-value", value)
            await expect(page.get_by_test_id("report-gmv")).to_contain_text("99.98")
            funnel = page.get_by_test_id("funnel-bar")
            await expect(funnel).to_have_count(4)
            for step, value in (("viewers", "3"), ("tapped", "2"), ("reserved", "2"), ("paid", "1")):
                await expect(funnel.and_(page.locator(f'[data-key="{step}"]'))).to_have_attribute("data-value", value)
            await expect(page.get_by_test_id("watch-bar")).to_have_count(6)
            assert sum([int(await b.get_attribute("data-value") or 0)
                        for b in await page.get_by_test_id("watch-bar").all()]) == 3
            direct = page.get_by_test_id("source-bar").and_(page.locator('[data-key="direct"]'))
            await expect(direct).to_have_attribute("data-value", str(2 * PRICE))
            await expect(page.get_by_test_id("sku-bar")).to_have_count(1)
            await expect(page.get_by_test_id("sku-bar")).to_have_attribute("data-key", "AUR-EB-01")
            await expect(page.get_by_test_id("team-bar")).to_have_attribute("data-key", "")  # no fan team
            assert await page.locator("svg[data-testid=funnel] rect").count() == 8  # drawn as inline SVG
            async with page.expect_download(timeout=ms(10)) as dl:
                await page.get_by_test_id("csv-button").click()
            path = await (await dl.value).path()
            text = open(path, encoding="utf-8").read()
            assert text.startswith("[report]") and "[funnel]" in text and f"room_id,{room}" in text
            await page.screenshot(path=_shot("report-laptop.png"), full_page=True)

            # a merchant signs in with the form (no token in this tab yet)
            merchant = await _open(browser, f"{live.base}/rooms/{room}/report", LAPTOP, errors)
            await expect(merchant.get_by_test_id("signin-form")).to_be_visible(timeout=ms(10))
            await merchant.get_by_test_id("token-input").fill(
                mint_merchant_token(live.env["LIVESALE_SECRET"], "brand-1"))
            await merchant.get_by_test_id("signin-button").click()
            await expect(merchant.get_by_test_id("unique-viewers")).to_have_attribute("data-value", "3", timeout=ms(10))
            # a viewer token is refused before it is sent
            await merchant.get_by_test_id("signout-button").click()
            await merchant.get_by_test_id("token-input").fill(viewers[0][0])
            await merchant.get_by_test_id("signin-button").click()
            await expect(merchant.get_by_test_id("signin-error")).to_contain_text("host or merchant token")
        for s in socks[:2]:
            await s.close()
    assert not errors, errors
    if UPDATE_DOC_SHOTS:
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(_shot("report-laptop.png"), DOC_SHOTS / "report-laptop.png")

"""End-to-end in a real Chromium: the host panel launches a flash sale, two viewers race for one unit.

The real server runs as a subprocess (`python -m server.cli serve`) on the session's Redis/Valkey
and SQL database; pages are driven with Playwright's auto-waiting `expect` (no fixed sleeps).
Screenshots go to test-output/screenshots/; with LIVESALE_UPDATE_SCREENSHOTS=1 one of each page is
also copied to the tracked docs/screenshots/.

Needs Chromium: `chromium` or `chromium-browser` on PATH, else /usr/bin/chromium (`make browser`
installs Debian's). Skipped without it, unless LIVESALE_REQUIRE_BROWSER=1 (CI), which makes it a failure.
"""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from browser_helpers import (CHROMIUM, DOC_SHOTS, LAPTOP, LAUNCH_ARGS, PHONE, SHOTS, UPDATE_DOC_SHOTS, LiveServer,
                             _open, _shot, async_playwright, expect, pay_on_sandbox_page)
from browser_helpers import live  # noqa: F401  (the module-scoped server fixture)
from conftest import timeout

pytestmark = pytest.mark.browser


async def test_flash_sale_two_viewers_exactly_one_wins(live: LiveServer) -> None:
    room = live.room
    t = lambda s: timeout(s) * 1000  # noqa: E731 (Playwright wants ms)
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            host = await _open(browser, f"{live.base}/host/{room}#token={live.host_token}", LAPTOP, errors)
            await expect(host.get_by_test_id("panel")).to_be_visible(timeout=t(10))
            await expect(host.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=t(10))
            await expect(host.get_by_test_id("room-status")).to_have_text("live", timeout=t(10))
            # the token left the URL (kept in sessionStorage only)
            assert "token=" not in host.url

            a = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
            b = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
            phone = await _open(browser, f"{live.base}/rooms/{room}", PHONE, errors, is_mobile=True, has_touch=True,
                                device_scale_factor=2)
            viewers = [a, b]
            for v in (a, b, phone):
                await expect(v.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=t(10))
                await expect(v.get_by_test_id("pinned-title")).to_have_text("Aurora Wireless Earbuds", timeout=t(10))
                await expect(v.get_by_test_id("pinned-price")).to_contain_text("49.99")
                await expect(v.get_by_test_id("live-badge")).to_have_text("LIVE")
                await expect(v.get_by_test_id("banner")).to_be_hidden()
            await expect(host.get_by_test_id("viewers-now")).to_have_text(re.compile(r"^[3-9]$"), timeout=t(10))

            # chat, likes and moderation
            await a.get_by_test_id("comment-input").fill("Is it waterproof?")
            await a.get_by_test_id("comment-send").click()
            await b.get_by_test_id("comment-input").fill("buy my followers cheap!!!")
            await b.get_by_test_id("comment-send").click()
            for v in (a, b):
                await expect(v.get_by_test_id("comments")).to_contain_text("Is it waterproof?", timeout=t(10))
            spam = host.get_by_test_id("mod-comment").filter(has_text="buy my followers")
            await expect(spam).to_be_visible(timeout=t(10))
            await spam.get_by_test_id("hide-button").click()
            for v in (a, b, phone):
                await expect(v.get_by_test_id("comments")).not_to_contain_text("buy my followers", timeout=t(10))
            await expect(spam).to_have_count(0, timeout=t(10))
            for _ in range(3):
                await a.get_by_test_id("like-button").click()
            await expect(b.get_by_test_id("like-count")).to_have_text(re.compile(r"^[3-9]$"), timeout=t(10))
            await host.get_by_test_id("announce-input").fill("One unit only. Ready, set…")
            await host.get_by_test_id("announce-button").click()
            await expect(a.get_by_test_id("announcement")).to_contain_text("One unit only", timeout=t(10))

            # the host launches a sale of 1 unit opening in 5 s
            await host.get_by_test_id("sale-product").select_option("p-earbuds")
            await host.get_by_test_id("sale-units").fill("1")
            await host.get_by_test_id("sale-limit").fill("1")
            await host.get_by_test_id("sale-starts-in").fill("5")
            await host.get_by_test_id("sale-duration").fill("120")
            await host.get_by_test_id("launch-button").click()
            await expect(host.get_by_test_id("launch-result")).to_contain_text("Launched", timeout=t(10))
            await expect(host.get_by_test_id("sale-row")).to_have_count(1, timeout=t(10))

            # every viewer sees the countdown (from absolute starts_at + measured offset) and a disabled button
            for v in (a, b, phone):
                await expect(v.get_by_test_id("countdown")).to_contain_text(re.compile(r"Starts in 00:0[1-5]"),
                                                                            timeout=t(5))
                await expect(v.get_by_test_id("buy-button")).to_be_disabled()
                await expect(v.get_by_test_id("buy-button")).to_have_attribute("data-state", "not-started")
                await expect(v.get_by_test_id("units-left")).to_have_text("1 of 1 left")
            await phone.screenshot(path=_shot("viewer-phone-countdown.png"))
            await a.screenshot(path=_shot("viewer-laptop-countdown.png"))

            # Both tap at the open: each page clicks in the same DOM mutation that enables its button
            # (expect()'s polling back-off could make one viewer see the open up to a second late).
            tap_js = """(ms) => new Promise((resolve, reject) => {
                const check = () => {
                    const b = document.querySelector('[data-testid="buy-button"]');
                    if (!b) return false;
                    if (!b.disabled) { b.click(); resolve("tapped"); return true; }
                    const s = b.dataset.state;
                    if (s === "sold-out" || s === "limit") { resolve(s); return true; }
                    return false;
                };
                if (check()) return;
                const obs = new MutationObserver(() => { if (check()) obs.disconnect(); });
                obs.observe(document.body, { subtree: true, attributes: true, childList: true });
                setTimeout(() => { obs.disconnect(); reject(new Error("the buy button never enabled")); }, ms);
            })"""
            taps = await asyncio.gather(*(v.evaluate(tap_js, t(15)) for v in viewers))
            assert "tapped" in taps, taps

            final = re.compile(r"^(reserved|sold-out|limit)$")
            for v in viewers:
                await expect(v.get_by_test_id("product-card")).to_have_attribute("data-state", final, timeout=t(10))
            states = [await v.get_by_test_id("product-card").get_attribute("data-state") for v in viewers]
            assert states.count("reserved") == 1, f"exactly one viewer must hold the unit, got {states}"
            winner = viewers[states.index("reserved")]
            loser = viewers[1 - states.index("reserved")]

            await expect(winner.get_by_test_id("status")).to_contain_text("pay within")
            await winner.screenshot(path=_shot("viewer-laptop-reserved.png"))
            # the server runs in the default payment mode (sandbox): Pay opens the provider's hosted page
            await pay_on_sandbox_page(winner)
            await expect(winner.get_by_test_id("status")).to_have_attribute("data-state", "confirmed", timeout=t(15))
            await expect(winner.get_by_test_id("status")).to_contain_text("Order confirmed")
            await expect(winner.get_by_test_id("buy-button")).to_have_attribute("data-state", "confirmed")
            await expect(loser.get_by_test_id("status")).to_have_attribute("data-state",
                                                                           re.compile(r"^(sold-out|limit)$"))
            await expect(loser.get_by_test_id("buy-button")).to_be_disabled()
            for v in (a, b, phone):
                await expect(v.get_by_test_id("units-left")).to_have_text("0 left", timeout=t(10))
            await expect(loser.get_by_test_id("ticker")).to_contain_text("just bought", timeout=t(10))
            confirmed = [await v.get_by_test_id("status").get_attribute("data-state") for v in viewers]
            assert confirmed.count("confirmed") == 1, confirmed

            # the dashboard: GMV, orders, units left 0, funnel
            await expect(host.get_by_test_id("gmv")).to_contain_text("49.99", timeout=t(15))
            await expect(host.get_by_test_id("orders-total")).to_have_text("1", timeout=t(15))
            await expect(host.get_by_test_id("sale-units-left")).to_have_text("0", timeout=t(10))
            await expect(host.get_by_test_id("funnel-paid")).to_have_attribute("data-value", "1", timeout=t(10))
            # the funnel counts people: each viewer who tapped once; the requests line counts every tap
            # that reached the server (a tap a hair before the open instant is retried: >=)
            n_taps = taps.count("tapped")
            await expect(host.get_by_test_id("funnel-tapped")).to_have_attribute("data-value", str(n_taps))
            await expect(host.get_by_test_id("funnel-requests")).to_have_attribute(
                "data-tapped", re.compile("^(" + "|".join(str(n) for n in range(n_taps, 10)) + ")$"))
            tapped = await host.get_by_test_id("funnel-requests").get_attribute("data-tapped")
            print(f"race: taps {taps}, outcome {states}, taps counted by the server: {tapped}")
            await expect(host.get_by_test_id("funnel-reserved")).to_have_attribute("data-value", "1")
            await expect(host.get_by_test_id("latest-orders").get_by_test_id("order-row")).to_have_count(1)
            await expect(host.get_by_test_id("orders-chart")).to_have_attribute("data-total", "1", timeout=t(10))

            await winner.screenshot(path=_shot("viewer-laptop-confirmed.png"))
            await loser.screenshot(path=_shot("viewer-laptop-sold-out.png"))
            await phone.screenshot(path=_shot("viewer-phone-sold-out.png"))
            await host.screenshot(path=_shot("host-laptop.png"), full_page=True)

            # a reload resumes: state visible again, the purchase remembered, no error banner
            await winner.reload()
            await expect(winner.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=t(10))
            await expect(winner.get_by_test_id("pinned-title")).to_have_text("Aurora Wireless Earbuds")
            await expect(winner.get_by_test_id("status")).to_have_attribute("data-state", "confirmed", timeout=t(10))
            await expect(winner.get_by_test_id("units-left")).to_have_text("0 left")
            await expect(winner.get_by_test_id("comments")).to_contain_text("Is it waterproof?")
            await expect(winner.get_by_test_id("banner")).to_be_hidden()

            if UPDATE_DOC_SHOTS:  # the tracked copies change only when asked to
                DOC_SHOTS.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(SHOTS / "viewer-laptop-confirmed.png", DOC_SHOTS / "viewer.png")
                shutil.copyfile(SHOTS / "viewer-phone-countdown.png", DOC_SHOTS / "viewer-phone.png")
                shutil.copyfile(SHOTS / "host-laptop.png", DOC_SHOTS / "host.png")
        finally:
            await browser.close()
    assert not errors, "errors in the pages:\n" + "\n".join(errors)


async def test_viewer_reconnects_and_resumes_after_server_restart(live: LiveServer) -> None:
    room = live.room
    t = lambda s: timeout(s) * 1000  # noqa: E731
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            v = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
            await expect(v.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=t(10))
            await expect(v.get_by_test_id("pinned-title")).to_have_text("Aurora Wireless Earbuds")
            live.stop()
            await expect(v.get_by_test_id("banner")).to_be_visible(timeout=t(10))
            await expect(v.get_by_test_id("banner")).to_contain_text(re.compile("reconnecting", re.I))
            # the page keeps its state while offline
            await expect(v.get_by_test_id("pinned-title")).to_have_text("Aurora Wireless Earbuds")
            live.start()
            await expect(v.get_by_test_id("banner")).to_be_hidden(timeout=t(30))
            await expect(v.get_by_test_id("conn-state")).to_have_attribute("data-state", "open")
            # events published while it was away reach it (resume or a fresh snapshot)
            live.api("POST", f"/api/rooms/{room}/actions/pin", {"product": "p-hoodie"})
            await expect(v.get_by_test_id("pinned-title")).to_have_text("Cloud Knit Hoodie", timeout=t(10))
            live.api("POST", f"/api/rooms/{room}/actions/announce", {"text": "We are back!"})
            await expect(v.get_by_test_id("announcement")).to_contain_text("We are back!", timeout=t(10))
        finally:
            await browser.close()
    # The browser logs the failed WebSocket handshakes while the server is down: expected here.
    unexpected = [e for e in errors if "WebSocket" not in e and "ERR_CONNECTION_REFUSED" not in e]
    assert not unexpected, "errors in the page:\n" + "\n".join(unexpected)


CLIENT_API_SCRIPT = """
async ({ room, hostToken }) => {
  const m = await import("/static/livesale.js");
  const out = {};
  const once = (target, type, ready) => ready() ? Promise.resolve() :
    new Promise((resolve) => target.addEventListener(type, function h() {
      if (ready()) { target.removeEventListener(type, h); resolve(); }
    }));
  out.money = [m.formatMoney(1999, "EUR", "en-US"), m.formatMoney(500, "JPY", "en-US")];
  out.wsUrl = m.wsUrl("http://example.com:8080");
  const v = await (await fetch("/api/viewer-token", { method: "POST", headers: { "Content-Type": "application/json" },
                                                      body: JSON.stringify({ name: "Api Tester" }) })).json();
  const states = [];
  const viewer = m.connect({ room, token: v.token, onEvent: (e) => { if (e.type === "state") states.push(e.state); } });
  await viewer.start();
  await once(viewer, "clock", () => viewer.clockSynced);
  out.clock = { offset: viewer.offset, rtt: viewer.rtt };
  out.you = viewer.you;
  out.states = states;
  try { await viewer.goLive(); out.hostAsViewer = "ok"; } catch (e) { out.hostAsViewer = e.code; }
  out.buyUnknown = (await viewer.buy("s-nope")).code;

  const host = m.connect({ room, token: hostToken });
  await host.start();
  try { await host.pin("no-such-product"); out.pinMissing = "ok"; } catch (e) { out.pinMissing = e.code; }
  const ok = await host.launchSale({ product: "p-hoodie", units: 3, limit: 2, startsInS: 0, durationS: 60, price: 5900 });
  const sale = ok.sale.sale_id;
  out.launched = { price: ok.sale.unit_price, allocated: ok.sale.allocated, limit: ok.sale.per_user_limit };
  await once(viewer, "change", () => viewer.sales.has(sale));
  out.phase = viewer.salePhase(viewer.sales.get(sale));

  const r1 = await viewer.buy(sale, 1, { rid: "api-test-" + sale });
  const r2 = await viewer.buy(sale, 1, { rid: "api-test-" + sale });   // same rid: the same purchase
  out.idem = [r1.code, r2.code, r1.hold === r2.hold];
  out.release = (await viewer.release(r1.hold)).code;
  const r3 = await viewer.buy(sale, 2);
  out.limitBuy = (await viewer.buy(sale, 1)).code;
  out.mode = viewer.paymentMode;
  out.pay = (await viewer.pay(r3.hold)).code;   // refused: the server takes payments through the sandbox
  const started = await viewer.checkout(r3.hold);
  out.started = { amount: started.amount, currency: started.currency, provider: started.provider,
                  page: typeof started.redirect_url === "string" && started.redirect_url.includes("/pay/") };
  await window.payOnSandboxPage(started.redirect_url);   // the buyer presses Pay on the provider's page
  await once(viewer, "order_confirmed", () => viewer.orders.length > 0);
  out.order = viewer.orders[0];
  out.hold = viewer.holds.get(r3.hold).status;
  await once(viewer, "change", () => viewer.sales.get(sale).units_left === 1);
  await host.endSale(sale);
  await once(viewer, "change", () => viewer.sales.get(sale).state === "closed");
  out.afterEnd = (await viewer.buy(sale, 1)).code;
  viewer.close();
  host.close();
  out.finalState = viewer.state;
  return out;
}
"""


async def test_client_library_api(live: LiveServer) -> None:
    """livesale.js as a third-party page uses it: requests by rid, typed errors, idempotent buys."""
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = await _open(browser, f"{live.base}/", LAPTOP, errors)

            async def pay_on_sandbox_page(url: str) -> int:
                import aiohttp  # the server's own dependency

                async with aiohttp.ClientSession() as http:
                    async with http.post(url, data={"action": "pay"}, headers={"Accept": "application/json"}) as r:
                        return r.status

            await page.expose_function("payOnSandboxPage", pay_on_sandbox_page)
            out = await page.evaluate(CLIENT_API_SCRIPT, {"room": live.room, "hostToken": live.host_token})
        finally:
            await browser.close()
    assert not errors, errors
    assert out["money"] == ["€19.99", "¥500"]
    assert out["wsUrl"] == "ws://example.com:8080/ws"
    assert out["states"][:2] == ["connecting", "open"]
    assert abs(out["clock"]["offset"]) < 5000 and 0 <= out["clock"]["rtt"] < 5000
    assert out["you"]["role"] == "viewer" and out["you"]["name"] == "Api Tester"
    assert out["hostAsViewer"] == "FORBIDDEN"
    assert out["buyUnknown"] == "NOT_FOUND"
    assert out["pinMissing"] == "NOT_FOUND"
    assert out["launched"] == {"price": 5900, "allocated": 3, "limit": 2}
    assert out["phase"] == "open"
    assert out["idem"] == ["RESERVED", "RESERVED", True]
    assert out["release"] == "RELEASED"
    assert out["limitBuy"] == "LIMIT"
    assert out["mode"] == "sandbox" and out["pay"] == "PAYMENT_REQUIRED"
    assert out["started"] == {"amount": 2 * 5900, "currency": "EUR", "provider": "sandbox", "page": True}
    assert out["order"]["qty"] == 2 and out["order"]["total"] == 2 * 5900 and out["order"]["currency"] == "EUR"
    assert out["hold"] == "confirmed"
    assert out["afterEnd"] == "ENDED"
    assert out["finalState"] == "closed"

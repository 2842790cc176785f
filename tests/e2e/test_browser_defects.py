"""Browser tests for the page faults of issue 9 (items 12-15), in a real Chromium.

- 13: a dead network is shown at once (browser `offline`, or a silently dead link caught by the short
  ping), Buy and Pay are disabled with a visible message, a Pay tap gets feedback, an expired hold is told;
- 14: on a phone the chat scrolls inside its own box, the newest comment and the comment box stay visible;
- 15: thumbnails follow the product, a short pay-by window reads in seconds, the host panel fits a
  390 px screen, a room opened before it exists is joined once it is created;
- 12: "End live" shows the sale closed and disables Buy.

Each test uses its own room on the module's server (`browser_helpers.live`), which runs in the default
payment mode: every payment goes through the bundled sandbox provider (its hosted page from the page's
Pay, or the same flow over HTTP).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from browser_helpers import (LAPTOP, PHONE, LiveServer, _open, _shot, chromium, expect, launch_sale, ms, new_room,
                             pay_on_sandbox_page, pay_via_sandbox_http, post_comments, viewer_token)
from browser_helpers import live  # noqa: F401  (the module-scoped server, default payment mode: the sandbox provider)

pytestmark = pytest.mark.browser

EARBUDS = "p-earbuds"
BENIGN = ("WebSocket", "ERR_INTERNET_DISCONNECTED", "ERR_CONNECTION_REFUSED", "ERR_NAME_NOT_RESOLVED")


def _unexpected(errors: list[str]) -> list[str]:
    """Page errors other than the failed connections a test provokes on purpose."""
    return [e for e in errors if not any(b in e for b in BENIGN)]


async def _viewer(browser: Any, live: LiveServer, room: str, errors: list[str], viewport: dict[str, int] = LAPTOP,
                  **ctx: Any) -> Any:
    page = await _open(browser, f"{live.base}/rooms/{room}", viewport, errors, **ctx)
    await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
    return page


# ------------------------------------------------------------------------------------------------
# item 13: a dead network


async def test_offline_is_shown_at_once_and_pay_tap_gets_feedback(live: LiveServer) -> None:
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=5, hold_ttl_s=120)
    errors: list[str] = []
    async with chromium() as browser:
        page = await _viewer(browser, live, room, errors)
        buy, pay, status = page.get_by_test_id("buy-button"), page.get_by_test_id("pay-button"), page.get_by_test_id("status")
        await expect(buy).to_be_enabled(timeout=ms(10))

        # offline with the Buy button showing: the dot, the button and a message change within seconds
        await page.context.set_offline(True)
        await expect(page.get_by_test_id("conn-state")).not_to_have_attribute("data-state", "open", timeout=ms(3))
        await expect(buy).to_be_disabled(timeout=ms(3))
        await expect(status).to_contain_text(re.compile("offline", re.I), timeout=ms(3))
        await expect(page.get_by_test_id("banner")).to_contain_text(re.compile("offline", re.I), timeout=ms(3))
        await page.context.set_offline(False)
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(page.get_by_test_id("banner")).to_be_hidden(timeout=ms(5))
        await expect(buy).to_be_enabled(timeout=ms(5))

        # reserve, then go offline with the Pay button showing
        await buy.click()
        await expect(pay).to_be_visible(timeout=ms(10))
        await expect(pay).to_be_enabled()
        await page.context.set_offline(True)
        await expect(pay).to_be_disabled(timeout=ms(3))
        await expect(status).to_contain_text(re.compile("offline", re.I), timeout=ms(3))
        # a tap on Pay while offline is answered at once (a phone user taps a greyed-out button too)
        await pay.click(force=True)
        await expect(page.get_by_test_id("toast")).to_contain_text(re.compile("offline", re.I), timeout=ms(2))
        await page.screenshot(path=_shot("viewer-laptop-offline.png"))

        # back online: it resumes by itself and the payment goes through (on the sandbox provider's page)
        await page.context.set_offline(False)
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(pay).to_be_enabled(timeout=ms(5))
        await pay_on_sandbox_page(page)
        await expect(status).to_have_attribute("data-state", "confirmed", timeout=ms(15))
    assert not _unexpected(errors), errors


async def test_silently_dead_link_is_caught_by_the_short_ping(live: LiveServer) -> None:
    """A link that carries nothing any more, without an `offline` event (a dead Wi-Fi, a NAT that
    forgot the flow): with a sale open the client pings every few seconds and replaces the socket
    when no pong comes, instead of waiting ~48 s for two 20 s heartbeats."""
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=5)
    errors: list[str] = []
    routes: list[dict[str, Any]] = []

    def route(ws: Any) -> None:
        state = {"dead": False}
        server = ws.connect_to_server()
        ws.on_message(lambda m: None if state["dead"] else server.send(m))
        server.on_message(lambda m: None if state["dead"] else ws.send(m))
        routes.append(state)

    async with chromium() as browser:
        context = await browser.new_context(viewport=LAPTOP)
        page = await context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.route_web_socket(re.compile(r"/ws$"), route)
        await page.goto(f"{live.base}/rooms/{room}")
        conn = page.get_by_test_id("conn-state")
        await expect(conn).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(page.get_by_test_id("buy-button")).to_be_enabled(timeout=ms(10))
        assert len(routes) == 1
        routes[0]["dead"] = True  # from now on nothing passes either way; no close, no offline event
        # the ping every 4 s finds no pong within 4 s: noticed within ~10 s (it took ~48 s before)
        await expect(conn).not_to_have_attribute("data-state", "open", timeout=ms(15))
        # it reconnected (a new socket, which works) and resumed by itself
        await expect(conn).to_have_attribute("data-state", "open", timeout=ms(15))
        assert len(routes) >= 2
        await expect(page.get_by_test_id("buy-button")).to_be_enabled(timeout=ms(5))
    assert not _unexpected(errors), errors


async def test_expired_hold_is_told(live: LiveServer) -> None:
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=5, hold_ttl_s=5)  # the shortest pay-by window
    errors: list[str] = []
    async with chromium() as browser:
        page = await _viewer(browser, live, room, errors)
        await page.get_by_test_id("buy-button").click()
        status = page.get_by_test_id("status")
        await expect(page.get_by_test_id("pay-button")).to_be_visible(timeout=ms(10))
        await expect(status).to_contain_text(re.compile(r"pay within 00:0\d"))
        # not paid: at pay_by the page says so (and keeps saying it), the unit is buyable again
        await expect(status).to_contain_text(re.compile("reservation expired", re.I), timeout=ms(10))
        await expect(page.get_by_test_id("toast")).to_contain_text(re.compile("expired", re.I))
        await expect(page.get_by_test_id("pay-button")).to_be_hidden()
        await expect(page.get_by_test_id("buy-button")).to_be_enabled(timeout=ms(5))
    assert not _unexpected(errors), errors


# ------------------------------------------------------------------------------------------------
# item 14: the chat on a phone

CHAT_GEOMETRY = """() => {
  const q = (id) => document.querySelector(`[data-testid="${id}"]`);
  const list = q("comments"), input = q("comment-input"), card = q("product-card");
  const items = list.querySelectorAll('[data-testid="comment"]');
  const newest = items[items.length - 1];
  const r = (el) => { const b = el.getBoundingClientRect(); return { top: b.top, bottom: b.bottom }; };
  return { count: items.length, newestText: newest ? newest.textContent : null, newest: newest ? r(newest) : null,
           input: r(input), card: r(card), vh: window.innerHeight, scrollHeight: list.scrollHeight,
           clientHeight: list.clientHeight, scrollTop: list.scrollTop,
           docHeight: document.documentElement.scrollHeight };
}"""

# true when the newest comment and the comment box are on screen and not under the sticky product card
CHAT_VISIBLE = """(want) => {
  const g = (%s)();
  if (!g.newest || !g.newestText.includes(want)) return false;
  const limit = Math.min(g.vh, g.card.top) + 1;
  return g.newest.top >= 0 && g.newest.bottom <= limit && g.input.top >= 0 && g.input.bottom <= limit;
}""" % CHAT_GEOMETRY


async def test_phone_chat_scrolls_inside_its_box(live: LiveServer) -> None:
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=50)  # the full product card: price, countdown, Buy
    errors: list[str] = []
    async with chromium() as browser:
        page = await _viewer(browser, live, room, errors, PHONE, is_mobile=True, has_touch=True,
                             device_scale_factor=2)
        texts = [f"comment {i:02d}" + " so good" * (i % 6) for i in range(52)]
        await post_comments(live, room, texts)
        await expect(page.get_by_test_id("comment")).to_have_count(52, timeout=ms(15))
        await post_comments(live, room, ["newest comment 53"])
        await expect(page.get_by_test_id("comment")).to_have_count(53, timeout=ms(10))
        try:
            await page.wait_for_function(CHAT_VISIBLE, arg="newest comment 53", timeout=ms(5))
        except Exception:
            pytest.fail(f"the newest comment or the comment box is off screen: {await page.evaluate(CHAT_GEOMETRY)}")
        g = await page.evaluate(CHAT_GEOMETRY)
        assert g["scrollHeight"] > g["clientHeight"], g  # the list scrolls inside its own box
        assert g["docHeight"] <= g["vh"] + 1, g          # and the page itself does not grow with it
        await page.screenshot(path=_shot("viewer-phone-chat.png"))

        # scrolled up to read: a new comment does not pull the list down
        await page.get_by_test_id("comments").evaluate("(el) => { el.scrollTop = 0; }")
        await post_comments(live, room, ["while reading 54"])
        await expect(page.get_by_test_id("comments")).to_contain_text("while reading 54", timeout=ms(10))
        assert (await page.evaluate(CHAT_GEOMETRY))["scrollTop"] == 0
        # back at the bottom: new comments follow again
        await page.get_by_test_id("comments").evaluate("(el) => { el.scrollTop = el.scrollHeight; }")
        await post_comments(live, room, ["following again 55"])
        await page.wait_for_function(CHAT_VISIBLE, arg="following again 55", timeout=ms(10))
        # the comment box works and the own comment shows up at the bottom
        await page.get_by_test_id("comment-input").fill("my own 56")
        await page.get_by_test_id("comment-send").click()
        await page.wait_for_function(CHAT_VISIBLE, arg="my own 56", timeout=ms(10))
    assert not _unexpected(errors), errors


# ------------------------------------------------------------------------------------------------
# item 15: small page faults


async def test_thumbnail_initials_follow_the_product(live: LiveServer) -> None:
    room = new_room(live, products=[
        {"product_id": "p-serum", "sku": "VC-01", "title": "Vitamin C Serum", "unit_price": 2900, "currency": "EUR"},
        {"product_id": "p-sneakers", "sku": "SR-02", "title": "Street Runner Sneakers", "unit_price": 8900,
         "currency": "EUR"},
    ], pin="p-serum")
    errors: list[str] = []
    async with chromium() as browser:
        page = await _viewer(browser, live, room, errors)
        thumb = page.get_by_test_id("product-thumb")
        await expect(page.get_by_test_id("pinned-title")).to_have_text("Vitamin C Serum", timeout=ms(10))
        await expect(thumb).to_have_text("VC")
        live.api("POST", f"/api/rooms/{room}/actions/pin", {"product": "p-sneakers"})
        await expect(page.get_by_test_id("pinned-title")).to_have_text("Street Runner Sneakers", timeout=ms(10))
        await expect(thumb).to_have_text("SR")
        live.api("POST", f"/api/rooms/{room}/actions/pin", {"product": "p-serum"})
        await expect(thumb).to_have_text("VC", timeout=ms(10))
    assert not _unexpected(errors), errors


async def test_short_pay_window_reads_in_seconds(live: LiveServer) -> None:
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=5, hold_ttl_s=10)
    errors: list[str] = []
    async with chromium() as browser:
        page = await _viewer(browser, live, room, errors)
        status = page.get_by_test_id("status")
        await expect(status).to_contain_text("pay within 10 s", timeout=ms(10))
        await expect(status).not_to_contain_text("0 min")
        await page.get_by_test_id("buy-button").click()
        # once reserved: a live mm:ss countdown to pay_by
        await expect(status).to_contain_text(re.compile(r"pay within 00:(10|0\d)"), timeout=ms(10))
    assert not _unexpected(errors), errors


async def test_host_panel_fits_a_phone(live: LiveServer) -> None:
    room = new_room(live, products=[
        {"product_id": "p-watch", "sku": "WT-01", "title": "Chronograph Titanium Watch", "unit_price": 101600,
         "currency": "EUR"},
    ], pin="p-watch")
    sale = launch_sale(live, room, "p-watch", units=20, per_user_limit=10)
    launch_sale(live, room, "p-watch", units=5, starts_in_s=600)  # a scheduled one too (End button, timing)
    token, _ = viewer_token(live, "Big Spender")
    hold = live.api("POST", f"/api/sales/{sale['sale_id']}/reserve", {"request_id": "gmv-1", "qty": 10}, token=token)
    pay_via_sandbox_http(live, hold["hold_id"], token)  # checkout, Pay on the provider's page, its webhook
    errors: list[str] = []
    async with chromium() as browser:
        host = await _open(browser, f"{live.base}/host/{room}#token={live.host_token}", PHONE, errors,
                           is_mobile=True, has_touch=True, device_scale_factor=2)
        await expect(host.get_by_test_id("panel")).to_be_visible(timeout=ms(10))
        gmv = host.get_by_test_id("gmv")
        await expect(gmv).to_have_text("€10,160.00", timeout=ms(15))
        await expect(host.get_by_test_id("sale-row")).to_have_count(2, timeout=ms(10))
        await host.screenshot(path=_shot("host-phone.png"), full_page=True)
        # (a phone widens the layout viewport to fit content that overflows: compare with the screen's 390 px)
        m = await host.evaluate("""(vw) => {
            const g = document.querySelector('[data-testid="gmv"]');
            const wide = [...document.querySelectorAll("body *")]
              .filter((e) => e.getBoundingClientRect().right > vw + 1)
              .slice(0, 6).map((e) => e.tagName + "." + e.className + "[" + (e.dataset.testid || "") + "]");
            return { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
                     gmvScroll: g.scrollWidth, gmvClient: g.clientWidth, wide };
        }""", PHONE["width"])
        assert m["scrollWidth"] <= PHONE["width"] and m["innerWidth"] <= PHONE["width"], m
        assert m["gmvScroll"] <= m["gmvClient"], m  # GMV not cut off
    assert not _unexpected(errors), errors


async def test_room_opened_before_it_exists_joins_once_created(live: LiveServer) -> None:
    room = "late" + secrets.token_hex(4)
    errors: list[str] = []
    async with chromium() as browser:
        page = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
        await expect(page.get_by_test_id("banner")).to_contain_text(re.compile("not started yet", re.I),
                                                                    timeout=ms(10))
        # the host creates the room: the page joins by itself (retry every ~5 s), no reload
        live.api("POST", "/api/rooms", {"room_id": room, "title": "Late Night Drop"})
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(15))
        await expect(page.get_by_test_id("room-title")).to_have_text("Late Night Drop")
        await expect(page.get_by_test_id("banner")).to_be_hidden()
        # and it is a working room page
        live.api("POST", f"/api/rooms/{room}/actions/announce", {"text": "Welcome, early birds"})
        await expect(page.get_by_test_id("announcement")).to_contain_text("early birds", timeout=ms(10))
    assert not _unexpected(errors), errors


# ------------------------------------------------------------------------------------------------
# item 12 (the page side): ending the live


async def test_ended_room_disables_buy(live: LiveServer) -> None:
    """While the room's status is `ended` Buy stays disabled, whatever the sale's own clock says (here
    a sale launched after the end, which the server lets open)."""
    room = new_room(live, pin=EARBUDS)
    errors: list[str] = []
    async with chromium() as browser:
        page = await _viewer(browser, live, room, errors)
        buy = page.get_by_test_id("buy-button")
        live.api("POST", f"/api/rooms/{room}/actions/end_live", {})
        await expect(page.get_by_test_id("live-badge")).to_have_text("Ended", timeout=ms(10))
        launch_sale(live, room, EARBUDS, units=5)
        await expect(page.get_by_test_id("countdown")).to_have_attribute("data-phase", "open", timeout=ms(10))
        await expect(buy).to_be_disabled()
        await expect(buy).to_have_attribute("data-state", "ended")
        await expect(page.get_by_test_id("status")).to_contain_text(re.compile("live has ended", re.I))
        # a reload (a snapshot with status ended) keeps Buy disabled
        await page.reload()
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(page.get_by_test_id("live-badge")).to_have_text("Ended")
        await expect(page.get_by_test_id("countdown")).to_have_attribute("data-phase", "open", timeout=ms(5))
        await expect(buy).to_be_disabled()
        await expect(page.get_by_test_id("status")).to_contain_text(re.compile("live has ended", re.I))
    assert not _unexpected(errors), errors


async def test_end_live_shows_the_sale_closed(live: LiveServer) -> None:
    """Needs the server side of item 12: `end_live` closes the room's open and scheduled sales with
    `sale_closed {reason: "live_ended"}`; the sale then stays closed when the host goes live again."""
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=5)
    errors: list[str] = []
    async with chromium() as browser:
        page = await _viewer(browser, live, room, errors)
        buy = page.get_by_test_id("buy-button")
        await expect(buy).to_be_enabled(timeout=ms(10))
        live.api("POST", f"/api/rooms/{room}/actions/end_live", {})
        await expect(page.get_by_test_id("countdown")).to_have_attribute("data-phase", "closed", timeout=ms(10))
        await expect(buy).to_be_disabled()
        await expect(buy).to_have_attribute("data-state", "ended")
        await expect(page.get_by_test_id("status")).to_contain_text(re.compile("live has ended", re.I))
        # live again: the sale the end closed stays closed
        live.api("POST", f"/api/rooms/{room}/actions/go_live", {})
        await expect(page.get_by_test_id("live-badge")).to_have_text("LIVE", timeout=ms(10))
        await expect(page.get_by_test_id("countdown")).to_have_attribute("data-phase", "closed")
        await expect(buy).to_be_disabled()
        await expect(page.get_by_test_id("status")).to_contain_text(re.compile("live has ended", re.I))
    assert not _unexpected(errors), errors

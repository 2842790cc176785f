"""Browser test for issue "Goods", item 6, "My orders", in a real Chromium.

A viewer sees their holds and orders (reserved, paid, settled, expired, released, refunded) with
totals per currency on the viewer page: the "My orders" button in the top bar opens a panel (a bottom
sheet on phones, a panel over the player on wider screens) built from livesale.js's state and
`GET /api/me/orders` (`client.myOrders()`).

One viewer on a phone reserves a deal (a reserved row with a pay-by countdown and Pay), pays it from
the panel on the sandbox provider's hosted page (the row becomes a settled order; totals €49.99 spent),
reserves a second deal and cancels it from the panel (released); the host refunds the settled order
over HTTP (`order_refunded`: the order reads "Refunded", totals spent €49.99, refunded €49.99, net
€0.00). The same viewer on a laptop (its guest identity copied into a fresh browser context) sees the
same list from the server alone, reserves again, and the phone's panel, opened again, lists that
reservation too. The module's server runs in the default payment mode (the bundled sandbox provider).
Screenshots go to test-output/screenshots/ (my-orders-phone.png, my-orders-desktop.png); with
LIVESALE_UPDATE_SCREENSHOTS=1 they are also copied to the tracked docs/screenshots/.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import pytest

from browser_helpers import (DOC_SHOTS, LAPTOP, PHONE, SHOTS, UPDATE_DOC_SHOTS, LiveServer, _open, _shot, chromium,
                             expect, launch_sale, ms, new_room)
from browser_helpers import live  # noqa: F401  (the module-scoped server, default payment mode: the sandbox provider)

pytestmark = pytest.mark.browser

EARBUDS, HOODIE = "p-earbuds", "p-hoodie"
PRODUCTS = [
    {"product_id": EARBUDS, "sku": "AUR-EB-01", "title": "Aurora Wireless Earbuds", "unit_price": 4999, "currency": "EUR"},
    {"product_id": HOODIE, "sku": "CK-HD-02", "title": "Cloud Knit Hoodie", "unit_price": 6900, "currency": "EUR"},
]
PAY_WITHIN = re.compile(r"^pay within 0[12]:\d\d$")


async def _pay_in_panel(page: Any, hold: str, price: int) -> None:
    """Tap Pay on a reservation of the panel: the sandbox provider's hosted page opens in a new window
    (the page's own pay flow); press its Pay and wait for its confirmation."""
    row = page.get_by_test_id(f"my-hold-row-{hold}")
    async with page.context.expect_page(timeout=ms(15)) as popup_info:
        await row.get_by_test_id("my-hold-pay").click()
    pay_page = await popup_info.value
    await pay_page.wait_for_url(re.compile(r"/pay/pay_"), timeout=ms(15))
    await expect(pay_page.locator("#amount")).to_have_text(f"{price // 100}.{price % 100:02d} EUR")
    await pay_page.locator("#pay").click()
    await expect(pay_page.locator("#note")).to_contain_text("Payment received", timeout=ms(15))
    await pay_page.close()


async def _held(page: Any, room: str) -> tuple[str, str, list[str]]:
    """(token, user, ids of the holds still held) from what the page keeps in localStorage."""
    ident = json.loads(await page.evaluate("localStorage.getItem('livesale.viewer')"))
    holds = json.loads(await page.evaluate("(k) => localStorage.getItem(k) || '[]'",
                                           f"livesale.holds.{room}.{ident['user']}"))
    return ident["token"], ident["user"], [h["hold"] for h in holds if h.get("status") == "held"]


async def _expect_totals(page: Any, spent: str, refunded: str, net: str, count: str) -> None:
    line = page.get_by_test_id("my-orders-totals").get_by_test_id("my-orders-total-EUR")
    await expect(line.get_by_test_id("my-total-spent")).to_have_text(spent, timeout=ms(10))
    await expect(line.get_by_test_id("my-total-refunded")).to_have_text(refunded, timeout=ms(10))
    await expect(line.get_by_test_id("my-total-net")).to_have_text(net, timeout=ms(10))
    await expect(line.get_by_test_id("my-total-count")).to_have_text(count)


async def _settled(locator: Any) -> None:
    """Wait for the element's finite animations (the sheet's slide-in) to finish."""
    await locator.evaluate("""el => Promise.all(el.getAnimations({ subtree: true })
        .filter((a) => a.effect?.getTiming().iterations !== Infinity).map((a) => a.finished))""")


async def _hide_toast(page: Any) -> None:
    """The transient toast off the screenshot."""
    await page.evaluate("() => { document.querySelector('[data-testid=\"toast\"]').hidden = true; }")


async def test_my_orders_lists_holds_orders_refunds_and_totals(live: LiveServer) -> None:
    room = new_room(live, title="My orders night", products=PRODUCTS, pin=EARBUDS)
    first = launch_sale(live, room, EARBUDS, units=10, hold_ttl_s=120)["sale_id"]  # €49.99
    errors: list[str] = []
    async with chromium() as browser:
        context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
        phone = await context.new_page()
        phone.on("pageerror", lambda e: errors.append(f"phone: {e}"))
        phone.on("console", lambda m: errors.append(f"phone: console.{m.type}: {m.text}") if m.type == "error" else None)
        await phone.goto(f"{live.base}/rooms/{room}")
        by = phone.get_by_test_id
        await expect(by("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(by("featured-sale")).to_have_attribute("data-sale-id", first, timeout=ms(10))
        button, sheet, count = by("my-orders-button"), by("my-orders-sheet"), by("my-orders-count")

        # nothing bought yet: the panel says so (read from the server), no badge
        await expect(count).to_be_hidden()
        await button.click()
        await expect(sheet).to_be_visible()
        await expect(sheet).to_have_attribute("data-state", "ready", timeout=ms(10))
        await expect(by("my-orders-empty")).to_be_visible()
        await expect(by("my-orders-totals")).to_be_hidden()
        await by("my-orders-close").click()
        await expect(sheet).to_be_hidden()

        # reserve the first deal: the badge counts one to pay; the panel shows it reserved, with a
        # live pay-by countdown and Pay
        await by("buy-button").click()
        await expect(by("pay-button")).to_be_visible(timeout=ms(10))
        token, user, held = await _held(phone, room)
        assert len(held) == 1, held
        hold1 = held[0]
        await expect(count).to_have_text("1")
        await button.click()
        row1 = by(f"my-hold-row-{hold1}")
        await expect(row1).to_have_attribute("data-status", "reserved", timeout=ms(10))
        await expect(row1.get_by_test_id("my-row-status")).to_have_text("Reserved")
        await expect(row1.get_by_test_id("my-row-title")).to_have_text("Aurora Wireless Earbuds")
        await expect(row1.get_by_test_id("my-row-amount")).to_have_text("€49.99")
        when = row1.get_by_test_id("my-row-when")
        await expect(when).to_have_text(PAY_WITHIN)
        shown = await when.text_content()
        await expect(when).not_to_have_text(shown or "", timeout=ms(5))  # it counts down
        await expect(when).to_have_text(PAY_WITHIN)
        await expect(row1.get_by_test_id("my-hold-pay")).to_have_text("Pay €49.99")

        # pay it from the panel (the sandbox provider's page): reserved -> a settled order, totals
        await _pay_in_panel(phone, hold1, 4999)
        order1 = by(f"my-order-row-{hold1}")  # the order's id is its hold's
        await expect(order1).to_have_attribute("data-status", "settled", timeout=ms(15))
        await expect(row1).to_have_count(0)
        await expect(order1.get_by_test_id("my-row-status")).to_have_text("Settled")
        await expect(order1.get_by_test_id("my-row-amount")).to_have_text("€49.99")
        await expect(order1.get_by_test_id("my-row-title")).to_have_text("Aurora Wireless Earbuds")
        await expect(count).to_be_hidden()
        await _expect_totals(phone, "€49.99", "€0.00", "€49.99", "1 order · 1 unit")

        # a second deal; the viewer switches the card to it (the notice), reserves, and cancels it in the panel
        second = launch_sale(live, room, HOODIE, units=5, unit_price=5500, hold_ttl_s=120, per_user_limit=3)["sale_id"]
        await by("my-orders-close").click()
        await expect(by("new-deal-notice")).to_be_visible(timeout=ms(10))
        await by("new-deal-notice").click()
        await expect(by("featured-sale")).to_have_attribute("data-sale-id", second)
        await expect(by("buy-button")).to_be_enabled(timeout=ms(10))
        await by("buy-button").click()
        await expect(by("pay-button")).to_be_visible(timeout=ms(10))
        _, _, held = await _held(phone, room)
        assert len(held) == 1 and held[0] != hold1, held
        hold2 = held[0]
        await button.click()
        row2 = by(f"my-hold-row-{hold2}")
        await expect(row2).to_have_attribute("data-status", "reserved", timeout=ms(10))
        await expect(row2.get_by_test_id("my-row-amount")).to_have_text("€55.00")
        await expect(row2.get_by_test_id("my-row-title")).to_have_text("Cloud Knit Hoodie")
        await row2.get_by_test_id("my-hold-release").click()
        await expect(row2).to_have_attribute("data-status", "released", timeout=ms(10))
        await expect(row2.get_by_test_id("my-row-status")).to_have_text("Released")
        await expect(row2.get_by_test_id("my-hold-pay")).to_be_hidden()
        assert live.api("GET", f"/api/sales/{second}")["units_left"] == 5
        await _expect_totals(phone, "€49.99", "€0.00", "€49.99", "1 order · 1 unit")  # a release costs nothing

        # the host refunds the settled order: order_refunded reaches the page; "Refunded", totals
        refund = live.api("POST", f"/api/orders/{hold1}/refund", {"restock": True, "reason": "damaged in transit"},
                          token=live.host_token)
        assert refund["status"] == "refunded" and refund["amount"] == 4999, refund
        await expect(order1).to_have_attribute("data-status", "refunded", timeout=ms(10))
        badge = order1.get_by_test_id("my-row-status")
        await expect(badge).to_have_text("Refunded")
        await expect(badge).to_be_visible()
        await expect(by("toast")).to_contain_text("refunded", timeout=ms(5))
        await _expect_totals(phone, "€49.99", "€49.99", "€0.00", "1 order · 1 unit")

        # the same over HTTP (GET /api/me/orders), which the panel reads
        mine = live.api("GET", "/api/me/orders", token=token)
        assert [(o["order_id"], o["status"]) for o in mine["orders"]] == [(hold1, "refunded")], mine
        assert {h["hold_id"]: h["status"] for h in mine["holds"]} == {hold2: "released"}, mine
        assert mine["totals"] == {"EUR": {"orders": 1, "units": 1, "spent": 4999, "refunded": 4999, "net": 0}}, mine

        # the same viewer on a laptop (its guest identity in a fresh context): the list comes from the
        # server alone; a new reservation there shows with its countdown and Pay
        desk_ctx = await browser.new_context(viewport=LAPTOP)
        ident = json.dumps({"token": token, "user": user, "name": "Tester"})
        await desk_ctx.add_init_script(f"localStorage.setItem('livesale.viewer', {json.dumps(ident)});")
        desk = await desk_ctx.new_page()
        desk.on("pageerror", lambda e: errors.append(f"desk: {e}"))
        desk.on("console", lambda m: errors.append(f"desk: console.{m.type}: {m.text}") if m.type == "error" else None)
        await desk.goto(f"{live.base}/rooms/{room}")
        dby = desk.get_by_test_id
        await expect(dby("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(dby("featured-sale")).to_have_attribute("data-sale-id", second, timeout=ms(10))
        await expect(dby("buy-button")).to_be_enabled(timeout=ms(10))
        await dby("buy-button").click()
        await expect(dby("pay-button")).to_be_visible(timeout=ms(10))
        _, _, held = await _held(desk, room)
        assert len(held) == 1 and held[0] not in (hold1, hold2), held
        hold3 = held[0]
        await dby("my-orders-button").click()
        dsheet = dby("my-orders-sheet")
        await expect(dsheet).to_be_visible()
        row3 = dby(f"my-hold-row-{hold3}")
        await expect(row3).to_have_attribute("data-status", "reserved", timeout=ms(10))
        await expect(row3.get_by_test_id("my-row-when")).to_have_text(PAY_WITHIN)
        await expect(row3.get_by_test_id("my-hold-pay")).to_have_text("Pay €55.00")
        await expect(dby(f"my-hold-row-{hold2}")).to_have_attribute("data-status", "released", timeout=ms(10))
        await expect(dby(f"my-order-row-{hold1}")).to_have_attribute("data-status", "refunded")
        await expect(dby(f"my-order-row-{hold1}").get_by_test_id("my-row-status")).to_have_text("Refunded")
        await _expect_totals(desk, "€49.99", "€49.99", "€0.00", "1 order · 1 unit")
        # a reservation to pay comes first
        assert await dby("my-holds-list").locator("li").first.get_attribute("data-testid") == f"my-hold-row-{hold3}"
        # the panel lies over the player, beside the card (Buy stays in reach)
        sheet_box, card_box = await dsheet.bounding_box(), await dby("product-card").bounding_box()
        assert sheet_box and card_box and sheet_box["x"] + sheet_box["width"] <= card_box["x"], (sheet_box, card_box)
        # one panel at a time: the bag replaces it, and back
        await dby("bag-button").click()
        await expect(dby("bag-sheet")).to_be_visible()
        await expect(dsheet).to_be_hidden()
        await dby("my-orders-button").click()
        await expect(dsheet).to_be_visible()
        await expect(dby("bag-sheet")).to_be_hidden()
        await _settled(dsheet)
        await _hide_toast(desk)
        await desk.screenshot(path=_shot("my-orders-desktop.png"))

        # the phone's panel, opened again, reads the server again: the laptop's reservation is there too
        await by("my-orders-close").click()
        await expect(sheet).to_be_hidden()
        await button.click()
        row3p = by(f"my-hold-row-{hold3}")
        await expect(row3p).to_have_attribute("data-status", "reserved", timeout=ms(10))
        await expect(row3p.get_by_test_id("my-row-when")).to_have_text(PAY_WITHIN)
        await expect(row3p.get_by_test_id("my-hold-pay")).to_have_text("Pay €55.00")
        await expect(count).to_have_text("1")
        await expect(order1).to_have_attribute("data-status", "refunded")
        await expect(row2).to_have_attribute("data-status", "released")
        await _expect_totals(phone, "€49.99", "€49.99", "€0.00", "1 order · 1 unit")
        await _settled(sheet)
        box, size = await sheet.bounding_box(), phone.viewport_size
        assert box and size and box["x"] >= 0 and box["x"] + box["width"] <= size["width"] + 0.5, (box, size)
        assert box["y"] >= 0 and box["y"] + box["height"] <= size["height"] + 0.5, (box, size)
        widths = await phone.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= PHONE["width"], widths
        await _hide_toast(phone)
        await phone.screenshot(path=_shot("my-orders-phone.png"))

    if UPDATE_DOC_SHOTS:  # the tracked copies change only when asked to
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("my-orders-phone.png", "my-orders-desktop.png"):
            shutil.copyfile(SHOTS / name, DOC_SHOTS / name)
    assert not errors, "errors in the pages:\n" + "\n".join(errors)


async def test_my_orders_shows_a_reservation_expire(live: LiveServer) -> None:
    """A reservation not paid by its pay-by time turns "Expired" in the open panel at that instant, and
    reads expired again when the panel is opened anew (from the server); it costs nothing."""
    room = new_room(live, title="Short hold", products=PRODUCTS, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=5, hold_ttl_s=5)  # the shortest pay-by window
    errors: list[str] = []
    async with chromium() as browser:
        page = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
        by = page.get_by_test_id
        await expect(by("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(by("buy-button")).to_be_enabled(timeout=ms(10))
        await by("buy-button").click()
        await expect(by("pay-button")).to_be_visible(timeout=ms(10))
        _, _, held = await _held(page, room)
        assert len(held) == 1, held
        await by("my-orders-button").click()
        row = by(f"my-hold-row-{held[0]}")
        await expect(row).to_have_attribute("data-status", "reserved", timeout=ms(10))
        await expect(row.get_by_test_id("my-row-when")).to_have_text(re.compile(r"^pay within 00:0\d$"))
        await expect(row).to_have_attribute("data-status", "expired", timeout=ms(10))
        await expect(row.get_by_test_id("my-row-status")).to_have_text("Expired")
        await expect(row.get_by_test_id("my-row-when")).to_have_text("not paid in time")
        await expect(row.get_by_test_id("my-hold-pay")).to_be_hidden()
        await expect(by("my-orders-count")).to_be_hidden()
        await by("my-orders-close").click()
        await by("my-orders-button").click()
        await expect(by("my-orders-sheet")).to_have_attribute("data-state", "ready", timeout=ms(10))
        await expect(row).to_have_attribute("data-status", "expired")
        await expect(by("my-orders-totals")).to_be_hidden()  # no settled order: no totals
    assert not errors, "errors in the pages:\n" + "\n".join(errors)

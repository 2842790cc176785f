"""Browser test for issue "Goods", item 5, "The show's bag", in a real Chromium.

The viewer page lists every product and deal of the live in a bag (a sheet on phones, a panel over the
player on wider screens), each with its state, price, units left and countdown, updated live; and the
featured card never switches under the viewer's finger: a new deal raises a "New deal: … — view" notice
instead of replacing the sale the viewer is looking at (the defect as found: paying for a €49.99 sale
that was still open swapped the card to a newer €62.30 one), and Buy buys the sale its card shows.

Uses the module's server (`browser_helpers.live`, the default payment mode: the sandbox provider's
hosted page) and a room of its own. Screenshots go to test-output/screenshots/; with
LIVESALE_UPDATE_SCREENSHOTS=1 they are also copied to the tracked docs/screenshots/.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import pytest

from browser_helpers import (DOC_SHOTS, LAPTOP, PHONE, SHOTS, UPDATE_DOC_SHOTS, LiveServer, _open, _shot, chromium,
                             expect, launch_sale, ms, new_room, pay_on_sandbox_page)
from browser_helpers import live  # noqa: F401  (the module-scoped server, default payment mode: the sandbox provider)

pytestmark = pytest.mark.browser

EARBUDS, SNEAKERS, HOODIE = "p-earbuds", "p-sneakers", "p-hoodie"
PRODUCTS = [
    {"product_id": EARBUDS, "sku": "AUR-EB-01", "title": "Aurora Wireless Earbuds", "unit_price": 4999, "currency": "EUR"},
    {"product_id": SNEAKERS, "sku": "SN-CLOUD-42", "title": "Cloud Runner Sneakers", "unit_price": 8900,
     "currency": "EUR"},
    {"product_id": HOODIE, "sku": "CK-HD-02", "title": "Cloud Knit Hoodie", "unit_price": 6900, "currency": "EUR"},
]


def _sent_buys(frames: list[Any]) -> list[dict[str, Any]]:
    """The `buy` messages the page sent over its WebSocket (JSON text frames)."""
    out = []
    for payload in frames:
        try:
            msg = json.loads(payload)
        except (TypeError, ValueError):
            continue
        if isinstance(msg, dict) and msg.get("type") == "buy":
            out.append(msg)
    return out


async def test_bag_lists_the_show_and_the_card_stays_on_the_viewers_sale(live: LiveServer) -> None:
    room = new_room(live, title="Goods night", products=PRODUCTS, pin=EARBUDS)
    first = launch_sale(live, room, EARBUDS, units=10, hold_ttl_s=120)["sale_id"]  # €49.99, open now
    errors: list[str] = []
    frames: list[Any] = []
    async with chromium() as browser:
        # a new user on a phone; every frame the page sends is kept (which sale a buy names)
        context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
        phone = await context.new_page()
        phone.on("pageerror", lambda e: errors.append(f"phone: {e}"))
        phone.on("console", lambda m: errors.append(f"phone: console.{m.type}: {m.text}") if m.type == "error" else None)
        phone.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(payload)))
        await phone.goto(f"{live.base}/rooms/{room}")
        by = phone.get_by_test_id
        await expect(by("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        featured, buy, notice = by("featured-sale"), by("buy-button"), by("new-deal-notice")
        await expect(featured).to_have_attribute("data-sale-id", first, timeout=ms(10))
        await expect(by("pinned-price")).to_have_text("€49.99")
        await expect(buy).to_be_enabled(timeout=ms(10))
        await expect(notice).to_be_hidden()

        # the host launches a second deal (€62.30, open at once): a notice, the card stays on the first
        second = launch_sale(live, room, SNEAKERS, units=5, unit_price=6230)["sale_id"]
        await expect(notice).to_be_visible(timeout=ms(10))
        await expect(notice).to_have_text("New deal: Cloud Runner Sneakers €62.30 — view")
        await expect(featured).to_have_attribute("data-sale-id", first)
        await expect(by("pinned-title")).to_have_text("Aurora Wireless Earbuds")
        await expect(by("pinned-price")).to_have_text("€49.99")
        await expect(buy).to_have_attribute("data-sale-id", first)

        # the bag: both deals with state, price, units and countdown, and the product without a deal
        await expect(by("bag-count")).to_have_text("3")  # two deals + the hoodie
        await by("bag-button").click()
        sheet = by("bag-sheet")
        await expect(sheet).to_be_visible()
        row1, row2 = by(f"bag-row-{first}"), by(f"bag-row-{second}")
        await expect(row1).to_have_attribute("data-state", "open")
        await expect(row1).to_have_attribute("data-featured", "true")
        await expect(row1.get_by_test_id("bag-title")).to_have_text("Aurora Wireless Earbuds")
        await expect(row1.get_by_test_id("bag-price")).to_have_text("€49.99")
        await expect(row1.get_by_test_id("bag-units")).to_have_text("10 of 10 left")
        await expect(row1.get_by_test_id("bag-countdown")).to_have_text(re.compile(r"^Ends in 0[12]:\d\d$"))
        await expect(row2).to_have_attribute("data-state", "open")
        await expect(row2).not_to_have_attribute("data-featured", "true")
        await expect(row2.get_by_test_id("bag-price")).to_have_text("€62.30")
        await expect(row2.get_by_test_id("bag-was")).to_have_text("€89.00")
        await expect(row2.get_by_test_id("bag-units")).to_have_text("5 of 5 left")
        await expect(row2.get_by_test_id("bag-state")).to_have_text("On now")
        hoodie = by(f"bag-product-{HOODIE}")
        await expect(hoodie.get_by_test_id("bag-state")).to_have_text("Not on sale")
        await expect(hoodie.get_by_test_id("bag-price")).to_have_text("€69.00")
        await _within_viewport(phone, sheet)
        await phone.screenshot(path=_shot("viewer-phone-bag.png"))
        await by("bag-close").click()
        await expect(sheet).to_be_hidden()

        # the viewer reserves: the buy names the first sale, the stock moves there only
        await buy.click()
        await expect(by("pay-button")).to_be_visible(timeout=ms(10))
        await expect(by("status")).to_contain_text("pay within")
        buys = _sent_buys(frames)
        assert [b["sale"] for b in buys] == [first], buys
        assert live.api("GET", f"/api/sales/{first}")["units_left"] == 9
        assert live.api("GET", f"/api/sales/{second}")["units_left"] == 5
        await expect(row1.get_by_test_id("bag-units")).to_have_text("9 of 10 left", timeout=ms(10))
        await expect(row1.get_by_test_id("bag-flag")).to_have_text("Reserved · pay")
        await expect(featured).to_have_attribute("data-sale-id", first)

        # a third deal, scheduled: the notice names it, the card still does not move
        third = launch_sale(live, room, HOODIE, units=3, unit_price=5500, starts_in_s=90)["sale_id"]
        await expect(by("new-deal-text")).to_have_text(
            re.compile(r"^New deal: Cloud Knit Hoodie €55\.00 · in 01:[23]\d — view$"), timeout=ms(10))
        await expect(featured).to_have_attribute("data-sale-id", first)
        await _settled(by("product-card"))
        await phone.screenshot(path=_shot("viewer-phone-new-deal.png"))

        # paying for the first while it is still open keeps it on the card (the defect as found)
        await pay_on_sandbox_page(phone, price=4999)
        await expect(by("status")).to_have_attribute("data-state", "confirmed", timeout=ms(15))
        await expect(featured).to_have_attribute("data-sale-id", first)
        await expect(by("pinned-price")).to_have_text("€49.99")
        await expect(buy).to_have_attribute("data-state", "confirmed")
        await expect(row1.get_by_test_id("bag-flag")).to_have_text("Bought ✓")
        await expect(notice).to_be_visible()

        # tapping the notice switches the card to the deal it names
        await notice.click()
        await expect(featured).to_have_attribute("data-sale-id", third)
        await expect(by("pinned-title")).to_have_text("Cloud Knit Hoodie")
        await expect(by("countdown")).to_have_attribute("data-phase", "scheduled")
        await expect(buy).to_have_attribute("data-state", "not-started")
        # the notice falls back to the earlier deal that is still on and was neither viewed nor dismissed
        await expect(notice).to_have_text("New deal: Cloud Runner Sneakers €62.30 — view")
        await by("new-deal-dismiss").click()
        await expect(notice).to_be_hidden()
        await expect(featured).to_have_attribute("data-sale-id", third)

        # a row of the bag does too; then Buy buys that row's sale
        await by("bag-button").click()
        third_row = by(f"bag-row-{third}")
        await expect(third_row).to_have_attribute("data-state", "scheduled")
        await expect(third_row.get_by_test_id("bag-countdown")).to_have_text(re.compile(r"^Starts in 01:[0-3]\d$"))
        await expect(third_row.get_by_test_id("bag-units")).to_have_text("3 of 3 left")
        await row2.click()
        await expect(sheet).to_be_hidden()  # on a phone the sheet closes to show the card
        await expect(featured).to_have_attribute("data-sale-id", second)
        await expect(by("pinned-price")).to_have_text("€62.30")
        await expect(buy).to_have_attribute("data-sale-id", second)
        await expect(buy).to_be_enabled()
        await buy.click()
        await expect(by("pay-button")).to_be_visible(timeout=ms(10))
        assert [b["sale"] for b in _sent_buys(frames)] == [first, second]
        assert live.api("GET", f"/api/sales/{second}")["units_left"] == 4
        assert live.api("GET", f"/api/sales/{first}")["units_left"] == 9

        # a laptop: the bag is a panel over the player, next to the card (both visible)
        laptop = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
        await expect(laptop.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(laptop.get_by_test_id("bag-count")).to_have_text("3", timeout=ms(10))
        await laptop.get_by_test_id("bag-button").click()
        lap_sheet = laptop.get_by_test_id("bag-sheet")
        await expect(lap_sheet).to_be_visible()
        await expect(laptop.get_by_test_id(f"bag-row-{second}").get_by_test_id("bag-units")).to_have_text(
            "4 of 5 left", timeout=ms(10))
        card = laptop.get_by_test_id("product-card")
        sheet_box, card_box = await lap_sheet.bounding_box(), await card.bounding_box()
        assert sheet_box and card_box and sheet_box["x"] + sheet_box["width"] <= card_box["x"], (sheet_box, card_box)
        await _within_viewport(laptop, lap_sheet)
        await laptop.get_by_test_id(f"bag-row-{first}").click()
        await expect(laptop.get_by_test_id("featured-sale")).to_have_attribute("data-sale-id", first)
        await expect(lap_sheet).to_be_visible()  # wide enough: the panel stays open beside the card
        await _settled(card)
        await laptop.screenshot(path=_shot("viewer-laptop-bag.png"))

    if UPDATE_DOC_SHOTS:  # the tracked copies change only when asked to
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("viewer-phone-bag.png", "viewer-phone-new-deal.png", "viewer-laptop-bag.png"):
            shutil.copyfile(SHOTS / name, DOC_SHOTS / name)
    assert not errors, "errors in the pages:\n" + "\n".join(errors)



async def test_card_moves_on_after_its_sale_ends_unless_a_hold_is_unpaid(live: LiveServer) -> None:
    """When the featured sale ends, the card moves to the newest open deal a few seconds later, except for
    a viewer with an unpaid reservation on it: that card stays (with Pay) and the notice offers the deal."""
    room = new_room(live, title="Goods night", products=PRODUCTS, pin=EARBUDS)
    first = launch_sale(live, room, EARBUDS, units=10, hold_ttl_s=120)["sale_id"]
    errors: list[str] = []
    async with chromium() as browser:
        holder = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
        other = await _open(browser, f"{live.base}/rooms/{room}", PHONE, errors, is_mobile=True, has_touch=True)
        for v in (holder, other):
            await expect(v.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
            await expect(v.get_by_test_id("featured-sale")).to_have_attribute("data-sale-id", first, timeout=ms(10))
            await expect(v.get_by_test_id("buy-button")).to_be_enabled(timeout=ms(10))
        await holder.get_by_test_id("buy-button").click()
        await expect(holder.get_by_test_id("pay-button")).to_be_visible(timeout=ms(10))

        second = launch_sale(live, room, SNEAKERS, units=5, unit_price=6230)["sale_id"]
        for v in (holder, other):
            await expect(v.get_by_test_id("new-deal-notice")).to_be_visible(timeout=ms(10))
            await expect(v.get_by_test_id("featured-sale")).to_have_attribute("data-sale-id", first)

        # the host ends the first sale: both cards show it ended first
        live.api("POST", f"/api/rooms/{room}/actions/end_sale", {"sale": first})
        await expect(other.get_by_test_id("buy-button")).to_have_attribute("data-state", "ended", timeout=ms(10))
        await expect(holder.get_by_test_id(f"bag-row-{first}")).to_have_attribute("data-state", "closed",
                                                                                 timeout=ms(10))
        # a few seconds later the viewer without a hold is moved to the open deal (Buy usable again)
        await expect(other.get_by_test_id("featured-sale")).to_have_attribute("data-sale-id", second, timeout=ms(10))
        await expect(other.get_by_test_id("pinned-price")).to_have_text("€62.30")
        await expect(other.get_by_test_id("new-deal-notice")).to_be_hidden()
        await expect(other.get_by_test_id("buy-button")).to_have_attribute("data-sale-id", second)
        await expect(other.get_by_test_id("buy-button")).to_be_enabled(timeout=ms(5))
        # the viewer with an unpaid reservation keeps the card (Pay), with the notice for the new deal
        await expect(holder.get_by_test_id("featured-sale")).to_have_attribute("data-sale-id", first)
        await expect(holder.get_by_test_id("pay-button")).to_be_visible()
        await expect(holder.get_by_test_id("pay-button")).to_have_text("Pay €49.99")
        await expect(holder.get_by_test_id("new-deal-text")).to_have_text("New deal: Cloud Runner Sneakers €62.30 — view")
        await expect(holder.get_by_test_id(f"bag-row-{first}").get_by_test_id("bag-flag")).to_have_text("Reserved · pay")
    assert not errors, "errors in the pages:\n" + "\n".join(errors)

async def _within_viewport(page: Any, locator: Any) -> None:
    """The element lies inside the page's viewport (nothing cut off at the sides or the bottom), once
    its opening animation (a slide, which moves its box) has finished."""
    await _settled(locator)
    box = await locator.bounding_box()
    size = page.viewport_size
    assert box and size, (box, size)
    assert box["x"] >= 0 and box["x"] + box["width"] <= size["width"] + 0.5, (box, size)
    assert box["y"] >= 0 and box["y"] + box["height"] <= size["height"] + 0.5, (box, size)


async def _settled(locator: Any) -> None:
    """Wait for the element's animations (its own and its children's, e.g. the card's swap) to finish;
    endless ones (the Buy button's glow) are left alone."""
    await locator.evaluate("""el => Promise.all(el.getAnimations({ subtree: true })
        .filter((a) => a.effect?.getTiming().iterations !== Infinity).map((a) => a.finished))""")

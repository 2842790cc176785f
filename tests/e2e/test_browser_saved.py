"""Browser test for issue "Goods", item 8, "Save for later", in a real Chromium.

A viewer saves a product of the show for later from the bag or the featured card: a bookmark toggle
(`save-<product_id>`, `aria-pressed`) that calls `PUT` / `DELETE /api/me/saved/{room}/{product}`
through livesale.js (`client.saveProduct()`); the page reads the viewer's saved products of this live
after joining (`GET /api/me/saved`, `client.savedProducts()`). Saving takes no stock (an interest
signal: the host's dashboard counts it in `saved`).

On a phone: a tap in the bag saves the deal's product (the card's toggle follows; the server lists it,
the dashboard counts 1, the sale's stock is unchanged, no `buy` is sent); a reload keeps it saved, and a
product the same viewer saved in another live is not shown as saved in this one; a tap on the card
removes it (the dashboard counts 0). A viewer without a token is asked to sign in, as for Buy.
Screenshot test-output/screenshots/viewer-phone-saved.png.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from browser_helpers import PHONE, LiveServer, _shot, chromium, expect, launch_sale, ms, new_room
from browser_helpers import live  # noqa: F401  (the module-scoped server)

pytestmark = pytest.mark.browser

EARBUDS, HOODIE = "p-earbuds", "p-hoodie"
PRODUCTS = [
    {"product_id": EARBUDS, "sku": "AUR-EB-01", "title": "Aurora Wireless Earbuds", "unit_price": 4999, "currency": "EUR"},
    {"product_id": HOODIE, "sku": "CK-HD-02", "title": "Cloud Knit Hoodie", "unit_price": 6900, "currency": "EUR"},
]


def _saved(live: LiveServer, token: str) -> set[tuple[str, str]]:
    """(room, product) the viewer saved, from GET /api/me/saved with their token."""
    out = live.api("GET", "/api/me/saved", token=token)
    return {(item["room_id"], item["product"]["product_id"]) for item in out["saved"]}


def _dashboard_saved(live: LiveServer, room: str) -> dict[str, int]:
    """The host dashboard's `saved` counts {product_id: viewers} (host token)."""
    saved: dict[str, int] = live.api("GET", f"/api/rooms/{room}/dashboard")["saved"]
    return saved


def _sent_types(frames: list[Any]) -> list[str]:
    """The types of the messages the page sent over its WebSockets."""
    out = []
    for payload in frames:
        try:
            msg = json.loads(payload)
        except (TypeError, ValueError):
            continue
        if isinstance(msg, dict):
            out.append(str(msg.get("type")))
    return out


async def _page(browser: Any, errors: list[str], frames: list[Any] | None = None) -> Any:
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    page = await context.new_page()
    page.on("pageerror", lambda e: errors.append(f"phone: {e}"))
    page.on("console", lambda m: errors.append(f"phone: console.{m.type}: {m.text}") if m.type == "error" else None)
    if frames is not None:
        page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(payload)))
    return page


async def _settled(locator: Any) -> None:
    """Wait for the element's finite animations (the sheet's slide) to finish."""
    await locator.evaluate("""el => Promise.all(el.getAnimations({ subtree: true })
        .filter((a) => a.effect?.getTiming().iterations !== Infinity).map((a) => a.finished))""")


async def test_save_for_later_takes_no_stock_and_survives_a_reload(live: LiveServer) -> None:
    room = new_room(live, title="Save night", products=PRODUCTS, pin=EARBUDS)
    other = new_room(live, title="Another live", products=PRODUCTS)
    sale = launch_sale(live, room, EARBUDS, units=5, hold_ttl_s=120)["sale_id"]
    errors: list[str] = []
    frames: list[Any] = []
    async with chromium() as browser:
        phone = await _page(browser, errors, frames)
        await phone.goto(f"{live.base}/rooms/{room}")
        by = phone.get_by_test_id
        await expect(by("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(by("featured-sale")).to_have_attribute("data-sale-id", sale, timeout=ms(10))
        await expect(by("buy-button")).to_have_attribute("data-state", "buy", timeout=ms(10))
        # the page's viewer: the guest identity it keeps in localStorage
        ident = json.loads(await phone.evaluate("localStorage.getItem('livesale.viewer')"))
        token = ident["token"]
        card_save = by("product-card").get_by_test_id(f"save-{EARBUDS}")
        await expect(card_save).to_have_attribute("aria-pressed", "false")
        await expect(card_save).to_have_attribute("data-state", "unsaved")

        # the bag: a save toggle on the deal's row and on the product without a deal
        await by("bag-button").click()
        sheet = by("bag-sheet")
        await expect(sheet).to_be_visible()
        row, hoodie_row = by(f"bag-row-{sale}"), by(f"bag-product-{HOODIE}")
        row_save, hoodie_save = row.get_by_test_id(f"save-{EARBUDS}"), hoodie_row.get_by_test_id(f"save-{HOODIE}")
        await expect(row_save).to_have_attribute("aria-pressed", "false")
        await expect(hoodie_save).to_have_attribute("aria-pressed", "false")
        await expect(hoodie_save).to_be_enabled()  # the row itself is not tappable (no deal); its toggle is

        await row_save.tap()
        await expect(row_save).to_have_attribute("aria-pressed", "true", timeout=ms(10))
        await expect(row_save).to_have_attribute("data-state", "saved")
        await expect(row_save).to_have_text("Saved")
        await expect(card_save).to_have_attribute("aria-pressed", "true")  # the card's toggle follows
        await expect(sheet).to_be_visible()  # a tap on the toggle is not a tap on the row
        assert _saved(live, token) == {(room, EARBUDS)}
        assert _dashboard_saved(live, room) == {EARBUDS: 1}
        # no stock taken: no buy sent, the sale's units unchanged, Buy still offered
        assert "buy" not in _sent_types(frames), _sent_types(frames)
        assert live.api("GET", f"/api/sales/{sale}")["units_left"] == 5
        await expect(row.get_by_test_id("bag-units")).to_have_text("5 of 5 left")
        await expect(by("buy-button")).to_have_attribute("data-state", "buy")
        await _settled(sheet)
        await phone.screenshot(path=_shot("viewer-phone-saved.png"))

        # the same viewer saved the hoodie in another live: it is not saved in this one
        live.api("PUT", f"/api/me/saved/{other}/{HOODIE}", token=token)
        assert _saved(live, token) == {(room, EARBUDS), (other, HOODIE)}

        # a reload: still saved (read from the server after the join)
        await phone.reload()
        await expect(by("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(card_save).to_have_attribute("aria-pressed", "true", timeout=ms(10))
        await expect(card_save).to_have_attribute("data-state", "saved")
        await by("bag-button").click()
        await expect(sheet).to_be_visible()
        await expect(row_save).to_have_attribute("aria-pressed", "true")
        await expect(hoodie_save).to_have_attribute("aria-pressed", "false")  # read in the same answer
        await by("bag-close").click()
        await expect(sheet).to_be_hidden()

        # a tap on the card's toggle: not saved any more, on the server and in the bag
        await card_save.tap()
        await expect(card_save).to_have_attribute("aria-pressed", "false", timeout=ms(10))
        await expect(card_save).to_have_attribute("data-state", "unsaved")
        await expect(card_save).to_have_text("Save")
        assert _saved(live, token) == {(other, HOODIE)}
        assert _dashboard_saved(live, room).get(EARBUDS, 0) == 0
        assert _dashboard_saved(live, other) == {HOODIE: 1}
        await by("bag-button").click()
        await expect(row_save).to_have_attribute("aria-pressed", "false")
        assert live.api("GET", f"/api/sales/{sale}")["units_left"] == 5
        assert "buy" not in _sent_types(frames), _sent_types(frames)
    assert not errors, "errors in the pages:\n" + "\n".join(errors)


async def test_a_viewer_without_a_token_is_asked_to_sign_in_to_save(live: LiveServer) -> None:
    """A server that offers no guest tokens (the production default; this one's `/api/time` answer is
    rewritten to say so) and no token handed over: the page watches anonymously, and the toggle asks
    to sign in without calling the API."""
    room = new_room(live, title="Save night", products=PRODUCTS, pin=EARBUDS)
    errors: list[str] = []
    async with chromium() as browser:
        phone = await _page(browser, errors)

        async def no_guests(route: Any) -> None:
            answer = await route.fetch()
            body = await answer.json()
            await route.fulfill(response=answer, json={**body, "guests": False})

        await phone.route("**/api/time", no_guests)
        calls: list[str] = []
        phone.on("request", lambda r: calls.append(r.url) if "/api/me/saved" in r.url else None)
        await phone.goto(f"{live.base}/rooms/{room}")
        by = phone.get_by_test_id
        await expect(by("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(by("viewer-name")).to_have_text("Not signed in")
        card_save = by("product-card").get_by_test_id(f"save-{EARBUDS}")
        await expect(card_save).to_have_attribute("data-state", "signin", timeout=ms(10))
        await card_save.tap()
        await expect(by("toast")).to_have_text(re.compile(r"^Saving for later needs signing in"))
        await expect(card_save).to_have_attribute("aria-pressed", "false")
        await phone.evaluate("() => { document.querySelector('[data-testid=\"toast\"]').hidden = true; }")
        await by("bag-button").click()
        hoodie_save = by(f"bag-product-{HOODIE}").get_by_test_id(f"save-{HOODIE}")
        await expect(hoodie_save).to_have_attribute("data-state", "signin")
        await hoodie_save.tap()
        await expect(hoodie_save).to_have_attribute("aria-pressed", "false")
        await expect(by("toast")).to_be_visible()
        assert calls == [], calls
        assert _dashboard_saved(live, room) == {}
    assert not errors, "errors in the pages:\n" + "\n".join(errors)

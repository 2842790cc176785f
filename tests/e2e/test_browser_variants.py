"""Browser test for issue "Goods", item 4, "The viewer picks a variant and a quantity", in a real Chromium.

A product with two variants (Red / M, Blue / L), each a SKU with its own stock pool (`<fam>__red-m`,
`<fam>__blue-l`), sold as one sale of variants (two Sales sharing `group`) with a per-user limit of 3
across them. On the viewer page the featured card shows a variant picker (each variant with its units
left; the card's sale is the picked variant's, never switched by itself) and a quantity picker
(1..min(limit, units left, 10), back to 1 when the card's sale changes). A viewer picks Blue, sets 2 and
buys: the server holds 2 of the blue sale; picks Red (quantity back to 1), asks for 2: LIMIT, shown as
"3 per person across this sale"; lowers to 1: RESERVED on red. The bag lists the sale as one row with its
variants. Done on a phone (390x844) and on a laptop (1280x800), each a guest of its own; then the red
variant sells out and its option is disabled. A second test launches a sale of variants from the host
panel's launch form.

Setup over HTTP (`live.api`): a merchant token minted with the live server's secret opens the pools.
Uses the module's server (`browser_helpers.live`, default payment mode: nothing is paid here).
Screenshots: test-output/screenshots/variants-phone.png, variants-desktop.png.
"""

from __future__ import annotations

import json
import secrets
import shutil
from typing import Any

import pytest

from browser_helpers import (DOC_SHOTS, LAPTOP, PHONE, SHOTS, UPDATE_DOC_SHOTS, LiveServer, _open, _shot, chromium,
                             expect, launch_sale, ms, new_room, viewer_token)
from browser_helpers import live  # noqa: F401  (the module-scoped server, default payment mode: the sandbox provider)
from commerce.identity import mint_merchant_token

pytestmark = pytest.mark.browser

PRICE = 2900  # EUR minor units
LIMIT = 3
SHOT_NAMES = ("variants-phone.png", "variants-desktop.png")


def _tee(live: LiveServer, pool_units: int = 10) -> dict[str, Any]:
    """Two variant pools (`<fam>__red-m`, `<fam>__blue-l`) of a fresh merchant, and a live room whose
    product `p-tee` has the two variants (pinned)."""
    uid = secrets.token_hex(4)
    merchant = mint_merchant_token(live.env["LIVESALE_SECRET"], f"m-{uid}")
    fam = f"tee{uid}"
    red_pool, blue_pool = f"{fam}__red-m", f"{fam}__blue-l"
    red_sku, blue_sku = f"TEE-{uid}-RM", f"TEE-{uid}-BL"
    for pool, sku in ((red_pool, red_sku), (blue_pool, blue_sku)):
        live.api("POST", "/api/pools", {"pool_id": pool, "sku": sku, "title": "Logo Tee", "unit_price": PRICE,
                                        "units": pool_units, "currency": "EUR"}, token=merchant)
    room = new_room(live, title="Tee drop", pin="p-tee", products=[{
        "product_id": "p-tee", "sku": f"TEE-{uid}", "title": "Logo Tee", "unit_price": PRICE, "currency": "EUR",
        "variants": [{"variant_id": "red-m", "sku": red_sku, "label": "Red / M"},
                     {"variant_id": "blue-l", "sku": blue_sku, "label": "Blue / L"}]}])
    return {"room": room, "merchant": merchant, "red_pool": red_pool, "blue_pool": blue_pool}


def _sent_buys(frames: list[Any]) -> list[tuple[str, int]]:
    """(sale, qty) of the `buy` messages the page sent over its WebSocket (JSON text frames)."""
    out = []
    for payload in frames:
        try:
            msg = json.loads(payload)
        except (TypeError, ValueError):
            continue
        if isinstance(msg, dict) and msg.get("type") == "buy":
            out.append((msg["sale"], msg.get("qty", 1)))
    return out


def _sale(live: LiveServer, sale: str) -> dict[str, Any]:
    out: dict[str, Any] = live.api("GET", f"/api/sales/{sale}")
    return out


async def _settled(locator: Any) -> None:
    """Wait for the element's finite animations (and its children's) to finish."""
    await locator.evaluate("""el => Promise.all(el.getAnimations({ subtree: true })
        .filter((a) => a.effect?.getTiming().iterations !== Infinity).map((a) => a.finished))""")


async def _pick_and_buy(live: LiveServer, page: Any, frames: list[Any], red: str, blue: str, group: str,
                        shot: str | None = None) -> None:
    """One viewer: the picker shows both variants with units; Blue x2 reserved; Red x2 refused (LIMIT,
    3 across the sale); Red x1 reserved. Each step checked on the page and on the server. `shot`: a
    screenshot of the LIMIT answer (both pickers and the message on the card)."""
    by = page.get_by_test_id
    featured, buy, status = by("featured-sale"), by("buy-button"), by("status")
    picker, qty = by("variant-picker"), by("qty-value")
    await expect(by("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
    await expect(picker).to_be_visible(timeout=ms(10))
    opt_red, opt_blue = by(f"variant-option-{red}"), by(f"variant-option-{blue}")
    # both variants with their units left; the card starts on the first variant with units (Red / M)
    for opt, sale, label in ((opt_red, red, "Red / M"), (opt_blue, blue, "Blue / L")):
        await expect(opt).to_contain_text(label)
        await expect(opt).to_contain_text(f"{_sale(live, sale)['units_left']} left", timeout=ms(10))
        await expect(opt).to_be_enabled()
    await expect(featured).to_have_attribute("data-sale-id", red)
    await expect(opt_red).to_have_attribute("aria-checked", "true")
    await expect(opt_blue).to_have_attribute("aria-checked", "false")
    await expect(by("pinned-title")).to_have_text("Logo Tee")
    await expect(buy).to_be_enabled(timeout=ms(10))
    await expect(qty).to_have_text("1")

    # Blue, quantity 2 (the + stops at the per-user limit, 3), Buy: 2 units of the blue sale held
    held_before = _sale(live, blue)["held"]
    await opt_blue.click()
    await expect(featured).to_have_attribute("data-sale-id", blue)
    await expect(buy).to_have_attribute("data-sale-id", blue)
    await expect(opt_blue).to_have_attribute("aria-checked", "true")
    await expect(by("qty-minus")).to_be_disabled()
    for n in (2, 3):
        await by("qty-plus").click()
        await expect(qty).to_have_text(str(n))
    await expect(by("qty-plus")).to_be_disabled()
    await by("qty-minus").click()
    await expect(qty).to_have_text("2")
    await expect(buy).to_have_text("Buy 2 · €58.00")
    await buy.click()
    await expect(by("pay-button")).to_be_visible(timeout=ms(10))
    await expect(by("pay-button")).to_have_text("Pay €58.00")
    await expect(status).to_contain_text("pay within")
    assert _sale(live, blue)["held"] == held_before + 2
    await expect(opt_blue).to_have_attribute("data-held", "true")
    await expect(featured).to_have_attribute("data-sale-id", blue)  # nothing moves the card by itself

    # Red: the card's sale switches (quantity back to 1); 2 more would make 4 > 3 across the sale: LIMIT
    red_before = _sale(live, red)
    await opt_red.click()
    await expect(featured).to_have_attribute("data-sale-id", red)
    await expect(buy).to_have_attribute("data-sale-id", red)
    await expect(by("pay-button")).to_be_hidden()
    await expect(qty).to_have_text("1")
    await expect(buy).to_be_enabled()
    await by("qty-plus").click()
    await expect(qty).to_have_text("2")
    await buy.click()
    await expect(status).to_have_attribute("data-state", "limit", timeout=ms(10))
    await expect(status).to_contain_text(f"{LIMIT} per person across this sale")
    await expect(status).to_have_text(f"Limit reached: {LIMIT} per person across this sale "
                                      "(you have 2; 1 more at most).")
    await expect(buy).to_have_attribute("data-state", "limit")
    await expect(buy).to_be_disabled()
    assert _sale(live, red)["held"] == red_before["held"]  # nothing was taken
    if shot:
        await _settled(by("product-card"))
        await page.screenshot(path=_shot(shot))

    # one fewer: Buy again, RESERVED on red
    await expect(by("qty-picker")).to_be_visible()
    await by("qty-minus").click()
    await expect(qty).to_have_text("1")
    await expect(buy).to_be_enabled()
    await expect(buy).to_have_attribute("data-state", "buy")
    await expect(status).to_have_text(f"Limit {LIMIT} per person across this sale: 1 more for you.")
    await buy.click()
    await expect(by("pay-button")).to_be_visible(timeout=ms(10))
    await expect(by("pay-button")).to_have_text("Pay €29.00")
    await expect(status).to_contain_text("pay within")
    assert _sale(live, red)["held"] == red_before["held"] + 1
    assert _sale(live, blue)["held"] == held_before + 2
    await expect(opt_red).to_have_attribute("data-held", "true")
    assert _sent_buys(frames) == [(blue, 2), (red, 2), (red, 1)], _sent_buys(frames)

    # the bag: the sale of variants is one row listing its variants, featured, with my reservation
    await expect(by("bag-count")).to_have_text("1")
    await by("bag-button").click()
    row = by(f"bag-row-{group}")
    await expect(row).to_be_visible()
    await expect(row).to_have_attribute("data-featured", "true")
    await expect(row).to_have_attribute("data-state", "open")
    await expect(row.get_by_test_id("bag-variants")).to_contain_text("Red / M")
    await expect(row.get_by_test_id("bag-variants")).to_contain_text("Blue / L")
    await expect(row.get_by_test_id("bag-flag")).to_have_text("Reserved · pay")
    await expect(by(f"bag-row-{red}")).to_have_count(0)
    await by("bag-close").click()
    await expect(by("bag-sheet")).to_be_hidden()


async def _viewer(browser: Any, url: str, viewport: dict[str, int], errors: list[str], frames: list[Any],
                  **ctx: Any) -> Any:
    context = await browser.new_context(viewport=viewport, **ctx)
    page = await context.new_page()
    page.on("pageerror", lambda e: errors.append(f"{url}: {e}"))
    page.on("console", lambda m: errors.append(f"{url}: console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(payload)))
    await page.goto(url)
    return page


async def test_viewer_picks_a_variant_and_a_quantity(live: LiveServer) -> None:
    tee = _tee(live)
    out = launch_sale(live, tee["room"], "p-tee", units=5, per_user_limit=LIMIT, hold_ttl_s=300,
                      variants=[{"pool": tee["red_pool"], "units": 6}, {"pool": tee["blue_pool"]}])
    sales = {s["variant"]: s for s in out["sales"]}
    red, blue, group = sales["Red / M"]["sale_id"], sales["Blue / L"]["sale_id"], out["group"]
    assert sales["Blue / L"]["allocated"] == 5 and sales["Red / M"]["allocated"] == 6
    url = f"{live.base}/rooms/{tee['room']}"
    errors: list[str] = []
    async with chromium() as browser:
        phone_frames: list[Any] = []
        phone = await _viewer(browser, url, PHONE, errors, phone_frames, is_mobile=True, has_touch=True,
                              device_scale_factor=2)
        await _pick_and_buy(live, phone, phone_frames, red, blue, group, shot="variants-phone.png")

        laptop_frames: list[Any] = []
        laptop = await _viewer(browser, url, LAPTOP, errors, laptop_frames)
        await _pick_and_buy(live, laptop, laptop_frames, red, blue, group)
        assert _sale(live, blue)["held"] == 4 and _sale(live, red)["held"] == 2

        # the rest of red goes to other buyers: its option reads "Sold out" and cannot be picked,
        # the card stays on it (my reservation), blue still offered
        left = _sale(live, red)["units_left"]
        assert left == 4, left
        for i, n in enumerate((3, 1)):
            token, _ = viewer_token(live, f"Other {i}")
            live.api("POST", f"/api/sales/{red}/reserve", {"request_id": f"other-{i}", "qty": n}, token=token)
        for page in (laptop, phone):
            opt = page.get_by_test_id(f"variant-option-{red}")
            await expect(opt).to_have_attribute("data-state", "sold_out", timeout=ms(10))
            await expect(opt).to_contain_text("Sold out")
            await expect(opt).to_be_disabled()
            await expect(page.get_by_test_id(f"variant-option-{blue}")).to_be_enabled()
            await expect(page.get_by_test_id(f"variant-option-{blue}")).to_contain_text("1 left", timeout=ms(10))
            await expect(page.get_by_test_id("featured-sale")).to_have_attribute("data-sale-id", red)
            await expect(page.get_by_test_id("pay-button")).to_be_visible()
        await _settled(laptop.get_by_test_id("product-card"))
        await laptop.screenshot(path=_shot("variants-desktop.png"))

    if UPDATE_DOC_SHOTS:  # the tracked copies change only when asked to
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        for name in SHOT_NAMES:
            shutil.copyfile(SHOTS / name, DOC_SHOTS / name)
    assert not errors, "errors in the pages:\n" + "\n".join(errors)


async def test_host_panel_launches_a_sale_of_variants(live: LiveServer) -> None:
    tee = _tee(live)
    room = tee["room"]
    errors: list[str] = []
    async with chromium() as browser:
        h = await _open(browser, f"{live.base}/host/{room}#token={live.host_token}", LAPTOP, errors)
        by = h.get_by_test_id
        await expect(by("panel")).to_be_visible(timeout=ms(10))
        await expect(by("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await by("sale-product").select_option("p-tee")
        await expect(by("sale-variants")).to_be_visible(timeout=ms(10))  # the pools are polled every second
        rows = by("sale-variant-row")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_have_attribute("data-pool-id", tee["red_pool"])
        await expect(rows.nth(0)).to_contain_text("Red / M")
        await expect(rows.nth(0)).to_contain_text("10 available")
        await by("sale-variant-red-m").check()
        await by("sale-variant-blue-l").check()
        await by("sale-variant-units-red-m").fill("4")  # blue: blank, the form's Units
        await expect(by("sale-variants-hint")).to_contain_text("One sale of 2 variants")
        await by("sale-units").fill("2")
        await by("sale-limit").fill(str(LIMIT))
        await by("sale-starts-in").fill("0")
        await by("sale-duration").fill("300")
        await by("launch-button").click()
        await expect(by("launch-result")).to_contain_text("2 variants", timeout=ms(10))
        await expect(by("launch-error")).to_have_text("")
        await expect(by("sale-row")).to_have_count(2, timeout=ms(10))

    sales = live.api("GET", f"/api/rooms/{room}")["sales"]
    assert len(sales) == 2 and len({s.get("group") for s in sales}) == 1 and sales[0].get("group"), sales
    got = {s["variant"]: (s["allocated"], s["per_user_limit"], s["pool"]) for s in sales}
    assert got == {"Red / M": (4, LIMIT, tee["red_pool"]), "Blue / L": (2, LIMIT, tee["blue_pool"])}, got
    for pool, available in ((tee["red_pool"], 6), (tee["blue_pool"], 8)):
        assert live.api("GET", f"/api/pools/{pool}", token=tee["merchant"])["available"] == available
    assert not errors, "errors in the pages:\n" + "\n".join(errors)

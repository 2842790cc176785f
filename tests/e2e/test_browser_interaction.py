"""Browser tests for issue #10 "Interaction", item 6: the pages, in a real Chromium.

The viewer page on a phone (390x844): the fan-team picker (your team highlighted, the live leaderboard's
ranks and fans from the ticks, TEAM_LOCKED shown when the room does not allow switching, your team's
badge next to your comments); a poll card whose bars move when another viewer votes over HTTP; coupon
drops (claim, the live "left" count, a loser reason in words: all claimed, another team's drop); the
wallet in "My orders"; a reservation paid with a coupon: the picker next to Pay, the discount and the
total, the provider's page asking for the total, the order confirmed with the discount.

The host panel on a laptop (1280x800) with a viewer page next to it: the host defines the teams, opens a
poll, drops coupons and starts two lucky draws (a unit of a stock pool, entered with the Enter button;
a coupon, entered by commenting its keyword) from the panel's forms, and sees the live counts (votes,
coupons claimed, entrants, winners); the viewer votes, claims, enters, wins, claims the pool prize (a
hold at price 0: no provider page) and follows the draw's "Verify" link: the check page recomputes the
winners in the browser (WebCrypto) from the published entrant list.

Uses the module's server (`browser_helpers.live`, default payment mode: the sandbox provider).
Screenshots: test-output/screenshots/interaction-*.png (copied to docs/screenshots/ with
LIVESALE_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

import pytest

from conftest import timeout
from browser_helpers import (DOC_SHOTS, LAPTOP, PHONE, SHOTS, UPDATE_DOC_SHOTS, LiveServer, _open, _shot, chromium,
                             expect, launch_sale, ms, new_room, pay_on_sandbox_page, viewer_token)
from browser_helpers import live  # noqa: F401  (the module-scoped server, default payment mode: the sandbox provider)
from commerce.identity import mint_merchant_token

pytestmark = pytest.mark.browser

PRICE = 4999  # EUR minor units
COUPON = 500
TEAMS = [{"team_id": "red", "name": "Red", "colour": "#ff3d71", "badge": "🔥"},
         {"team_id": "blue", "name": "Blue", "colour": "#3d8bff", "badge": "🌊"}]
PRODUCTS = [{"product_id": "p-earbuds", "sku": "AUR-EB-01", "title": "Aurora Wireless Earbuds", "unit_price": PRICE,
             "currency": "EUR"}]
PHONE_CTX = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2}
SHOT_NAMES = ("interaction-phone.png", "interaction-phone-pay.png", "interaction-phone-wallet.png",
              "interaction-host-desktop.png", "interaction-viewer-desktop.png", "interaction-verify.png")


# the extras box and its strip of cards back at their start (a tap scrolled them to its target)
SCROLL_EXTRAS_HOME = """() => { document.querySelector('[data-testid="extras"]').scrollTop = 0;
                                document.querySelector('[data-testid="extra-cards"]').scrollLeft = 0; }"""


def _action(live: LiveServer, room: str, action: str, body: dict[str, Any]) -> Any:
    """A host action over HTTP (POST /api/rooms/{room}/actions/{action})."""
    return live.api("POST", f"/api/rooms/{room}/actions/{action}", body)


def _status(live: LiveServer, method: str, path: str, body: dict[str, Any], token: str) -> tuple[int, Any]:
    """An HTTP call that may be refused: (status, parsed body)."""
    try:
        return 200, live.api(method, path, body, token=token)
    except AssertionError as e:  # LiveServer.api: "<method> <path> -> <status> <body>"
        m = re.search(r"-> (\d{3}) ", str(e))
        assert m, e
        return int(m.group(1)), str(e)


async def _quiet_toast(page: Any) -> None:
    """Hide the transient toast (it would cover what a screenshot shows)."""
    await page.evaluate("() => { const t = document.querySelector('[data-testid=\"toast\"]'); if (t) t.hidden = true; }")


async def _shoot(page: Any, name: str, settle: Any = None) -> None:
    """A screenshot in CSS pixels (small files) without the transient toast, once `settle` stopped moving."""
    await _quiet_toast(page)
    if settle is not None:
        await _settled(settle)
    await page.screenshot(path=_shot(name), scale="css")


async def _settled(locator: Any) -> None:
    """Wait for the element's finite animations (and its children's) to finish."""
    await locator.evaluate("""el => Promise.all(el.getAnimations({ subtree: true })
        .filter((a) => a.effect?.getTiming().iterations !== Infinity).map((a) => a.finished))""")


async def test_phone_viewer_teams_poll_coupon_wallet_and_discount(live: LiveServer) -> None:
    room = new_room(live, title="Fan night", products=PRODUCTS, pin="p-earbuds")
    sale = launch_sale(live, room, "p-earbuds", units=5, hold_ttl_s=300, per_user_limit=1)["sale_id"]
    _action(live, room, "set_teams", {"teams": TEAMS, "allow_switch": False})
    errors: list[str] = []
    async with chromium() as browser:
        phone = await _open(browser, f"{live.base}/rooms/{room}", PHONE, errors, **PHONE_CTX)
        by = phone.get_by_test_id
        await expect(by("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))

        # -- fan teams: pick one (highlighted), ranks and fans from the ticks; no switching here: TEAM_LOCKED
        red, blue = by("team-option-red"), by("team-option-blue")
        await expect(by("team-bar")).to_be_visible()
        await expect(red).to_have_attribute("aria-checked", "false")
        await expect(by("my-team")).to_have_text("Pick your team")
        await red.tap()
        await expect(red).to_have_attribute("aria-checked", "true", timeout=ms(10))
        await expect(blue).to_have_attribute("aria-checked", "false")
        await expect(by("my-team")).to_have_text("You: 🔥 Red")
        await expect(red).to_have_attribute("data-members", "1", timeout=ms(10))  # the leaderboard's tick
        await expect(red.get_by_test_id("team-stats")).to_contain_text("1 fan")
        await expect(red.get_by_test_id("team-rank")).to_have_text(re.compile(r"^#[12]$"))
        await blue.tap()
        await expect(by("team-note")).to_have_attribute("data-code", "TEAM_LOCKED", timeout=ms(10))
        await expect(by("team-note")).to_have_text("Switching teams is off in this live: you stay with your team.")
        await expect(red).to_have_attribute("aria-checked", "true")
        # two other viewers join blue over HTTP: blue leads on fans, the ranks follow
        others = [viewer_token(live, f"Fan {i}") for i in range(3)]
        for token, _ in others[:2]:
            live.api("POST", f"/api/rooms/{room}/teams/blue/join", {}, token=token)
        await expect(blue).to_have_attribute("data-members", "2", timeout=ms(10))
        # my comment carries my team's badge
        await by("comment-input").fill("Go red!")
        await by("comment-send").tap()
        mine = by("comments").locator("li.comment.mine").last
        await expect(mine).to_have_attribute("data-team", "red", timeout=ms(10))
        await expect(mine.get_by_test_id("comment-badge")).to_have_text("🔥")

        # -- a poll: my vote marked, the bars move when another viewer votes (over HTTP)
        poll = _action(live, room, "open_poll", {"question": "Which colour next?", "options": ["Red", "Blue", "Green"],
                                                 "duration_s": 300})["poll"]
        pid = poll["poll_id"]
        card = by(f"poll-card-{pid}")
        await expect(card).to_be_visible(timeout=ms(10))
        await expect(card.get_by_test_id("poll-question")).to_have_text("Which colour next?")
        await expect(card).to_have_attribute("data-state", "open")
        await expect(card.get_by_test_id("poll-timer")).to_have_text(re.compile(r"^Ends in 0[45]:\d\d$"))
        await card.get_by_test_id("poll-option-1").tap()
        await expect(card).to_have_attribute("data-voted", "1", timeout=ms(10))
        opt1, opt2 = card.get_by_test_id("poll-option-1"), card.get_by_test_id("poll-option-2")
        await expect(opt1).to_have_attribute("aria-pressed", "true")
        await expect(opt1).to_have_attribute("data-count", "1")
        await expect(opt1.get_by_test_id("poll-pct")).to_have_text("100%")
        await expect(opt2).to_be_disabled()  # one vote per viewer
        for token, _ in others[:2]:
            assert live.api("POST", f"/api/polls/{pid}/vote", {"option": 2}, token=token)["code"] == "VOTED"
        await expect(opt2).to_have_attribute("data-count", "2", timeout=ms(10))  # live, from the ticks
        await expect(opt2.get_by_test_id("poll-pct")).to_have_text("67%")
        await expect(opt1.get_by_test_id("poll-pct")).to_have_text("33%")
        await expect(card.get_by_test_id("poll-status")).to_have_attribute("data-total", "3")
        await expect(card.get_by_test_id("poll-status")).to_contain_text("you voted Blue")
        width = await opt2.get_by_test_id("poll-bar").evaluate("el => el.style.width")
        assert width.startswith("66.6"), width

        # -- coupon drops: claim one (the left count follows); the last one goes to another viewer; another
        # team's drop answers TEAM_ONLY, in words
        drop = _action(live, room, "drop_coupons", {"count": 2, "kind": "amount", "value": COUPON, "currency": "EUR",
                                                    "min_spend": 1000, "claim_s": 300})["drop"]
        did = drop["drop_id"]
        dcard = by(f"drop-card-{did}")
        await expect(dcard).to_be_visible(timeout=ms(10))
        await expect(dcard.get_by_test_id("drop-value")).to_have_text("€5.00 off")
        await expect(dcard.get_by_test_id("drop-terms")).to_contain_text("orders from €10.00")
        await expect(dcard.get_by_test_id("drop-left")).to_have_text("2 of 2 left")
        await expect(dcard.get_by_test_id("drop-timer")).to_have_text(re.compile(r"^Ends in 0[45]:\d\d$"))
        await dcard.get_by_test_id("drop-claim").tap()
        await expect(dcard).to_have_attribute("data-claim", "CLAIMED", timeout=ms(10))
        await expect(dcard.get_by_test_id("drop-claim")).to_have_text("In your wallet ✓")
        await expect(dcard.get_by_test_id("drop-left")).to_have_text("1 of 2 left")
        status, _ = _status(live, "POST", f"/api/drops/{did}/claim", {"request_id": "r-1"}, others[0][0])
        assert status == 200
        await expect(dcard.get_by_test_id("drop-left")).to_have_text("0 of 2 left", timeout=ms(10))
        await expect(dcard).to_have_attribute("data-state", "claimed_out", timeout=ms(10))
        status, body = _status(live, "POST", f"/api/drops/{did}/claim", {"request_id": "r-2"}, others[2][0])
        assert status == 409 and "ALL_CLAIMED" in body, (status, body)
        blue_drop = _action(live, room, "drop_coupons", {"count": 10, "kind": "percent", "value": 20, "team": "blue",
                                                         "claim_s": 300})["drop"]
        bcard = by(f"drop-card-{blue_drop['drop_id']}")
        await expect(bcard).to_be_visible(timeout=ms(10))
        await expect(bcard.get_by_test_id("drop-value")).to_have_text("20% off")
        await bcard.get_by_test_id("drop-claim").tap()
        await expect(bcard).to_have_attribute("data-claim", "TEAM_ONLY", timeout=ms(10))
        await expect(bcard.get_by_test_id("drop-result")).to_have_text("This drop is for team 🌊 Blue fans only.")
        await expect(bcard.get_by_test_id("drop-left")).to_have_text("10 of 10 left")
        await expect(by("team-note")).to_have_text("Teams are final in this live.", timeout=ms(10))  # after the refusal
        await phone.evaluate(SCROLL_EXTRAS_HOME)
        await _shoot(phone, "interaction-phone.png", by("extras"))

        # -- reserve, and pay with the coupon: the picker offers it (the 20% one is not mine), discount and total
        await expect(by("buy-button")).to_have_attribute("data-state", "buy", timeout=ms(10))
        await by("buy-button").tap()
        await expect(by("pay-button")).to_be_visible(timeout=ms(10))
        picker = by("coupon-picker")
        await expect(picker).to_be_visible(timeout=ms(10))
        await expect(by("coupon-select")).to_have_value(did)
        await expect(by("pay-summary")).to_have_text("€49.99 − €5.00 = €44.99")
        await expect(by("pay-button")).to_have_text("Pay €44.99")
        await by("coupon-select").select_option("")  # no coupon: the full price
        await expect(by("pay-button")).to_have_text("Pay €49.99")
        await by("coupon-select").select_option(did)
        await expect(by("pay-button")).to_have_text("Pay €44.99")
        await _shoot(phone, "interaction-phone-pay.png", by("product-card"))
        # the provider's page asks for the total after the discount; the order carries the discount
        await pay_on_sandbox_page(phone, price=PRICE - COUPON)
        await expect(by("status")).to_contain_text("Order confirmed", timeout=ms(20))
        await expect(by("status")).to_contain_text("coupon −€5.00, paid €44.99", timeout=ms(20))
        await expect(picker).to_be_hidden()

        # -- the wallet (My orders): the coupon, used on that order
        await by("my-orders-button").tap()
        row = by(f"wallet-coupon-{did}")
        await expect(row).to_be_visible(timeout=ms(10))
        await expect(row.get_by_test_id("wallet-value")).to_have_text("€5.00 off")
        await expect(row).to_have_attribute("data-status", "redeemed", timeout=ms(10))
        await expect(row.get_by_test_id("wallet-state")).to_have_text("Used")
        order = by("my-orders-list").locator("li.my-row").first
        await expect(order.get_by_test_id("my-row-amount")).to_have_text("€44.99", timeout=ms(10))
        await expect(order.get_by_test_id("my-row-ref")).to_contain_text("coupon −€5.00")
        await _shoot(phone, "interaction-phone-wallet.png", by("my-orders-sheet"))
        coupons = live.api("GET", "/api/me/coupons", token=await _page_token(phone))["coupons"]
        assert [(c["drop_id"], c["state"]) for c in coupons] == [(did, "redeemed")]
        assert live.api("GET", f"/api/sales/{sale}")["units_left"] == 4
    assert not errors, "errors in the pages:\n" + "\n".join(errors)


@asynccontextmanager
async def _commenters(live: LiveServer, room: str, text: str, n: int) -> AsyncIterator[list[str]]:
    """`n` other viewers in the room over raw WebSockets, each posting `text` once (a draw's keyword enters
    them); they stay connected (present at the draw) until the block ends. Yields their user ids."""
    async with aiohttp.ClientSession() as session:
        sockets, readers, users = [], [], []
        try:
            for i in range(n):
                token, user = viewer_token(live, f"Guest {i}")
                ws = await session.ws_connect(f"{live.base}/ws", protocols=("livesale.v1.json",))
                sockets.append(ws)
                await ws.send_json({"type": "join", "room": room, "token": token})
                while (await asyncio.wait_for(ws.receive_json(), timeout(10)))["type"] != "snapshot":
                    pass
                await ws.send_json({"type": "comment", "text": f"{text} please"})
                readers.append(asyncio.create_task(_drain(ws)))  # reads (and so answers pings) until closed
                users.append(user)
            yield users
        finally:
            for ws in sockets:
                await ws.close()
            for t in readers:
                t.cancel()


async def _drain(ws: Any) -> None:
    async for _ in ws:
        pass


async def _page_token(page: Any) -> str:
    """The page's guest viewer token (kept in localStorage)."""
    token: str = await page.evaluate("JSON.parse(localStorage.getItem('livesale.viewer')).token")
    return token


async def test_host_panel_runs_teams_poll_drop_and_draws_and_the_viewer_verifies(live: LiveServer) -> None:
    uid = secrets.token_hex(4)
    merchant = mint_merchant_token(live.env["LIVESALE_SECRET"], f"m-{uid}")
    pool = f"prize{uid}"
    live.api("POST", "/api/pools", {"pool_id": pool, "sku": f"PRZ-{uid}", "title": "Aurora Earbuds (prize)",
                                    "unit_price": PRICE, "units": 5, "currency": "EUR"}, token=merchant)
    room = new_room(live, title="Giveaway night", products=PRODUCTS, pin="p-earbuds")
    errors: list[str] = []
    async with chromium() as browser:
        host = await _open(browser, f"{live.base}/host/{room}#token={live.host_token}", LAPTOP, errors)
        viewer = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
        h, v = host.get_by_test_id, viewer.get_by_test_id
        await expect(h("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(v("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(v("extras")).to_be_hidden()  # nothing running yet

        # -- the host defines two teams in the editor; the viewer picks one; the board counts the fan
        await h("teams-editor").locator("summary").click()
        rows = h("team-row")
        await expect(rows).to_have_count(2)
        for i, name in enumerate(("Red", "Blue")):
            await rows.nth(i).get_by_test_id("team-name-input").fill(name)
        await h("teams-save").click()
        await expect(h("teams-result")).to_have_text("Saved 2 teams", timeout=ms(10))
        await expect(h("team-board-row")).to_have_count(2, timeout=ms(10))
        await v("team-option-blue").click()
        await expect(v("team-option-blue")).to_have_attribute("aria-checked", "true", timeout=ms(10))
        blue_row = h("team-board").locator('[data-team-id="blue"]')
        await expect(blue_row.get_by_test_id("team-board-members")).to_have_text("1", timeout=ms(10))
        await expect(blue_row.get_by_test_id("team-board-present")).to_have_text("1", timeout=ms(10))

        # -- a poll from the form: the viewer votes, the host's count follows
        await h("poll-question-input").fill("What next?")
        await h("poll-options-input").fill("Hoodie\nEarbuds\nSneakers")
        await h("poll-duration").fill("120")
        await h("poll-open-button").click()
        await expect(h("poll-result")).to_have_text(re.compile(r"^Opened p-"), timeout=ms(10))
        pid = (await h("poll-result").text_content() or "").split()[-1]
        hpoll = h(f"host-poll-{pid}")
        await expect(hpoll).to_have_attribute("data-state", "open")
        await v(f"poll-card-{pid}").get_by_test_id("poll-option-1").click()
        await expect(hpoll.get_by_test_id("host-poll-count-1")).to_have_text("1", timeout=ms(10))
        await expect(hpoll.get_by_test_id("host-poll-total")).to_have_text("1 vote")

        # -- coupons from the form: the viewer claims one, the host sees it claimed
        await h("drop-kind").select_option("percent")
        await expect(h("drop-value-label")).to_have_text("Value (%)")
        await h("drop-value-input").fill("10")
        await h("drop-count").fill("20")
        await h("drop-claim-s").fill("120")
        await h("drop-button").click()
        await expect(h("drop-result")).to_have_text(re.compile(r"^Dropped d-"), timeout=ms(10))
        did = (await h("drop-result").text_content() or "").split()[-1]
        hdrop = h(f"host-drop-{did}")
        await expect(hdrop.get_by_test_id("host-drop-left")).to_have_text("20")
        vdrop = v(f"drop-card-{did}")
        await expect(vdrop.get_by_test_id("drop-value")).to_have_text("10% off", timeout=ms(10))
        await vdrop.get_by_test_id("drop-claim").click()
        await expect(vdrop).to_have_attribute("data-claim", "CLAIMED", timeout=ms(10))
        await expect(hdrop.get_by_test_id("host-drop-claimed")).to_have_text("1", timeout=ms(10))
        await expect(hdrop.get_by_test_id("host-drop-left")).to_have_text("19")

        # -- two draws from the form: a unit of the stock pool (Enter), a coupon for commenting "WIN"
        await h("draw-title-input").fill("Win the Aurora earbuds")
        await h("draw-entry-s").fill("10")
        await h("draw-pool").select_option(pool)
        await h("draw-create-button").click()
        await expect(h("draw-result")).to_have_text(re.compile(r"^Started w-"), timeout=ms(10))
        wpool = (await h("draw-result").text_content() or "").split()[-1]
        await h("draw-title-input").fill("Say WIN for €10 off")
        await h("draw-winners-input").fill("2")
        await h("draw-prize-kind").select_option("coupon")
        await h("draw-coupon-kind").select_option("amount")
        await h("draw-coupon-value").fill("10")
        await h("draw-keyword").fill("WIN")
        await h("draw-more").locator("summary").click()  # the rest of the rule: the time to claim a prize
        await expect(h("draw-pay-within")).to_have_value("600")
        await h("draw-create-button").click()
        await expect(h("draw-result")).not_to_have_text(f"Started {wpool}", timeout=ms(10))
        wkw = (await h("draw-result").text_content() or "").split()[-1]
        assert wkw.startswith("w-") and wkw != wpool

        card, kcard = v(f"draw-card-{wpool}"), v(f"draw-card-{wkw}")
        await expect(card.get_by_test_id("draw-title")).to_have_text("Win the Aurora earbuds", timeout=ms(10))
        commitment = live.api("GET", f"/api/draws/{wpool}")["commitment"]
        await expect(card.get_by_test_id("draw-commitment")).to_have_attribute("title", re.compile(commitment))
        await expect(card.get_by_test_id("draw-timer")).to_have_text(re.compile(r"^Entries close in 00:\d\d$"))
        await expect(card.get_by_test_id("draw-prize")).to_have_text("Prize: Aurora Earbuds (prize) · 1 winner")
        await expect(kcard.get_by_test_id("draw-rule")).to_contain_text("comment “WIN”")
        await expect(kcard.get_by_test_id("draw-prize")).to_have_text("Prize: a €10.00 off coupon · 2 winners")
        async with _commenters(live, room, "WIN", 3):  # three more entrants of the keyword draw, present at it
            await card.get_by_test_id("draw-enter").click()
            await expect(card).to_have_attribute("data-entry", "ENTERED", timeout=ms(10))
            await expect(card.get_by_test_id("draw-enter")).to_have_text("You're in ✓")
            await expect(kcard.get_by_test_id("draw-enter")).to_have_text("Comment “WIN” to enter")
            await kcard.get_by_test_id("draw-enter").click()  # posts the keyword: the comment enters
            await expect(kcard.get_by_test_id("draw-enter")).to_have_text("You're in ✓", timeout=ms(10))
            await expect(v("comments").locator("li.comment.mine").last).to_contain_text("WIN")
            await expect(kcard.get_by_test_id("draw-entrants")).to_have_text("4 entries", timeout=ms(10))
            await expect(h(f"host-draw-{wpool}").get_by_test_id("host-draw-entrants")).to_have_text("1", timeout=ms(10))
            await expect(h(f"host-draw-{wkw}").get_by_test_id("host-draw-entrants")).to_have_text("4", timeout=ms(10))

            # -- the draws; the viewer, the only entrant of the pool draw, wins it: a hold at price 0,
            # claimed on the card with no provider page
            await expect(card).to_have_attribute("data-state", "drawn", timeout=ms(30))
            await expect(kcard).to_have_attribute("data-state", "drawn", timeout=ms(30))
        await expect(card).to_have_attribute("data-won", "true", timeout=ms(10))
        entry = live.api("GET", f"/api/draws/{wpool}/entrants")
        assert len(entry["entrants"]) == 1 and entry["winner_ids"] == entry["entrants"], entry
        await expect(card.get_by_test_id("draw-winner")).to_have_text(entry["winner_ids"][0])
        await expect(card.get_by_test_id("draw-winner")).to_have_attribute("data-mine", "true")
        await expect(card.get_by_test_id("draw-won-text")).to_contain_text("You won! Claim your prize within")
        await expect(card.get_by_test_id("draw-pay")).to_have_text("Claim · Pay €0.00")
        await card.get_by_test_id("draw-pay").click()  # nothing to pay: no provider page
        await expect(card.get_by_test_id("draw-won-text")).to_have_text("You won: your prize is claimed ✓", timeout=ms(10))
        hdraw = h(f"host-draw-{wpool}")
        await expect(hdraw).to_have_attribute("data-state", "drawn", timeout=ms(10))
        await expect(hdraw.get_by_test_id("host-draw-winners")).to_have_text(f"winners: {entry['winner_ids'][0]}")
        await expect(hdraw.get_by_test_id("host-draw-verify")).to_be_visible()
        token = await _page_token(viewer)
        mine = live.api("GET", "/api/me/orders", token=token)
        assert any(x.get("amount") == 0 and x["status"] in ("paid", "settled") for x in mine["holds"]) \
            or any(o.get("total") == 0 for o in mine["orders"]), mine

        # the keyword draw: 2 winners of 4, the masked ids on the card; mine marked, and a coupon if I won
        kw = live.api("GET", f"/api/draws/{wkw}/entrants")
        assert len(kw["entrants"]) == 4 and len(kw["winner_ids"]) == 2, kw
        await expect(kcard.get_by_test_id("draw-winner")).to_have_text(kw["winner_ids"])
        my_entry = await kcard.evaluate("el => el.querySelector('[data-testid=draw-status]').textContent")
        coupons = {c["drop_id"]: c for c in live.api("GET", "/api/me/coupons", token=token)["coupons"]}
        assert coupons[did]["state"] == "claimed", coupons
        won = any(w in my_entry for w in kw["winner_ids"]) or f"{wkw}-prize" in coupons
        if won:
            await expect(kcard.get_by_test_id("draw-won-text")).to_have_text(
                "You won a €10.00 off coupon: it is in your wallet.", timeout=ms(10))
            assert coupons[f"{wkw}-prize"]["value"] == 1000, coupons
        else:
            await expect(kcard.get_by_test_id("draw-status")).to_contain_text("Not this time. Your entry: e-")
            assert f"{wkw}-prize" not in coupons, coupons

        await _quiet_toast(host)  # the extras' cards of the panel, top of the teams card to the end of the draws
        top = await h("teams-card").evaluate("el => el.getBoundingClientRect().top + window.scrollY")
        end = await h("draws-card").evaluate("el => el.getBoundingClientRect().bottom + window.scrollY")
        await host.screenshot(path=_shot("interaction-host-desktop.png"), scale="css", full_page=True,
                              clip={"x": 0, "y": top - 12, "width": LAPTOP["width"], "height": end - top + 24})
        await viewer.evaluate(SCROLL_EXTRAS_HOME)
        await _shoot(viewer, "interaction-viewer-desktop.png", v("extras"))

        # -- the host closes the poll and ends the drop: the final result, the drop ended (its coupon stays mine)
        await hpoll.get_by_test_id("host-poll-close").click()
        vpoll = v(f"poll-card-{pid}")
        await expect(vpoll).to_have_attribute("data-state", "closed", timeout=ms(10))
        await expect(vpoll.get_by_test_id("poll-timer")).to_have_text("Final result")
        await expect(vpoll.get_by_test_id("poll-option-1")).to_have_attribute("data-winner", "true")
        await expect(vpoll.get_by_test_id("poll-status")).to_contain_text("winner: Earbuds")
        await expect(hpoll).to_have_attribute("data-state", "closed")
        await expect(hpoll.get_by_test_id("host-poll-close")).to_be_hidden()
        await hdrop.get_by_test_id("host-drop-end").click()
        await expect(vdrop).to_have_attribute("data-state", "ended", timeout=ms(10))
        await expect(vdrop.get_by_test_id("drop-timer")).to_have_text("Ended")
        await expect(vdrop.get_by_test_id("drop-claim")).to_have_text("In your wallet ✓")
        await expect(hdrop.get_by_test_id("host-drop-end")).to_be_hidden()
        status, body = _status(live, "POST", f"/api/drops/{did}/claim", {"request_id": "r-late"}, viewer_token(live)[0])
        assert status == 410 and "ENDED" in body, (status, body)

        # -- "Verify" (the keyword draw): the check page recomputes the winners in the browser from the
        # published data, and a tampered copy does not pass
        async with viewer.context.expect_page(timeout=ms(10)) as popup:
            await kcard.get_by_test_id("draw-verify").click()
        check = await popup.value
        check.on("pageerror", lambda e: errors.append(f"verify: {e}"))
        c = check.get_by_test_id
        await expect(c("verify-status")).to_have_attribute("data-ok", "true", timeout=ms(10))
        await expect(c("verify-status")).to_contain_text("the winners follow from the published data (4 entries)")
        for name in ("commitment", "sorted", "list_hash", "winners"):
            await expect(c(f"verify-check-{name}")).to_have_attribute("data-ok", "true")
        await expect(c("verify-row")).to_have_count(4)
        for i, w in enumerate(kw["winner_ids"]):  # the published winners are the first two of the ranking
            await expect(c("verify-row").nth(i)).to_have_attribute("data-entry", w)
            await expect(c("verify-row").nth(i)).to_have_attribute("data-winner", "true")
        await expect(c("verify-row").nth(2)).to_have_attribute("data-winner", "false")
        bad = await check.evaluate(
            """async (d) => { const m = await import('/static/livesale.js');
                 return (await m.verifyDraw({ ...d, seed: 'ab'.repeat(32) })).ok; }""", kw)
        assert bad is False
        swapped = await check.evaluate(
            """async (d) => { const m = await import('/static/livesale.js');
                 return (await m.verifyDraw({ ...d, winner_ids: d.entrants.filter((e) => !d.winner_ids.includes(e)) })).ok; }""",
            kw)
        assert swapped is False
        await _shoot(check, "interaction-verify.png")
    assert not errors, "errors in the pages:\n" + "\n".join(errors)
    if UPDATE_DOC_SHOTS:  # the tracked copies change only when asked to
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        for name in SHOT_NAMES:
            if (SHOTS / name).exists():  # the phone's, when its test ran too
                shutil.copyfile(SHOTS / name, DOC_SHOTS / name)

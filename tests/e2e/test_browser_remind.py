"""Browser test of "Remind me" (re-engagement) on the viewer page, in a real Chromium.

A signed-in viewer (a platform viewer token in ``#token=``) watches a live room; the host launches a sale
that starts in a few seconds. The bag's row of it has a "Remind me" toggle (``remind-<sale_id>``, and the
card's ``card-remind``): pressed, then unpressed, then pressed again, each answered by PUT / DELETE
/api/me/reminders/{room}/{sale}, which GET /api/me/reminders agrees with. When the sale opens the reminder
fires: the page shows ``notice-toast`` with the product's title, and the toggle goes away (the sale is no
longer scheduled; the reminder is gone). The show's toggle (``remind-show``) is hidden while the room is
live and shown once it ended; anonymous watchers see no toggle.

Uses the module's server (`browser_helpers.live`). Screenshots: test-output/screenshots/remind-*.png.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from conftest import timeout
from browser_helpers import LAPTOP, LiveServer, _open, _shot, chromium, expect, launch_sale, ms, new_room
from browser_helpers import live  # noqa: F401  (the module-scoped server)
from commerce.identity import mint_viewer_token
from commerce.online import Online

pytestmark = pytest.mark.browser

TITLE = "Aurora Wireless Earbuds"


async def _wait_online(redis_url: str, user: str, room: str) -> None:
    """Until the server's gateway reported the viewer online in the room (every 10 s; a notice reaches
    only viewers reported online, the others are left to the platform's webhook)."""
    redis = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout(15)
        while (await Online(redis).where([user])).get(user) != room:
            assert time.monotonic() < deadline, f"{user} was never reported online in {room}"
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()


def _waiting(live: LiveServer, token: str) -> list[tuple[str, str | None]]:
    return [(r["room_id"], r["sale_id"]) for r in live.api("GET", "/api/me/reminders", token=token)["reminders"]]


async def test_remind_me_on_a_scheduled_sale_then_the_notice_when_it_opens(live: LiveServer, redis_url: str) -> None:
    room = new_room(live, title="Remind night", pin="p-earbuds")
    token, user = mint_viewer_token(live.env["LIVESALE_SECRET"], "Rita Reminded")
    errors: list[str] = []
    async with chromium() as browser:
        page = await _open(browser, f"{live.base}/rooms/{room}#token={token}", LAPTOP, errors)
        v = page.get_by_test_id
        await expect(v("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(v("remind-show")).to_be_hidden()  # the show is live

        sale = launch_sale(live, room, "p-earbuds", units=5, starts_in_s=12, duration_s=60)["sale_id"]
        await v("bag-button").click()
        toggle = v(f"remind-{sale}")
        await expect(toggle).to_be_visible(timeout=ms(10))
        await expect(toggle).to_have_attribute("aria-pressed", "false")
        await toggle.click()
        await expect(toggle).to_have_attribute("aria-pressed", "true", timeout=ms(5))
        assert _waiting(live, token) == [(room, sale)]
        await toggle.click()  # off again: DELETE
        await expect(toggle).to_have_attribute("aria-pressed", "false", timeout=ms(5))
        assert _waiting(live, token) == []
        await toggle.click()
        await expect(toggle).to_have_attribute("aria-pressed", "true", timeout=ms(5))
        assert _waiting(live, token) == [(room, sale)]
        card = v("card-remind")  # the card shows the same scheduled sale, the same state
        await expect(card).to_have_attribute("data-sale-id", sale)
        await expect(card).to_have_attribute("aria-pressed", "true")
        await page.screenshot(path=_shot("remind-bag-desktop.png"), scale="css")

        # the sale opens (the viewer reported online by then): the reminder fires, a notice reaches the page
        await _wait_online(redis_url, user, room)
        await expect(toggle).to_have_attribute("aria-pressed", "true")  # still scheduled: it has not fired yet
        notice = v("notice-toast")
        await expect(notice).to_be_visible(timeout=ms(15))
        await expect(notice).to_contain_text(TITLE)
        await expect(notice).to_have_attribute("data-sale-id", sale)
        await expect(v("notice-link")).to_be_hidden()  # about this very page: no link, a View instead
        await expect(v("notice-view")).to_be_visible()
        await page.screenshot(path=_shot("remind-notice-desktop.png"), scale="css")
        await expect(toggle).to_be_hidden()  # no longer scheduled
        assert _waiting(live, token) == []

        # the show's toggle once the live ended: PUT /api/me/reminders/{room}
        live.api("POST", f"/api/rooms/{room}/actions/end_live", {})
        show = v("remind-show")
        await expect(show).to_be_visible(timeout=ms(10))
        await show.click()
        await expect(show).to_have_attribute("aria-pressed", "true", timeout=ms(5))
        assert _waiting(live, token) == [(room, None)]

    assert not errors, "errors in the pages:\n" + "\n".join(errors)

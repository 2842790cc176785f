"""End-to-end in a real Chromium: the host panel launches a members-only flash sale.

The panel's launch form has a "Members only (no guest tokens)" checkbox (`sale-members-only`); the
launched sale carries `members_only: true` (checked over `GET /api/sales/{sale}`), the panel's sales
table marks it with a "members only" badge (`sale-members-badge`), and a guest viewer (the test
server gives guest tokens) sees "Members only" with Buy disabled and cannot reserve it over HTTP.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from browser_helpers import (LAPTOP, LiveServer, _open, _shot, chromium, expect, ms, new_room, viewer_token)
from browser_helpers import live  # noqa: F401  (the module-scoped server fixture)

pytestmark = pytest.mark.browser

EARBUDS = "p-earbuds"


def _reserve_status(live: LiveServer, sale: str, token: str) -> tuple[int, str]:
    req = urllib.request.Request(f"{live.base}/api/sales/{sale}/reserve", method="POST",
                                 data=b'{"request_id": "members-test-1", "qty": 1}')
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


async def test_host_panel_launches_a_members_only_sale(live: LiveServer) -> None:
    room = new_room(live, title="Members night", pin=EARBUDS)
    assert live.api("GET", "/api/time", anonymous=True)["guests"] is True
    errors: list[str] = []
    async with chromium() as browser:
        host = await _open(browser, f"{live.base}/host/{room}#token={live.host_token}", LAPTOP, errors)
        await expect(host.get_by_test_id("panel")).to_be_visible(timeout=ms(10))
        await expect(host.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))

        members = host.get_by_test_id("sale-members-only")
        await expect(members).to_be_visible(timeout=ms(5))
        await expect(members).not_to_be_checked()
        await expect(host.get_by_test_id("launch-form")).to_contain_text("Members only (no guest tokens)")

        # first an ordinary sale (box unchecked): no badge, members_only false
        await host.get_by_test_id("sale-product").select_option(EARBUDS)
        await host.get_by_test_id("sale-units").fill("3")
        await host.get_by_test_id("sale-starts-in").fill("0")
        await host.get_by_test_id("sale-duration").fill("120")
        await host.get_by_test_id("launch-button").click()
        await expect(host.get_by_test_id("launch-result")).to_contain_text("Launched", timeout=ms(10))
        await expect(host.get_by_test_id("sale-row")).to_have_count(1, timeout=ms(10))
        plain_id = await host.get_by_test_id("sale-row").first.get_attribute("data-sale-id")
        assert plain_id
        assert live.api("GET", f"/api/sales/{plain_id}")["members_only"] is False
        plain_row = host.locator(f'[data-testid="sale-row"][data-sale-id="{plain_id}"]')
        await expect(plain_row.get_by_test_id("sale-members-badge")).to_have_count(0)
        await plain_row.get_by_test_id("end-sale-button").click()
        await expect(plain_row).not_to_have_attribute("data-state", re.compile(r"^(open|scheduled)$"),
                                                      timeout=ms(10))

        # now the members-only one
        await members.check()
        await expect(members).to_be_checked()
        await host.get_by_test_id("launch-button").click()
        await expect(host.get_by_test_id("sale-row")).to_have_count(2, timeout=ms(10))
        ids = [await r.get_attribute("data-sale-id") for r in await host.get_by_test_id("sale-row").all()]
        sale = next(i for i in ids if i != plain_id)
        await expect(host.get_by_test_id("launch-result")).to_contain_text(f"Launched {sale}", timeout=ms(10))

        got = live.api("GET", f"/api/sales/{sale}")
        assert got["members_only"] is True, got
        assert got["allocated"] == 3, got
        row = host.locator(f'[data-testid="sale-row"][data-sale-id="{sale}"]')
        badge = row.get_by_test_id("sale-members-badge")
        await expect(badge).to_be_visible(timeout=ms(10))
        await expect(badge).to_have_text(re.compile(r"members only", re.I))
        await host.screenshot(path=_shot("host-laptop-members-only.png"), full_page=True)
        # the badge survives the next dashboard polls / re-renders
        await host.wait_for_timeout(1500)
        await expect(badge).to_be_visible()
        await expect(plain_row.get_by_test_id("sale-members-badge")).to_have_count(0)

        # a guest viewer (the page takes a guest token: guests are on) cannot buy it
        viewer = await _open(browser, f"{live.base}/rooms/{room}", LAPTOP, errors)
        await expect(viewer.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(viewer.get_by_test_id("viewer-name")).to_have_attribute("data-kind", "guest", timeout=ms(10))
        buy = viewer.get_by_test_id("buy-button")
        await expect(buy).to_have_attribute("data-state", "members-only", timeout=ms(10))
        await expect(buy).to_have_text("Members only")
        await expect(buy).to_be_disabled()
        await expect(viewer.get_by_test_id("status")).to_contain_text("for signed-in members")

        # and over HTTP a guest token is refused; nothing was taken from the stock
        guest, _ = viewer_token(live, "Guest Gina")
        status, body = _reserve_status(live, sale, guest)
        assert status == 403 and "MEMBERS_ONLY" in body, (status, body)
        assert live.api("GET", f"/api/sales/{sale}")["units_left"] == 3
        await expect(row.get_by_test_id("sale-units-left")).to_have_text("3")
    assert not errors, "errors in the pages:\n" + "\n".join(errors)

"""The viewer page's token handoff for embedding platforms (issue 11, identity), in a real Chromium,
against a `livesale serve` with guest tokens OFF (the production default):

- the platform's signed viewer token in the URL fragment (`#token=<jwt>`) is used (the page buys
  with it) and removed from the address bar at once; a reload in the same tab keeps the sign-in;
- without a token the page watches anonymously, never asks for a guest token, and says that buying
  needs signing in; `window.livesale.setToken(jwt)` then signs the viewer in without a reload;
- a guest token (handed over the same way) sees a members-only sale as "Members only".
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from browser_helpers import (LAPTOP, LiveServer, _free_port, _mint_host_token, _open, _shot, chromium, expect,
                             launch_sale, ms, new_room)
from commerce.identity import mint_viewer_token

pytestmark = pytest.mark.browser

EARBUDS = "p-earbuds"
BENIGN = ("WebSocket",)


@pytest.fixture(scope="module")
def members_only_server(redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[LiveServer]:
    """`livesale serve` on its defaults for identity: guest tokens off."""
    data = tmp_path_factory.mktemp("handoff-server")
    env = {**os.environ, "LIVESALE_PORT": str(_free_port()), "LIVESALE_DATA_DIR": str(data),
           "LIVESALE_SECRET": "handoff-test-" + secrets.token_hex(16), "REDIS_URL": redis_url,
           "DATABASE_URL": database_url, "LIVESALE_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    env.pop("LIVESALE_GUEST_TOKENS", None)
    server = LiveServer(env=env, port=int(env["LIVESALE_PORT"]), log_path=data / "server.log")
    server.start()
    try:
        server.host_token = _mint_host_token(env)
        yield server
    except BaseException:
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        server.stop()


def _unexpected(errors: list[str]) -> list[str]:
    return [e for e in errors if not any(b in e for b in BENIGN)]


def _guest_requests(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if "/api/viewer-token" in r.url else None)
    return seen


async def test_token_in_the_fragment_is_used_and_removed(members_only_server: LiveServer) -> None:
    live = members_only_server
    assert live.api("GET", "/api/time", anonymous=True)["guests"] is False
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=3, hold_ttl_s=120)
    token, user = mint_viewer_token(live.env["LIVESALE_SECRET"], "Platform Pat", user="shop-user-42")
    errors: list[str] = []
    async with chromium() as browser:
        page = await _open(browser, f"{live.base}/rooms/{room}#token={token}", LAPTOP, errors)
        guest_calls = _guest_requests(page)
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        assert "token" not in page.url and page.url.endswith(f"/rooms/{room}"), page.url
        await expect(page.get_by_test_id("viewer-name")).to_have_text("Platform Pat")
        await expect(page.get_by_test_id("rename-button")).to_be_hidden()
        buy = page.get_by_test_id("buy-button")
        await expect(buy).to_be_enabled(timeout=ms(10))
        await buy.click()
        await expect(page.get_by_test_id("pay-button")).to_be_visible(timeout=ms(10))
        await expect(page.get_by_test_id("pay-button")).to_contain_text(re.compile(r"49[.,]99"))
        # the page buys as the platform's user
        who = await page.evaluate("window.livesale.identity")
        assert who == {"user": user, "name": "Platform Pat", "guest": False}, who

        # a reload in this tab keeps the sign-in (sessionStorage), the address bar stays clean
        await page.reload()
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(page.get_by_test_id("viewer-name")).to_have_text("Platform Pat")
        assert "token" not in page.url
        await expect(page.get_by_test_id("pay-button")).to_be_visible(timeout=ms(10))
        await page.screenshot(path=_shot("viewer-handoff.png"))
        assert guest_calls == [], guest_calls
    assert not _unexpected(errors), errors


async def test_without_token_and_guests_off_the_page_says_buying_needs_signing_in(
        members_only_server: LiveServer) -> None:
    live = members_only_server
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=3)
    errors: list[str] = []
    async with chromium() as browser:
        context = await browser.new_context(viewport=LAPTOP)
        page = await context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        guest_calls = _guest_requests(page)
        await page.goto(f"{live.base}/rooms/{room}")
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        buy, status = page.get_by_test_id("buy-button"), page.get_by_test_id("status")
        await expect(buy).to_have_attribute("data-state", "signin", timeout=ms(10))
        await expect(buy).to_be_disabled()
        await expect(buy).to_have_text("Sign in to buy")
        await expect(status).to_contain_text("Buying needs signing in")
        await expect(page.get_by_test_id("viewer-name")).to_have_text("Not signed in")
        await expect(page.get_by_test_id("comment-input")).to_be_disabled()
        await expect(page.get_by_test_id("units-left")).to_have_attribute("data-units", "3")  # watching works
        await page.screenshot(path=_shot("viewer-signin.png"))
        assert guest_calls == [], guest_calls  # the server offers no guests: none asked for

        # the embedding platform signs the viewer in with the JS call: no reload
        token, _ = mint_viewer_token(live.env["LIVESALE_SECRET"], "Jo Shopper", user="shop-user-43")
        await page.evaluate("(t) => window.livesale.setToken(t)", token)
        await expect(page.get_by_test_id("viewer-name")).to_have_text("Jo Shopper", timeout=ms(5))
        await expect(buy).to_have_attribute("data-state", "buy", timeout=ms(10))
        await buy.click()
        await expect(page.get_by_test_id("pay-button")).to_be_visible(timeout=ms(10))
        await context.close()
    assert not _unexpected(errors), errors


async def test_a_guest_sees_a_members_only_sale_as_members_only(members_only_server: LiveServer) -> None:
    live = members_only_server
    room = new_room(live, pin=EARBUDS)
    sale = launch_sale(live, room, EARBUDS, units=3, members_only=True)
    assert sale["members_only"] is True
    guest, _ = mint_viewer_token(live.env["LIVESALE_SECRET"], "Guest Gil", guest=True)
    errors: list[str] = []
    async with chromium() as browser:
        page = await _open(browser, f"{live.base}/rooms/{room}#token={guest}", LAPTOP, errors)
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=ms(10))
        buy = page.get_by_test_id("buy-button")
        await expect(buy).to_have_attribute("data-state", "members-only", timeout=ms(10))
        await expect(buy).to_be_disabled()
        await expect(page.get_by_test_id("status")).to_contain_text("for signed-in members")
    assert not _unexpected(errors), errors

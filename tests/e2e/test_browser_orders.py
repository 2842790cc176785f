"""Browser tests for the order catch-up of livesale.js, in a real Chromium.

`order_confirmed` is at least once and is not replayed on resume (docs/PROTOCOL.md): the client
de-duplicates it by `order_id`, and after each join fetches `GET /api/me/orders?since=...` to recover
orders settled while it was not connected, emitting the same `order_confirmed` event for each new one.

- a copy of an `order_confirmed` already shown (injected over the page's own WebSocket) shows nothing,
  and the catch-up after a reconnect, which returns that order again, shows nothing either;
- an order paid over HTTP (checkout, then Pay on the sandbox provider's page, whose webhook confirms
  it) while the page is offline is shown after it reconnects, exactly once.

Each test uses its own room on the module's server (`browser_helpers.live`), which runs in the default
payment mode: every payment goes through the bundled sandbox provider.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from browser_helpers import (LAPTOP, LiveServer, chromium, expect, launch_sale, ms, new_room, pay_on_sandbox_page,
                             pay_via_sandbox_http)
from browser_helpers import live  # noqa: F401  (the module-scoped server, default payment mode: the sandbox provider)
from conftest import timeout

pytestmark = pytest.mark.browser

EARBUDS = "p-earbuds"
BENIGN = ("WebSocket", "ERR_INTERNET_DISCONNECTED", "ERR_CONNECTION_REFUSED", "ERR_NAME_NOT_RESOLVED",
          "ERR_NETWORK_CHANGED")

# Before the page's scripts run: record every `order_confirmed` event the client dispatches (and keep
# a handle on the client, which room.js does not expose), every test marker message, and every toast
# the page shows (setting the toast's text, even to the same text, is one childList mutation).
RECORDER = """(() => {
  window.__orderEvents = [];
  window.__markers = [];
  window.__toasts = [];
  const dispatch = EventTarget.prototype.dispatchEvent;
  EventTarget.prototype.dispatchEvent = function (ev) {
    if (ev && ev.type === "order_confirmed" && ev.detail && ev.detail.order) {
      window.__livesale = this;
      window.__orderEvents.push(ev.detail.order.order_id);
    }
    if (ev && ev.type === "test_marker") window.__markers.push(ev.detail.n);
    if (ev && ev.type === "joined") window.__livesale = this;
    return dispatch.call(this, ev);
  };
  document.addEventListener("DOMContentLoaded", () => {
    const el = document.querySelector('[data-testid="toast"]');
    if (el) new MutationObserver(() => window.__toasts.push(el.textContent))
      .observe(el, { childList: true, characterData: true, subtree: true });
  });
})();"""


def _unexpected(errors: list[str]) -> list[str]:
    return [e for e in errors if not any(b in e for b in BENIGN)]


def short_id(order_id: str) -> str:
    """What the page shows for an order (room.js shortId)."""
    return "#" + order_id.split(".")[-1][:8].upper()


async def _counts(page: Any, order_id: str) -> tuple[int, int, int]:
    """(order_confirmed events, toasts naming the order, entries in client.orders) for one order."""
    out: list[int] = await page.evaluate(
        """([id, sid]) => [window.__orderEvents.filter((x) => x === id).length,
                           window.__toasts.filter((t) => t.includes(sid) && /confirmed/i.test(t)).length,
                           (window.__livesale?.orders || []).filter((o) => o.order_id === id).length]""",
        [order_id, short_id(order_id)])
    return out[0], out[1], out[2]


async def _wait_catch_up_after(page: Any, t0: float) -> None:
    """Wait until the client finished an order catch-up that started after t0 (page ms)."""
    await page.wait_for_function(
        "(t0) => { const s = window.__livesale?.ordersSync; return !!s && s.state === 'ok' && s.at > t0; }",
        arg=t0, timeout=ms(15))


async def test_duplicate_order_confirmed_shows_once(live: LiveServer) -> None:
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=5, hold_ttl_s=120)
    errors: list[str] = []
    routes: list[dict[str, Any]] = []

    def route(ws: Any) -> None:
        server = ws.connect_to_server()
        entry: dict[str, Any] = {"page": ws, "orders": []}

        def from_server(m: Any) -> None:
            if isinstance(m, str) and '"order_confirmed"' in m:
                entry["orders"].append(m)
            ws.send(m)

        ws.on_message(lambda m: server.send(m))
        server.on_message(from_server)
        routes.append(entry)

    async with chromium() as browser:
        context = await browser.new_context(viewport=LAPTOP)
        await context.add_init_script(RECORDER)
        page = await context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        await page.route_web_socket(re.compile(r"/ws$"), route)
        await page.goto(f"{live.base}/rooms/{room}")
        conn, status = page.get_by_test_id("conn-state"), page.get_by_test_id("status")
        await expect(conn).to_have_attribute("data-state", "open", timeout=ms(10))

        # reserve and pay (on the sandbox provider's page) while connected: the order arrives live, once
        await page.get_by_test_id("buy-button").click()
        await expect(page.get_by_test_id("pay-button")).to_be_visible(timeout=ms(10))
        await pay_on_sandbox_page(page)
        await expect(status).to_have_attribute("data-state", "confirmed", timeout=ms(15))
        deadline = time.monotonic() + timeout(15)
        while not routes[-1]["orders"] and time.monotonic() < deadline:
            await page.wait_for_timeout(100)
        assert routes[-1]["orders"], "no order_confirmed reached the page"
        frame = routes[-1]["orders"][0]
        order_id = json.loads(frame)["order"]["order_id"]
        await page.wait_for_function("(id) => window.__orderEvents.includes(id)", arg=order_id, timeout=ms(10))
        await expect(page.get_by_test_id("toast")).to_contain_text(short_id(order_id), timeout=ms(5))
        assert await _counts(page, order_id) == (1, 1, 1)

        # the same order_confirmed again (at least once delivery), then a marker message behind it:
        # once the marker was handled, so was the copy, and it showed nothing
        routes[-1]["page"].send(frame)
        routes[-1]["page"].send(json.dumps({"type": "test_marker", "n": 1}))
        await page.wait_for_function("() => window.__markers.includes(1)", timeout=ms(10))
        assert await _counts(page, order_id) == (1, 1, 1), "a second copy of order_confirmed was shown"

        # the catch-up after a reconnect returns the same order again: still shown once
        t0 = await page.evaluate("Date.now()")
        sockets = len(routes)
        async with page.expect_response(lambda r: "/api/me/orders" in r.url and r.status == 200,
                                        timeout=ms(20)) as info:
            await routes[-1]["page"].close(code=4000, reason="test drops the link")
        body = await (await info.value).json()
        assert len(routes) > sockets  # it reconnected
        await _wait_catch_up_after(page, t0)
        await expect(conn).to_have_attribute("data-state", "open", timeout=ms(10))
        assert order_id in [o["order_id"] for o in body["orders"]], body  # the catch-up overlapped the live one
        routes[-1]["page"].send(json.dumps({"type": "test_marker", "n": 2}))
        await page.wait_for_function("() => window.__markers.includes(2)", timeout=ms(10))
        assert await _counts(page, order_id) == (1, 1, 1), "the catch-up showed an order already shown"
        await expect(status).to_have_attribute("data-state", "confirmed")
        await expect(status).to_contain_text(short_id(order_id))
    assert not _unexpected(errors), errors


async def test_order_settled_while_offline_appears_once_after_reconnect(live: LiveServer) -> None:
    room = new_room(live, pin=EARBUDS)
    launch_sale(live, room, EARBUDS, units=5, hold_ttl_s=120)
    errors: list[str] = []
    async with chromium() as browser:
        context = await browser.new_context(viewport=LAPTOP)
        await context.add_init_script(RECORDER)
        page = await context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        await page.goto(f"{live.base}/rooms/{room}")
        conn, status, pay = page.get_by_test_id("conn-state"), page.get_by_test_id("status"), page.get_by_test_id("pay-button")
        await expect(conn).to_have_attribute("data-state", "open", timeout=ms(10))

        await page.get_by_test_id("buy-button").click()
        await expect(pay).to_be_visible(timeout=ms(10))
        # the page keeps its viewer token and its holds in localStorage
        ident = json.loads(await page.evaluate("localStorage.getItem('livesale.viewer')"))
        token, user = ident["token"], ident["user"]
        holds = json.loads(await page.evaluate("(k) => localStorage.getItem(k)", f"livesale.holds.{room}.{user}"))
        held = [h for h in holds if h.get("status") == "held"]
        assert len(held) == 1, holds
        hold = held[0]["hold"]

        # offline: the page drops its socket; the hold is paid elsewhere (over HTTP: checkout, then Pay on
        # the sandbox provider's page, whose signed webhook confirms it) and settles
        await context.set_offline(True)
        await expect(conn).not_to_have_attribute("data-state", "open", timeout=ms(3))
        order_id = pay_via_sandbox_http(live, hold, token)["order_id"]
        deadline = time.monotonic() + timeout(20)
        while True:
            try:
                order = live.api("GET", f"/api/orders/{order_id}", token=token)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                await page.wait_for_timeout(200)
        assert order["room_id"] == room and order["settled_at"], order
        assert await _counts(page, order_id) == (0, 0, 0)

        # back online: it resumes and recovers the order, shown like a live one
        t0 = await page.evaluate("Date.now()")
        await context.set_offline(False)
        await expect(conn).to_have_attribute("data-state", "open", timeout=ms(10))
        await expect(status).to_have_attribute("data-state", "confirmed", timeout=ms(10))
        await expect(status).to_contain_text(short_id(order_id))
        await expect(page.get_by_test_id("toast")).to_contain_text(short_id(order_id), timeout=ms(5))
        await expect(pay).to_be_hidden()
        await _wait_catch_up_after(page, t0)
        assert await _counts(page, order_id) == (1, 1, 1)
        stored = json.loads(await page.evaluate("(k) => localStorage.getItem(k)", f"livesale.holds.{room}.{user}"))
        assert [h.get("status") for h in stored if h.get("hold") == hold] == ["confirmed"], stored

        # another loss and reconnect: the next catch-up finds it again and shows nothing new
        t1 = await page.evaluate("Date.now()")
        await context.set_offline(True)
        await expect(conn).not_to_have_attribute("data-state", "open", timeout=ms(3))
        await context.set_offline(False)
        await expect(conn).to_have_attribute("data-state", "open", timeout=ms(10))
        await _wait_catch_up_after(page, t1)
        assert await _counts(page, order_id) == (1, 1, 1)
    assert not _unexpected(errors), errors

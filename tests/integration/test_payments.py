"""Payments through a provider (issue 11, item 2), over real sockets and real engines: a gateway in
LIVESALE_PAYMENT_MODE=sandbox (create_app) and the sandbox provider's own app, both on 127.0.0.1.

- The full flow: buy -> checkout -> payment_started -> the sandbox page's Pay -> signed webhook ->
  order_confirmed -> the order and the payment in SQL.
- Forged, unsigned, late, wrong-amount, wrong-currency, replayed (same event id, other body) and
  duplicate webhooks confirm nothing (typed errors, or 200 for a duplicate).
- A genuine payment after the hold expired is refunded (a refunds row), the unit sold once.
- `pay` is refused outside the instant mode; `checkout` and webhooks are refused in it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from commerce.payments.refunds import RefundRetry
from commerce.payments.signature import SIGNATURE_HEADER, signature_header
from conftest import timeout
from gateway_helpers import JSON, Api, WsClient, host_token, setup_room, viewer
from inventory.payments import PaymentStore
from inventory.scripts import Inventory
from inventory.store import Store
from server.app import create_app
from server.appkeys import COMMERCE
from server.config import Settings
from server.sandbox_pay import SandboxPay

pytestmark = pytest.mark.timeout(90, method="thread")

PRICE = 2500


@dataclass
class Env:
    api: Api
    client: Any  # the aiohttp TestClient of the gateway (a real socket on 127.0.0.1)
    sandbox: SandboxPay
    sandbox_url: str
    secret: str  # the webhook secret
    host: str
    settings: Settings

    @property
    def webhook_url(self) -> str:
        return str(self.client.make_url("/api/payments/webhook/sandbox"))


@pytest.fixture
async def sandbox_env(aiohttp_client: Any, settings: Settings) -> AsyncIterator[Env]:
    secret = secrets.token_urlsafe(32)
    sandbox = SandboxPay(secret)
    runner = web.AppRunner(sandbox.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    s = settings.replace(tick_ms=50, settle_block_ms=100, payment_mode="sandbox", payment_webhook_secret=secret,
                         sandbox_url=url)
    client = await aiohttp_client(create_app(s))
    env = Env(Api(client), client, sandbox, url, secret, host_token(settings.secret), s)
    sandbox.webhook_url = env.webhook_url
    try:
        yield env
    finally:
        await runner.cleanup()


async def launch(env: Env, room: str, units: int = 1, hold_ttl_s: int = 120) -> str:
    await setup_room(env.api, env.host, room, products=1, unit_price=PRICE)
    sale = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                            {"product_id": "p0", "units": units, "per_user_limit": 2, "hold_ttl_s": hold_ttl_s}, 201)
    return str(sale["sale_id"])


async def buyer(env: Env, room: str, name: str) -> tuple[WsClient, str]:
    token, _user = viewer(env.settings.secret, name)
    ws = await WsClient.connect(env.client, "/ws", JSON)
    snap = await ws.join(room, token)
    assert snap["type"] == "snapshot", snap
    return ws, token


async def reserve(ws: WsClient, sale_id: str, qty: int = 1) -> str:
    r = await ws.request({"type": "buy", "sale": sale_id, "qty": qty}, timeout(10))
    assert r["type"] == "buy_result" and r["code"] == "RESERVED", r
    return str(r["hold"])


def event_body(payment_id: str, amount: int, currency: str = "EUR", kind: str = "payment.succeeded",
               event_id: str | None = None, created: int | None = None) -> bytes:
    return orjson.dumps({"id": event_id or "evt_" + secrets.token_hex(8), "type": kind,
                         "created": created if created is not None else int(time.time()),
                         "data": {"payment_id": payment_id, "amount": amount, "currency": currency}})


async def send_webhook(env: Env, body: bytes, *, secret: str | None = None, ts: int | None = None,
                       header: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if header is None:
        header = signature_header(secret or env.secret, ts if ts is not None else int(time.time()), body)
    if header:
        headers[SIGNATURE_HEADER] = header
    async with env.client.post("/api/payments/webhook/sandbox", data=body, headers=headers) as r:
        return r.status, await r.json()


async def assert_untouched(env: Env, inventory: Inventory, store: Store, sale_id: str, hold_id: str,
                           payment_id: str) -> None:
    hold = await inventory.get_hold(hold_id)
    assert hold is not None and hold.status == "held", hold
    counters = await inventory.counters(sale_id)
    assert counters is not None and counters.sold == 0, counters
    p = await PaymentStore(store).get(payment_id)
    assert p is not None and p.status == "started" and p.event_id == "", p
    assert await store.get_order(hold_id) is None


# -- the full flow -------------------------------------------------------------------------------------

async def test_full_flow_through_the_sandbox_page(sandbox_env: Env, inventory: Inventory, store: Store,
                                                  uid: str) -> None:
    env = sandbox_env
    sale_id = await launch(env, uid, units=3)
    ws, token = await buyer(env, uid, "Ana")
    hello = ws.of_type("hello")[0]
    assert hello["limits"]["payments"] == "sandbox"
    hold_id = await reserve(ws, sale_id, qty=2)

    started = await ws.request({"type": "checkout", "hold": hold_id}, timeout(10))
    assert started["type"] == "payment_started", started
    assert started["hold"] == hold_id and started["amount"] == 2 * PRICE and started["currency"] == "EUR"
    assert started["provider"] == "sandbox"
    assert started["redirect_url"].startswith(env.sandbox_url + "/pay/")
    assert started["client_secret"].startswith(started["payment_id"])
    # checkout again (a retry, a second tab): the same payment, over WS and HTTP
    again = await ws.request({"type": "checkout", "hold": hold_id}, timeout(10))
    assert again["payment_id"] == started["payment_id"]
    st, body = await env.api.call("POST", f"/api/holds/{hold_id}/checkout", token)
    assert st == 201 and body["payment_id"] == started["payment_id"], body

    # the hosted page shows the amount and the buttons; nothing is paid by looking at it
    async with aiohttp.ClientSession() as s:
        async with s.get(started["redirect_url"]) as r:
            page = await r.text()
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
        assert "50.00 EUR" in page and 'value="pay"' in page and 'value="cancel"' in page
        assert (await inventory.get_hold(hold_id)).status == "held"  # type: ignore[union-attr]
        # the buyer presses Pay: the sandbox signs and delivers the webhook
        async with s.post(started["redirect_url"], data={"action": "pay"},
                          headers={"Accept": "application/json"}) as r:
            paid = await r.json()
    assert paid["status"] == "succeeded", paid
    assert paid["webhook"]["status"] == 200, paid
    assert orjson.loads(paid["webhook"]["answer"])["outcome"] == "confirmed"

    confirmed = await ws.wait(lambda m: m.get("type") == "order_confirmed", timeout(15))
    assert confirmed["order"]["order_id"] == hold_id and confirmed["order"]["qty"] == 2
    order = await store.get_order(hold_id)
    assert order is not None and order.payment_ref == started["payment_id"] and order.total == 2 * PRICE
    p = await PaymentStore(store).get(started["payment_id"])
    assert p is not None and p.status == "confirmed" and p.order_id == hold_id and p.paid_at_ms > 0
    assert p.event_id == paid["webhook"]["event_id"]
    report = await inventory.check_invariant(sale_id)
    assert report.ok and report.sold == 2, report

    # once paid: checkout answers ALREADY_CONFIRMED, and pressing Pay again sends nothing new
    err = await ws.request({"type": "checkout", "hold": hold_id}, timeout(10))
    assert err["type"] == "error" and err["code"] == "ALREADY_CONFIRMED", err
    await ws.close()


async def test_cancel_on_the_page_keeps_the_hold(sandbox_env: Env, inventory: Inventory, store: Store,
                                                 uid: str) -> None:
    env = sandbox_env
    sale_id = await launch(env, uid)
    ws, token = await buyer(env, uid, "Bo")
    hold_id = await reserve(ws, sale_id)
    started = await ws.request({"type": "checkout", "hold": hold_id}, timeout(10))
    async with aiohttp.ClientSession() as s:
        async with s.post(started["redirect_url"], data={"action": "cancel"},
                          headers={"Accept": "application/json"}) as r:
            out = await r.json()
    assert out["status"] == "canceled" and out["webhook"]["status"] == 200, out
    p = await PaymentStore(store).get(started["payment_id"])
    assert p is not None and p.status == "canceled"
    hold = await inventory.get_hold(hold_id)
    assert hold is not None and hold.status == "held"  # the buyer may try again until pay-by
    retry = await ws.request({"type": "checkout", "hold": hold_id}, timeout(10))
    assert retry["type"] == "payment_started" and retry["payment_id"] != started["payment_id"]
    await ws.close()


# -- webhooks that must change nothing ----------------------------------------------------------------

async def test_forged_late_mismatched_replayed_and_duplicate_webhooks(sandbox_env: Env, inventory: Inventory,
                                                                      store: Store, uid: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    env = sandbox_env
    sale_id = await launch(env, uid)
    ws, _token = await buyer(env, uid, "Cy")
    hold_id = await reserve(ws, sale_id)
    started = await ws.request({"type": "checkout", "hold": hold_id}, timeout(10))
    pid = started["payment_id"]
    good = event_body(pid, PRICE)

    refused: list[tuple[str, int, str]] = []
    # forged: signed with another secret; no signature; a garbled one
    refused.append(("forged", *await _code(send_webhook(env, good, secret=secrets.token_urlsafe(32)))))
    refused.append(("unsigned", *await _code(send_webhook(env, good, header=""))))
    refused.append(("garbled", *await _code(send_webhook(env, good, header="t=1,v1=zz"))))
    # a genuine signature over another body (the body was altered in transit)
    altered = signature_header(env.secret, int(time.time()), event_body(pid, 1))
    refused.append(("altered", *await _code(send_webhook(env, good, header=altered))))
    # late: genuinely signed, outside the 300 s tolerance (both directions)
    refused.append(("late", *await _code(send_webhook(env, good, ts=int(time.time()) - 301))))
    refused.append(("early", *await _code(send_webhook(env, good, ts=int(time.time()) + 301))))
    # genuine, timely, but the wrong amount / currency
    refused.append(("amount", *await _code(send_webhook(env, event_body(pid, PRICE - 1)))))
    refused.append(("currency", *await _code(send_webhook(env, event_body(pid, PRICE, "USD")))))
    # a payment this server never started
    refused.append(("unknown", *await _code(send_webhook(env, event_body("pay_nope", PRICE)))))
    assert refused == [
        ("forged", 400, "BAD_SIGNATURE"), ("unsigned", 400, "BAD_SIGNATURE"), ("garbled", 400, "BAD_SIGNATURE"),
        ("altered", 400, "BAD_SIGNATURE"), ("late", 400, "STALE_WEBHOOK"), ("early", 400, "STALE_WEBHOOK"),
        ("amount", 422, "AMOUNT_MISMATCH"), ("currency", 422, "CURRENCY_MISMATCH"), ("unknown", 404, "NOT_FOUND"),
    ]
    await assert_untouched(env, inventory, store, sale_id, hold_id, pid)
    logged = caplog.text
    assert "BAD_SIGNATURE" in logged and "STALE_WEBHOOK" in logged and "amount" in logged
    assert env.secret not in logged  # never log secrets

    # the genuine event confirms, once
    event_id = "evt_" + secrets.token_hex(8)
    body = event_body(pid, PRICE, event_id=event_id)
    st, out = await send_webhook(env, body)
    assert st == 200 and out["outcome"] == "confirmed" and out["order_id"] == hold_id, out
    # duplicate: the same event again (re-signed later, as a provider's retry), and the very same request
    st, out = await send_webhook(env, body)
    assert st == 200 and out["outcome"] == "duplicate", out
    # replayed: the same event id with another body
    st, out = await send_webhook(env, event_body(pid, PRICE, event_id=event_id, created=1))
    assert st == 409 and out["error"]["code"] == "REPLAYED", out
    # another genuine event for the already confirmed payment
    st, out = await send_webhook(env, event_body(pid, PRICE))
    assert st == 200 and out["outcome"] == "duplicate", out

    await ws.wait(lambda m: m.get("type") == "order_confirmed", timeout(15))
    report = await inventory.check_invariant(sale_id)
    assert report.ok and report.sold == 1 and report.held == 0, report
    assert await store.sold_units(sale_id) == 1
    p = await PaymentStore(store).get(pid)
    assert p is not None and p.status == "confirmed" and p.event_id == event_id
    await ws.close()


async def _code(call: Any) -> tuple[int, str]:
    st, body = await call
    return st, body["error"]["code"]


# -- a payment after the hold expired ------------------------------------------------------------------

async def test_late_payment_is_refunded_and_the_unit_sold_once(sandbox_env: Env, inventory: Inventory,
                                                               store: Store, uid: str) -> None:
    env = sandbox_env
    sale_id = await launch(env, uid, units=1, hold_ttl_s=5)
    ws1, _ = await buyer(env, uid, "Dee")
    hold1 = await reserve(ws1, sale_id)
    late = await ws1.request({"type": "checkout", "hold": hold1}, timeout(10))
    assert late["type"] == "payment_started", late

    # the buyer dawdles on the pay page; the hold expires and the reaper returns the unit
    ws2, _ = await buyer(env, uid, "Eli")
    deadline = time.monotonic() + timeout(20)
    while True:
        r = await ws2.request({"type": "buy", "sale": sale_id, "qty": 1}, timeout(10))
        if r["code"] == "RESERVED":
            hold2 = r["hold"]
            break
        assert r["code"] == "SOLD_OUT", r
        assert time.monotonic() < deadline, "the expired hold never came back to stock"
        with contextlib.suppress(TimeoutError):  # a quiet room sends no tick: the deadline above bounds the loop
            await ws2.wait(lambda m: m.get("type") == "sale_open" or m.get("type") == "tick", timeout(5),
                           start=len(ws2.msgs))
    # the second buyer pays in time
    s2 = await ws2.request({"type": "checkout", "hold": hold2}, timeout(10))
    async with aiohttp.ClientSession() as s:
        async with s.post(s2["redirect_url"], data={"action": "pay"}, headers={"Accept": "application/json"}) as r:
            assert (await r.json())["webhook"]["status"] == 200
        # then the first buyer finally presses Pay: genuine, timely webhook, but the hold is gone
        async with s.post(late["redirect_url"], data={"action": "pay"}, headers={"Accept": "application/json"}) as r:
            paid = await r.json()
    assert paid["webhook"]["status"] == 200, paid
    out = orjson.loads(paid["webhook"]["answer"])
    assert out["outcome"] == "refunded" and out["refund_reason"] == "hold_expired", out

    refunded = await ws1.wait(lambda m: m.get("type") == "payment_refunded", timeout(10))
    assert refunded["payment_id"] == late["payment_id"] and refunded["amount"] == PRICE
    payments = PaymentStore(store)
    refund = await payments.get_refund(late["payment_id"])
    assert refund is not None and refund.reason == "hold_expired" and refund.amount == PRICE
    assert refund.currency == "EUR" and refund.status == "sent" and refund.provider_refund_id.startswith("re_")
    assert late["payment_id"] in env.sandbox.refunds  # the provider gave the money back
    p1 = await payments.get(late["payment_id"])
    assert p1 is not None and p1.status == "refunded" and p1.order_id == ""

    # the provider delivers the late event again (same id and body): a duplicate, no second refund
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {env.secret}"}) as s:
        async with s.post(f"{env.sandbox_url}/v1/payments/{late['payment_id']}/redeliver") as r:
            again = await r.json()
    assert again["status"] == 200 and again["event_id"] == paid["webhook"]["event_id"], again
    assert orjson.loads(again["answer"])["outcome"] == "duplicate"
    assert (await payments.get_refund(late["payment_id"])) == refund
    await ws2.wait(lambda m: m.get("type") == "order_confirmed", timeout(15))
    report = await inventory.check_invariant(sale_id)
    assert report.ok and report.sold == 1 and report.available == 0, report
    assert await store.get_order(hold1) is None
    assert await store.sold_units(sale_id) == 1
    hold = await inventory.get_hold(hold1)
    assert hold is not None and hold.status == "expired"
    await ws1.close()
    await ws2.close()


# -- the modes -----------------------------------------------------------------------------------------

async def test_pay_is_refused_with_a_provider(sandbox_env: Env, inventory: Inventory, uid: str) -> None:
    env = sandbox_env
    sale_id = await launch(env, uid)
    ws, token = await buyer(env, uid, "Fay")
    hold_id = await reserve(ws, sale_id)
    r = await ws.request({"type": "pay", "hold": hold_id}, timeout(10))
    assert r["type"] == "pay_result" and r["code"] == "PAYMENT_REQUIRED", r
    st, body = await env.api.call("POST", f"/api/holds/{hold_id}/pay", token, {})
    assert st == 402 and body["error"]["code"] == "PAYMENT_REQUIRED", body
    hold = await inventory.get_hold(hold_id)
    assert hold is not None and hold.status == "held"
    # someone else's hold, and a checkout without a rid
    other, _ = await buyer(env, uid, "Gus")
    r = await other.request({"type": "checkout", "hold": hold_id}, timeout(10))
    assert r["type"] == "error" and r["code"] == "FORBIDDEN", r
    start = len(other.msgs)
    await other.send({"type": "checkout", "hold": hold_id})
    r = await other.wait(lambda m: m.get("type") == "error", timeout(5), start=start)
    assert r["code"] == "BAD_MESSAGE"
    await ws.close()
    await other.close()


async def test_instant_mode_refuses_checkout_and_webhooks(aiohttp_client: Any, settings: Settings,
                                                          uid: str) -> None:
    client = await aiohttp_client(create_app(settings.replace(tick_ms=50, settle_block_ms=100)))
    api = Api(client)
    host = host_token(settings.secret)
    await setup_room(api, host, uid, products=1)
    sale = await api.ok("POST", f"/api/rooms/{uid}/sales", host, {"product_id": "p0", "units": 2}, 201)
    token, _ = viewer(settings.secret, "Hal")
    ws = await WsClient.connect(client, "/ws", JSON)
    assert ws.of_type("hello") or await ws.wait(lambda m: m.get("type") == "hello")
    assert ws.of_type("hello")[0]["limits"]["payments"] == "instant"
    await ws.join(uid, token)
    hold_id = await reserve(ws, sale["sale_id"])
    r = await ws.request({"type": "checkout", "hold": hold_id}, timeout(10))
    assert r["type"] == "error" and r["code"] == "NO_PROVIDER", r
    st, body = await api.call("POST", f"/api/holds/{hold_id}/checkout", token)
    assert st == 409 and body["error"]["code"] == "NO_PROVIDER"
    body_bytes = event_body("pay_x", 1)
    async with client.post("/api/payments/webhook/sandbox", data=body_bytes,
                           headers={SIGNATURE_HEADER: signature_header("x" * 40, int(time.time()), body_bytes)}) as resp:
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "NO_PROVIDER"
    r = await ws.request({"type": "pay", "hold": hold_id}, timeout(10))  # today's pay still works here
    assert r["type"] == "pay_result" and r["code"] == "CONFIRMED", r
    await ws.close()


def test_provider_modes_need_their_settings() -> None:
    from server.config import SettingsError

    # a sandbox started separately signs with its own secret: the gateway needs the same one
    with pytest.raises(SettingsError, match="LIVESALE_PAYMENT_WEBHOOK_SECRET"):
        Settings.from_env({"LIVESALE_PAYMENT_MODE": "sandbox", "LIVESALE_SANDBOX_URL": "http://127.0.0.1:1"})
    with pytest.raises(SettingsError, match="at least 32"):
        Settings.from_env({"LIVESALE_PAYMENT_WEBHOOK_SECRET": "short"})
    with pytest.raises(SettingsError, match="LIVESALE_PAYMENT_MODE"):
        Settings.from_env({"LIVESALE_PAYMENT_MODE": "paypal"})
    # the default: the sandbox provider, which `livesale serve` starts itself (URL and secret empty)
    s = Settings.from_env({})
    assert (s.payment_mode, s.sandbox_url, s.payment_webhook_secret, s.sandbox_port) == ("sandbox", "", "", 0)
    assert Settings.from_env({"LIVESALE_PAYMENT_MODE": "instant"}).payment_mode == "instant"


def test_payment_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    s = Settings.from_env({"LIVESALE_DATA_DIR": str(tmp_path)})
    first = s.payment_secret()
    assert first == s.payment_secret() and len(first) >= 32
    assert (tmp_path / "payment-webhook.key").stat().st_mode & 0o777 == 0o600
    assert first != s.signing_secret()
    assert Settings.from_env({"LIVESALE_PAYMENT_WEBHOOK_SECRET": "w" * 32}).payment_secret() == "w" * 32


async def test_a_refund_the_provider_refused_is_sent_again(sandbox_env: Env, inventory: Inventory, store: Store,
                                                           uid: str) -> None:
    """The provider's refund API is down when a late payment is refunded: the refund row says
    ``failed``; the resending (RefundRetry, run by every gateway) sends it once the provider is back,
    and a second pass sends nothing twice."""
    env = sandbox_env
    sale_id = await launch(env, uid, units=1, hold_ttl_s=5)
    ws, _ = await buyer(env, uid, "Fay")
    hold = await reserve(ws, sale_id)
    started = await ws.request({"type": "checkout", "hold": hold}, timeout(10))
    assert started["type"] == "payment_started", started
    await ws.request({"type": "release", "hold": hold}, timeout(10))  # the hold is gone before the payment
    env.sandbox.refunds_unavailable = True
    async with aiohttp.ClientSession() as s:
        async with s.post(started["redirect_url"], data={"action": "pay"}, headers={"Accept": "application/json"}) as r:
            paid = await r.json()
    out = orjson.loads(paid["webhook"]["answer"])
    assert out["outcome"] == "refunded" and out["refund_reason"] == "hold_released", out
    payments = PaymentStore(store)
    refund = await payments.get_refund(started["payment_id"])
    assert refund is not None and refund.status == "failed" and refund.provider_refund_id == "", refund
    assert started["payment_id"] not in env.sandbox.refunds

    retry = RefundRetry(env.client.app[COMMERCE].payments, retry_after_s=0.001)
    deadline = time.monotonic() + timeout(10)
    while (await payments.get_refund(started["payment_id"])) == refund:  # untouched for retry_after_s
        assert time.monotonic() < deadline
        await retry.once()
    still = await payments.get_refund(started["payment_id"])
    assert still is not None and still.status == "failed"  # the provider is still down: tried, failed again
    env.sandbox.refunds_unavailable = False
    deadline = time.monotonic() + timeout(10)
    while True:
        sent, _failed = await retry.once()
        if sent:
            break
        assert time.monotonic() < deadline, "the refund was never sent again"
    done = await payments.get_refund(started["payment_id"])
    assert done is not None and done.status == "sent" and done.provider_refund_id.startswith("re_"), done
    assert env.sandbox.refunds[started["payment_id"]]["id"] == done.provider_refund_id
    assert await retry.once() == (0, 0)  # nothing due any more
    counters = await inventory.counters(sale_id)
    assert counters is not None and counters.sold == 0 and counters.available == 1, counters
    await ws.close()


# -- coupons through the provider (issue "Interaction", item 3) -------------------------------------------

async def test_checkout_with_a_coupon_charges_the_discounted_total(sandbox_env: Env, inventory: Inventory,
                                                                   store: Store, uid: str) -> None:
    """The provider is asked for the total after the coupon; the webhook's amount is checked against it
    (the list price is refused); the order records list total, discount and total; the coupon is
    redeemed once. A coupon that leaves nothing to pay confirms at once, without the provider."""
    env = sandbox_env
    sale_id = await launch(env, uid, units=3)
    ws, token = await buyer(env, uid, "Cy")
    drop = (await env.api.ok("POST", f"/api/rooms/{uid}/actions/drop_coupons", env.host,
                             {"drop_id": f"d{uid[:10]}", "count": 5, "kind": "amount", "value": 700}))["drop"]
    claimed = await ws.request({"type": "claim_coupon", "drop": drop["drop_id"]}, timeout(10))
    assert claimed["type"] == "claim_result" and claimed["code"] == "CLAIMED", claimed
    hold_id = await reserve(ws, sale_id)
    started = await ws.request({"type": "checkout", "hold": hold_id, "coupon": drop["drop_id"]}, timeout(10))
    assert started["type"] == "payment_started" and started["amount"] == PRICE - 700, started
    plain = await ws.request({"type": "checkout", "hold": hold_id}, timeout(10))
    assert plain["type"] == "error" and plain["code"] == "CONFLICT", plain  # started with the coupon
    st, body = await send_webhook(env, event_body(started["payment_id"], PRICE))
    assert st == 422 and body["error"]["code"] == "AMOUNT_MISMATCH", body  # the list price is not the amount
    async with aiohttp.ClientSession() as s:
        async with s.post(started["redirect_url"], data={"action": "pay"},
                          headers={"Accept": "application/json"}) as r:
            paid = await r.json()
    assert orjson.loads(paid["webhook"]["answer"])["outcome"] == "confirmed", paid
    confirmed = await ws.wait(lambda m: m.get("type") == "order_confirmed", timeout(15))
    o = confirmed["order"]
    assert (o["total"], o["discount"], o["list_total"], o["coupon"]) == (PRICE - 700, 700, PRICE, drop["drop_id"])
    assert (await env.api.ok("GET", f"/api/drops/{drop['drop_id']}", None))["redeemed"] == 1
    wallet = (await env.api.ok("GET", "/api/me/coupons", token))["coupons"]
    assert wallet[0]["state"] == "redeemed" and wallet[0]["order_id"] == hold_id

    full = (await env.api.ok("POST", f"/api/rooms/{uid}/actions/drop_coupons", env.host,
                             {"count": 5, "kind": "percent", "value": 100}))["drop"]
    await env.api.ok("POST", f"/api/drops/{full['drop_id']}/claim", token, {"request_id": "c"}, 201)
    second = await reserve(ws, sale_id)
    free = await ws.request({"type": "checkout", "hold": second, "coupon": full["drop_id"]}, timeout(10))
    assert free["type"] == "payment_started" and free["amount"] == 0 and free["provider"] == "none", free
    assert free["status"] == "confirmed" and free["order_id"] == second
    hold = await inventory.get_hold(second)
    assert hold is not None and hold.status == "confirmed" and hold.discount == PRICE
    await ws.close()

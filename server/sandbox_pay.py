"""The sandbox payment provider: a small aiohttp app that ships with livesale (``livesale demo``
and ``livesale serve`` start it when LIVESALE_SANDBOX_URL is empty, see ``server/payment_setup.py``), so
the demo and the tests run the real provider flow.

It plays a hosted-payment provider: the gateway creates a payment (``POST /v1/payments``, with the
shared secret as its API key) and sends the buyer to its ``redirect_url``, a hosted "pay" page
(``GET /pay/{id}``: the amount, Pay and Cancel). Pay or Cancel (``POST /pay/{id}``, form field
``action``) sends a signed webhook (``payment.succeeded`` / ``payment.canceled``; HMAC-SHA256 over
``<timestamp>.<body>``, header ``Livesale-Signature: t=...,v1=...``) to the gateway's webhook URL,
retried on a 5xx or a network error (``POST /v1/payments/{id}/redeliver`` sends the last event again,
same id and body). ``POST /v1/refunds`` records a refund. Everything is kept in
memory: it is a sandbox, not a bank.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import sys
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from commerce.payments.signature import SIGNATURE_HEADER, signature_header

from .config import Settings, SettingsError

__all__ = ["SandboxPay", "SandboxPayment", "main"]

log = logging.getLogger(__name__)


@dataclass
class SandboxPayment:
    payment_id: str
    amount: int
    currency: str
    reference: str
    description: str
    client_secret: str
    status: str = "requires_payment"  # -> succeeded | canceled
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # webhook attempts: status, event id
    events: list[tuple[str, bytes]] = field(default_factory=list)     # (event id, body) sent


class SandboxPay:
    """The sandbox provider. ``webhook_url`` may be set after construction (before the first payment)."""

    def __init__(self, secret: str, webhook_url: str = "", *, attempts: int = 3, timeout_s: float = 10.0) -> None:
        self._secret = secret
        self.webhook_url = webhook_url
        self.attempts = attempts
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.payments: dict[str, SandboxPayment] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.refunds_unavailable = False  # an outage of the refund API (503), for tests of the resending
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/healthz", self._health)
        app.router.add_post("/v1/payments", self._create)
        app.router.add_get("/v1/payments/{id}", self._get)
        app.router.add_post("/v1/payments/{id}/redeliver", self._redeliver)
        app.router.add_post("/v1/refunds", self._refund)
        app.router.add_get("/pay/{id}", self._page)
        app.router.add_post("/pay/{id}", self._act)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    # -- API (the gateway's calls) ------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> None:
        got = request.headers.get("Authorization", "")
        if not secrets.compare_digest(got.encode(), f"Bearer {self._secret}".encode()):
            raise web.HTTPUnauthorized(text='{"error": "bad API key"}', content_type="application/json")

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "provider": "sandbox"})

    async def _create(self, request: web.Request) -> web.Response:
        self._authorized(request)
        try:
            body = await request.json()
            amount, currency = body["amount"], body["currency"]
            reference, description = str(body.get("reference", "")), str(body.get("description", ""))
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected {amount, currency, reference?, description?}"}, status=400)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0 or not isinstance(currency, str):
            return web.json_response({"error": "amount must be an integer >= 0, currency a string"}, status=400)
        pid = "pay_" + secrets.token_hex(12)
        p = SandboxPayment(pid, amount, currency, reference[:128], description[:200],
                           f"{pid}_secret_{secrets.token_hex(12)}")
        self.payments[pid] = p
        origin = f"{request.url.scheme}://{request.host}"
        return web.json_response({"id": pid, "status": p.status, "redirect_url": f"{origin}/pay/{pid}",
                                  "client_secret": p.client_secret}, status=201)

    async def _get(self, request: web.Request) -> web.Response:
        self._authorized(request)
        p = self.payments.get(request.match_info["id"])
        if p is None:
            raise web.HTTPNotFound()
        return web.json_response({"id": p.payment_id, "status": p.status, "amount": p.amount,
                                  "currency": p.currency, "reference": p.reference, "deliveries": p.deliveries,
                                  "refunded": p.payment_id in self.refunds})

    async def _redeliver(self, request: web.Request) -> web.Response:
        """Send the payment's last event again (same id and body, signed now), as a provider's retry."""
        self._authorized(request)
        p = self.payments.get(request.match_info["id"])
        if p is None or not p.events:
            raise web.HTTPNotFound()
        event_id, body = p.events[-1]
        return web.json_response(await self._deliver(p, event_id, body))

    async def _refund(self, request: web.Request) -> web.Response:
        self._authorized(request)
        if self.refunds_unavailable:
            return web.json_response({"error": "refunds are unavailable; retry later"}, status=503)
        try:
            body = await request.json()
            pid = str(body["payment_id"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected {payment_id, amount?, reason?}"}, status=400)
        p = self.payments.get(pid)
        if p is None or p.status != "succeeded":
            return web.json_response({"error": "no succeeded payment " + pid[:64]}, status=404)
        refund = self.refunds.setdefault(pid, {"id": "re_" + secrets.token_hex(12), "payment_id": pid,
                                               "amount": p.amount, "currency": p.currency,
                                               "reason": str(body.get("reason", ""))[:64], "status": "succeeded"})
        log.info("sandbox: refunded %s (%d %s)", pid, p.amount, p.currency)
        return web.json_response(refund, status=201)

    # -- the hosted page (the buyer's browser) ------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        p = self.payments.get(request.match_info["id"])
        if p is None:
            raise web.HTTPNotFound(text="no such payment")
        return web.Response(text=_page_html(p, ""), content_type="text/html")

    async def _act(self, request: web.Request) -> web.Response:
        """Pay or Cancel: the payment's outcome, then the signed webhook to the gateway."""
        p = self.payments.get(request.match_info["id"])
        if p is None:
            raise web.HTTPNotFound(text="no such payment")
        form = await request.post()
        action = str(form.get("action", "")) or request.query.get("action", "")
        wants_json = "application/json" in request.headers.get("Accept", "")
        if action not in ("pay", "cancel"):
            return web.json_response({"error": "action must be pay or cancel"}, status=400)
        delivery: dict[str, Any] | None = None
        if p.status == "requires_payment":
            p.status = "succeeded" if action == "pay" else "canceled"
            delivery = await self.send_event(p, "payment.succeeded" if action == "pay" else "payment.canceled")
        if wants_json:
            return web.json_response({"id": p.payment_id, "status": p.status, "webhook": delivery})
        note = {"succeeded": "Payment received. You can close this window.",
                "canceled": "Payment canceled. You can close this window."}[p.status]
        return web.Response(text=_page_html(p, note), content_type="text/html")

    # -- webhooks ----------------------------------------------------------------------------------

    async def send_event(self, p: SandboxPayment, kind: str) -> dict[str, Any]:
        """Sign and deliver one event (retried on a 5xx or a network error); returns the last attempt."""
        event = {"id": "evt_" + secrets.token_hex(12), "type": kind, "created": int(time.time()),
                 "data": {"payment_id": p.payment_id, "amount": p.amount, "currency": p.currency,
                          "reference": p.reference}}
        body = orjson.dumps(event)
        p.events.append((str(event["id"]), body))
        attempt = await self._deliver(p, str(event["id"]), body)
        log.info("sandbox: %s %s delivered: %s", kind, p.payment_id, attempt["status"])
        return attempt

    async def _deliver(self, p: SandboxPayment, event_id: str, body: bytes) -> dict[str, Any]:
        attempt: dict[str, Any] = {"event_id": event_id, "status": 0}
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        for n in range(self.attempts):
            # each attempt is signed afresh (a retry later must pass the receiver's tolerance window)
            headers = {SIGNATURE_HEADER: signature_header(self._secret, int(time.time()), body),
                       "Content-Type": "application/json"}
            try:
                async with self._session.post(self.webhook_url, data=body, headers=headers) as r:
                    answer = await r.read()
                    attempt = {"event_id": event_id, "status": r.status,
                               "answer": answer[:500].decode(errors="replace")}
            except (TimeoutError, aiohttp.ClientError) as exc:
                attempt = {"event_id": event_id, "status": 0, "answer": type(exc).__name__}
            p.deliveries.append(attempt)
            if attempt["status"] and attempt["status"] < 500:
                break
            await asyncio.sleep(0.2 * (n + 1))
        return attempt


def _money(amount: int, currency: str) -> str:
    return f"{amount // 100}.{amount % 100:02d} {currency}"


def _page_html(p: SandboxPayment, note: str) -> str:
    e = html.escape
    buttons = ""
    if p.status == "requires_payment":
        buttons = ('<form method="post"><button name="action" value="pay" id="pay">Pay</button> '
                   '<button name="action" value="cancel" id="cancel" class="secondary">Cancel</button></form>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox payment</title>
<style>
 body {{ font: 16px system-ui, sans-serif; background: #f4f4f6; margin: 0; }}
 main {{ max-width: 380px; margin: 10vh auto; background: #fff; border-radius: 12px; padding: 24px;
        box-shadow: 0 2px 12px rgba(0,0,0,.08); }}
 .amount {{ font-size: 32px; font-weight: 700; margin: 8px 0 4px; }}
 .muted {{ color: #666; font-size: 14px; }}
 button {{ font: inherit; padding: 10px 22px; border-radius: 8px; border: 0; background: #635bff; color: #fff;
          cursor: pointer; margin-top: 16px; }}
 button.secondary {{ background: #e4e4ea; color: #222; }}
 .note {{ margin-top: 16px; font-weight: 600; }}
</style></head>
<body><main>
 <div class="muted">livesale sandbox provider: no real money moves</div>
 <div class="amount" id="amount">{e(_money(p.amount, p.currency))}</div>
 <div class="muted">{e(p.description)}</div>
 <div class="muted">payment {e(p.payment_id)} · <span id="status">{e(p.status)}</span></div>
 {buttons}
 <div class="note" id="note">{e(note)}</div>
</main></body></html>
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m server.sandbox_pay``: the sandbox provider on its own, next to ``livesale serve``
    (LIVESALE_HOST, LIVESALE_SANDBOX_PORT (0, the default: 8081 here), LIVESALE_PAYMENT_WEBHOOK_SECRET
    from the environment). ``livesale serve`` starts the same provider itself when LIVESALE_SANDBOX_URL is empty."""
    parser = argparse.ArgumentParser(prog="python -m server.sandbox_pay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhook-url", help="the gateway's webhook URL (default: "
                        "http://127.0.0.1:$LIVESALE_PORT/api/payments/webhook/sandbox)")
    args = parser.parse_args(argv)
    try:
        s = Settings.from_env()
    except SettingsError as e:
        print(f"sandbox: configuration error: {e}", file=sys.stderr)
        return 2
    if len(s.payment_webhook_secret) < 32:
        print("sandbox: set LIVESALE_PAYMENT_WEBHOOK_SECRET (at least 32 characters, the same as the gateway's)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=s.log_level)
    url = args.webhook_url or f"http://127.0.0.1:{s.port}/api/payments/webhook/sandbox"
    web.run_app(SandboxPay(s.payment_webhook_secret, url).app(), host=s.host, port=s.sandbox_port or 8081,
                access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The client side of the sandbox provider (its app: ``server/sandbox_pay.py``).

API calls go to ``<base>/v1/...`` with ``Authorization: Bearer <webhook secret>`` (the sandbox has
one shared secret for its API and its webhooks); webhooks are verified with ``verify_webhook``.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from .provider import PaymentIntent, PaymentStart, ProviderError, WebhookEvent, verify_webhook

__all__ = ["SandboxProvider"]

log = logging.getLogger(__name__)


class SandboxProvider:
    name = "sandbox"

    def __init__(self, base_url: str, secret: str, tolerance_s: int, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self.tolerance_s = tolerance_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout,
                                                  headers={"Authorization": f"Bearer {self._secret}"})
        return self._session

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._http().post(self.base_url + path, json=body) as r:
                data = await r.json(content_type=None)
                if r.status not in (200, 201) or not isinstance(data, dict):
                    raise ProviderError(f"sandbox {path} answered {r.status}")
                return data
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise ProviderError(f"sandbox {path} unreachable: {type(exc).__name__}") from None

    async def start(self, intent: PaymentIntent) -> PaymentStart:
        data = await self._post("/v1/payments", {
            "amount": intent.amount, "currency": intent.currency, "reference": intent.hold_id,
            "description": intent.description})
        try:
            return PaymentStart(str(data["id"]), str(data.get("redirect_url", "")),
                                str(data.get("client_secret", "")))
        except KeyError:
            raise ProviderError("sandbox answered without a payment id") from None

    def verify(self, headers: dict[str, str], body: bytes, now_s: float) -> WebhookEvent:
        return verify_webhook(self._secret, headers, body, now_s, self.tolerance_s)

    async def refund(self, payment_id: str, amount: int, currency: str, reason: str) -> str:
        data = await self._post("/v1/refunds", {"payment_id": payment_id, "amount": amount,
                                                "currency": currency, "reason": reason})
        return str(data.get("id", ""))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

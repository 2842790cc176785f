"""The payment mode and provider of a process, from Settings (wiring only); and the bundled sandbox
provider that `livesale serve` / `livesale demo` start when LIVESALE_SANDBOX_URL is empty."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from commerce.payments.provider import PaymentMode, PaymentProvider
from commerce.payments.sandbox import SandboxProvider

from .config import Settings

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["payment_provider", "needs_bundled_sandbox", "start_bundled_sandbox"]


def payment_provider(s: Settings) -> tuple[PaymentMode, PaymentProvider | None]:
    """``LIVESALE_PAYMENT_MODE``: ``instant`` has no provider; ``sandbox`` talks to LIVESALE_SANDBOX_URL
    (a process that takes no checkouts and webhooks, ``livesale settle``, may leave it empty)."""
    mode = PaymentMode(s.payment_mode)
    if mode is PaymentMode.SANDBOX:
        return mode, SandboxProvider(s.sandbox_url, s.payment_webhook_secret, s.payment_tolerance_s)
    return mode, None


def needs_bundled_sandbox(s: Settings) -> bool:
    """The sandbox mode with no LIVESALE_SANDBOX_URL: this process starts the bundled provider."""
    return s.payment_mode == PaymentMode.SANDBOX.value and not s.sandbox_url


async def start_bundled_sandbox(s: Settings, gateway_port: int) -> tuple[web.AppRunner, Settings]:
    """The bundled sandbox provider (``server/sandbox_pay.py``) in this event loop, on LIVESALE_HOST and
    LIVESALE_SANDBOX_PORT (0: a free port), its webhooks aimed at the gateway on ``gateway_port``; the
    webhook secret is LIVESALE_PAYMENT_WEBHOOK_SECRET or the data directory's ``payment-webhook.key``.
    Returns its runner (``cleanup()`` stops it) and the settings with ``sandbox_url`` and the secret
    filled in. A set port that cannot be bound raises ``ListenError`` before anything started."""
    from aiohttp import web

    from .cli import bind_sockets
    from .sandbox_pay import SandboxPay

    secret = s.payment_secret()
    socks = bind_sockets(s.host, s.sandbox_port)
    if s.sandbox_port == 0:  # free ports differ per address: keep the first address's one
        for extra in socks[1:]:
            extra.close()
        socks = socks[:1]
    v6 = socks[0].family == socket.AF_INET6
    local = ("::1" if v6 else "127.0.0.1") if s.host in ("", "0.0.0.0", "::", "localhost") else s.host
    shown = f"[{local}]" if ":" in local else local
    try:
        sandbox = SandboxPay(secret, f"http://{shown}:{gateway_port}/api/payments/webhook/sandbox")
        runner = web.AppRunner(sandbox.app(), access_log=None)
        await runner.setup()
        for sock in socks:
            await web.SockSite(runner, sock).start()
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    url = f"http://{shown}:{socks[0].getsockname()[1]}"
    return runner, s.replace(payment_mode=PaymentMode.SANDBOX.value, payment_webhook_secret=secret, sandbox_url=url)

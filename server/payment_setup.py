"""The payment mode and provider of a process, from Settings (wiring only)."""

from __future__ import annotations

from commerce.payments.provider import PaymentMode, PaymentProvider
from commerce.payments.sandbox import SandboxProvider

from .config import Settings

__all__ = ["payment_provider"]


def payment_provider(s: Settings) -> tuple[PaymentMode, PaymentProvider | None]:
    """``LIVESALE_PAYMENT_MODE``: ``instant`` has no provider; ``sandbox`` talks to LIVESALE_SANDBOX_URL."""
    mode = PaymentMode(s.payment_mode)
    if mode is PaymentMode.SANDBOX:
        return mode, SandboxProvider(s.sandbox_url, s.payment_webhook_secret, s.payment_tolerance_s)
    return mode, None

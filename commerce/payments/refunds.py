"""``RefundRetry``: refunds the provider has not accepted yet are sent again until it does.

A refund is recorded in SQL (``refunds``, ``requested``) in the webhook's transaction, before the
webhook is acknowledged, and sent to the provider at once. When that send failed (``failed``: the
provider was down or refused) or never happened (``requested``: the process stopped in between), this
loop, run by every gateway and settlement process, sends it again once it has been untouched for
``retry_after_s``. Each attempt first claims the row (a compare-and-set in SQL), so two processes
never send the same refund at the same time; a provider keys refunds by payment, so a repeat after a
crash gives nothing back twice.
"""

from __future__ import annotations

import logging
import time

from ..tasks import Every
from .service import Payments

__all__ = ["RefundRetry"]

log = logging.getLogger(__name__)


class RefundRetry:
    def __init__(self, payments: Payments, retry_after_s: float, interval_s: float | None = None) -> None:
        self.payments = payments
        self.retry_after_s = retry_after_s
        interval = interval_s if interval_s is not None else max(0.2, min(30.0, retry_after_s / 2))
        on = payments.provider is not None and retry_after_s > 0
        self._loop = Every(interval if on else 0, self.once, log, "payments: refund retry")

    def start(self) -> None:
        self._loop.start()

    async def aclose(self) -> None:
        await self._loop.aclose()

    async def once(self) -> tuple[int, int]:
        """One pass over the due refunds: (sent, still failing)."""
        sql = self.payments.sql
        due = await sql.refunds_due(int((time.time() - self.retry_after_s) * 1000))
        sent = failed = 0
        for r in due:
            if self._loop.stopping:
                break
            if not await sql.claim_refund(r):
                continue
            if await self.payments.send_refund(r.payment_id, r.amount, r.currency, r.reason):
                sent += 1
                log.info("payments: refund of %s sent on retry (%d %s)", r.payment_id, r.amount, r.currency)
            else:
                failed += 1
        return sent, failed

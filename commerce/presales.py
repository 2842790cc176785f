"""Pre-sales: a product sold ahead of its launch, a deposit first and the balance in a window.

A pre-sale is a pool-backed sale launched with a ``deposit`` (per unit), a balance window and a
deposit rule (``commerce/sales.py``). Buying it is an ordinary ``buy``: the hold takes the unit
from the sale's units with every guarantee of a hold. The hold's first payment is the deposit
(``confirm.lua`` answers ``DEPOSITED``: the hold becomes ``deposit`` and stays held until the window
closes); once the window opens the second payment, the balance, confirms it and it settles as an
order of the full price. A hold whose balance is not paid when the window closes is expired by the
reaper: its units go back (to the pool, its sale having ended), and ``deposits_expired`` applies the
sale's rule once per hold: ``refund`` (the deposit goes back through the payment provider when it
was paid through one) or ``keep``; the outcome is a ``deposit_outcomes`` row and a ``deposit_expired``
message to the buyer.
"""

from __future__ import annotations

import logging
import time

from inventory.domain import ExpiredDeposit
from inventory.presales import DepositOutcome, DepositStore
from inventory.store import Store

from .payments.service import Payments
from .room_bus import RoomBus

__all__ = ["Presales"]

log = logging.getLogger(__name__)


class Presales:
    def __init__(self, store: Store, bus: RoomBus, payments: Payments) -> None:
        self.store = store
        self.bus = bus
        self.payments = payments
        self.sql = DepositStore(store)

    async def deposits_expired(self, sale_id: str, deposits: list[ExpiredDeposit]) -> None:
        """The reaper's report of deposit holds whose balance went unpaid: apply the sale's rule, once each."""
        sale = await self.store.get_sale(sale_id)
        if sale is None or not sale.deposit:
            log.warning("presales: %d expired deposits of %s, which is not a pre-sale in SQL", len(deposits), sale_id)
            return
        refund = sale.deposit_rule == "refund"
        for d in deposits:
            amount = sale.deposit * d.qty
            if refund:  # the money first (idempotent by payment): a crash before the outcome repeats nothing
                for p in await self.payments.sql.for_hold(d.hold_id):
                    if p.status == "deposit" and await self.payments.sql.refund(p, "deposit_refunded"):
                        await self.payments.send_refund(p.payment_id, p.amount, p.currency, "deposit_refunded")
            fresh = await self.sql.record(DepositOutcome(
                hold_id=d.hold_id, sale_id=sale_id, user_id=d.user_id, qty=d.qty, amount=amount, currency=sale.currency,
                rule=sale.deposit_rule, outcome="refunded" if refund else "kept", deposit_ref=d.deposit_ref,
                at_ms=int(time.time() * 1000)))
            if fresh:
                log.info("presales: hold %s's balance went unpaid: deposit %d %s %s", d.hold_id, amount, sale.currency,
                         "refunded" if refund else "kept")
                await self.bus.to_user(sale.room_id, d.user_id, {
                    "type": "deposit_expired", "hold": d.hold_id, "sale_id": sale_id, "amount": amount,
                    "currency": sale.currency, "outcome": "refunded" if refund else "kept"})

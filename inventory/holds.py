"""The hold record: the one written schema of a hold as the Lua scripts store it. Pure.

A hold lives in the sale's holds hash (``inventory.keys.SaleKeys.holds``): field = hold id
(``<sale id>.<16 hex>``), value = a JSON object with short keys (the burst writes thousands per
second, so every byte counts). ``reserve.lua`` creates it; ``confirm.lua``, ``release.lua`` and
``reap.lua`` change ``s`` and add the fields of their transition; ``audit.lua`` sums ``q`` by ``s``.
Every script header points here; ``Hold.from_record`` is the only Python reader.

| key  | type   | written by      | meaning                                                       |
|------|--------|-----------------|---------------------------------------------------------------|
| `u`  | string | reserve         | user id (the buyer; owns the hold)                            |
| `q`  | int    | reserve         | units held                                                    |
| `p`  | int    | reserve         | pay-by deadline, ms of Redis TIME                             |
| `s`  | string | all             | status: `held` -> `confirmed` \\| `released` \\| `expired`; a      |
|      |        |                 | pre-sale's: `held` -> `deposit` -> `confirmed` \\| `expired`      |
| `r`  | string | reserve         | the request id that created it (idempotency key, with `u`)    |
| `t`  | int    | reserve         | created at, ms                                                |
| `c`  | int    | confirm         | confirmed (paid) at, ms                                       |
| `pr` | string | confirm         | payment reference                                             |
| `x`  | int    | release, reap,  | ended at (released or expired), ms                            |
|      |        | confirm (late)  |                                                               |
| `ch` | string | reserve         | a pool's channel hold only: the channel id (its order's channel) |
| `dr` | string | confirm         | a pre-sale hold's deposit payment reference (status `deposit`)  |
| `d`  | int    | confirm         | when the deposit was paid, ms (`p` is then the balance deadline) |
| `cp` | string | confirm         | a coupon applied at pay: its drop id (commerce/coupons.py)      |
| `dc` | int    | confirm         | that coupon's discount, minor units (the order's total is less) |
| `at` | string | confirm         | a share link's attribution: sharer and code (the order's sharer)  |
"""

from __future__ import annotations

from typing import Final

__all__ = ["USER", "QTY", "PAY_BY", "STATUS", "REQUEST", "CREATED", "CONFIRMED", "PAYMENT_REF", "ENDED", "CHANNEL",
           "DEPOSIT_REF", "DEPOSITED", "COUPON", "DISCOUNT",
           "STATUSES"]

USER: Final = "u"
QTY: Final = "q"
PAY_BY: Final = "p"
STATUS: Final = "s"
REQUEST: Final = "r"
CREATED: Final = "t"
CONFIRMED: Final = "c"
PAYMENT_REF: Final = "pr"
ENDED: Final = "x"
CHANNEL: Final = "ch"
DEPOSIT_REF: Final = "dr"
DEPOSITED: Final = "d"
COUPON: Final = "cp"
DISCOUNT: Final = "dc"
STATUSES: Final = ("held", "deposit", "confirmed", "released", "expired")

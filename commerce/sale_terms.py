"""Which sales refuse guest buyers (``members_only``), cached per process.

A sale's terms never change after launch, so the flag is remembered per sale the first time it is
seen (at launch, or when the sale's row is read for any reason) and a guest's buy click costs no
SQL query; a miss reads the row once. Bounded: past ``max_sales`` the oldest entries are dropped
(they are read again if they come back).
"""

from __future__ import annotations

from inventory.store import SaleRecord, Store

__all__ = ["MembersOnly"]


class MembersOnly:
    def __init__(self, store: Store, max_sales: int = 100_000) -> None:
        self.store = store
        self.max_sales = max_sales
        self._flags: dict[str, bool] = {}

    def note(self, rec: SaleRecord) -> None:
        if rec.sale_id not in self._flags and len(self._flags) >= self.max_sales:
            del self._flags[next(iter(self._flags))]  # the oldest (dicts keep insertion order)
        self._flags[rec.sale_id] = rec.members_only

    def cached(self, sale_id: str) -> bool | None:
        """The flag when known in this process, else None."""
        return self._flags.get(sale_id)

    async def load(self, sale_id: str) -> bool | None:
        """The flag, reading the sale's row on a miss; None for a sale that does not exist."""
        flag = self._flags.get(sale_id)
        if flag is not None:
            return flag
        rec = await self.store.get_sale(sale_id)
        if rec is None:
            return None
        self.note(rec)
        return rec.members_only

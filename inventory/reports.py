"""The SQL reads behind a show report (commerce/reports.py): the room's join / leave / tap / held / team
signals (``signals``), its settled orders (``orders``) and the offline redemptions of its offers
(``offer_redemptions``, inventory/offers.py). Only reads; the report is computed from SQL alone, so
it stays right after Redis forgot the room.

A draw's prize (a sale ``<pool>--d-<draw>``) is not a purchase: its orders are left out.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from .draws import PRIZE_SALE_MARK
from .offers import offer_redemptions
from .signal_log import SignalKind, signals
from .store import RoomRecord, Store, orders

__all__ = ["ReportReads", "SessionRow", "OrderRow", "OfflineRow"]

SessionRow = tuple[str, str, str, int, int]          # kind (join | leave), user, session, at ms, value
OrderRow = tuple[str, str, str, str, int, int, int]  # user, source, sku, currency, orders, units, total
OfflineRow = tuple[str, str, int, int, int]          # channel, currency, redemptions, units, total


class ReportReads:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    async def room(self, room_id: str) -> RoomRecord | None:
        return await self.store.get_room(room_id)

    async def session_events(self, room_id: str) -> list[SessionRow]:
        """Every join and leave of the room (``ref`` the session, ``value`` of a leave the ms watched)."""
        q = (select(signals.c.kind, signals.c.user_id, signals.c.ref, signals.c.at_ms, signals.c.value)
             .where(signals.c.room_id == room_id, signals.c.kind.in_((SignalKind.JOIN.value, SignalKind.LEAVE.value))))
        async with self.engine.connect() as conn:
            return [(str(k), str(u), str(r), int(a), int(v)) for k, u, r, a, v in await conn.execute(q)]

    async def users(self, room_id: str, kind: SignalKind) -> set[str]:
        """The distinct users with a signal of ``kind`` in the room."""
        q = select(signals.c.user_id).distinct().where(signals.c.room_id == room_id, signals.c.kind == kind.value)
        async with self.engine.connect() as conn:
            return {str(u) for (u,) in await conn.execute(q)}

    async def buyers(self, room_id: str) -> set[str]:
        """The distinct users with a settled order in the room (prizes left out)."""
        q = select(orders.c.user_id).distinct().where(orders.c.room_id == room_id, _not_prize())
        async with self.engine.connect() as conn:
            return {str(u) for (u,) in await conn.execute(q)}

    async def latest_teams(self, room_id: str) -> dict[str, str]:
        """Each user's latest fan team in the room (``team`` signals, the last one wins)."""
        q = (select(signals.c.user_id, signals.c.ref)
             .where(signals.c.room_id == room_id, signals.c.kind == SignalKind.TEAM.value)
             .order_by(signals.c.at_ms, signals.c.entry, signals.c.idx))
        out: dict[str, str] = {}
        async with self.engine.connect() as conn:
            for user, team in await conn.execute(q):
                out[str(user)] = str(team)
        return out

    async def order_rows(self, room_id: str) -> list[OrderRow]:
        """The room's settled orders summed per (user, source, sku, currency)."""
        c = orders.c
        q = (select(c.user_id, c.source, c.sku, c.currency, func.count(), func.sum(c.qty), func.sum(c.total))
             .where(c.room_id == room_id, _not_prize())
             .group_by(c.user_id, c.source, c.sku, c.currency))
        async with self.engine.connect() as conn:
            rows = await conn.execute(q)
            return [(str(u), str(src or "direct"), str(k), str(cur), int(n), int(units or 0), int(t or 0))
                    for u, src, k, cur, n, units, t in rows]

    async def offline(self, room_id: str) -> list[OfflineRow]:
        """The room's offline offer redemptions (inventory/offers.py) per (channel, currency)."""
        c = offer_redemptions.c
        q = (select(c.channel, c.currency, func.count(), func.sum(c.qty), func.sum(c.total))
             .where(c.room_id == room_id).group_by(c.channel, c.currency))
        async with self.engine.connect() as conn:
            return [(str(ch), str(cur), int(n), int(u or 0), int(t or 0)) for ch, cur, n, u, t in await conn.execute(q)]


def _not_prize() -> Any:
    return ~orders.c.sale_id.contains(PRIZE_SALE_MARK, autoescape=True)

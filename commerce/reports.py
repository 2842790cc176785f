"""Show reports for brands (``GET /api/rooms/{room}/report``, docs/GROWTH-reports.md): who watched, for
how long, how many at once, how far they went in the funnel, and what sold, by source, fan team and SKU,
plus the offline redemptions of the room's offers. Computed from SQL only (inventory/reports.py), so a
report stays right after Redis forgot the room; the arithmetic is commerce/report_math.py.

The room's host (a host token naming the room or ``*``) and any merchant may read it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from inventory.reports import ReportReads
from inventory.signal_log import SignalKind
from inventory.store import Store

from .errors import Forbidden, NotFound
from .identity import Identity
from .report_math import (
    SessionEvent, Totals, funnel_steps, peak_concurrent, sessions, totals_by, watch_per_viewer, watch_summary,
)

__all__ = ["Reports", "ShowReport", "SOURCES", "may_read"]

SOURCES = ("direct", "link", "shop", "channel")  # orders.source, always listed (zeros included)


def may_read(who: Identity, room_id: str) -> None:
    if not (who.is_merchant or who.hosts(room_id)):
        raise Forbidden("a show report needs this room's host token or a merchant token")


@dataclass(frozen=True, slots=True)
class ShowReport:
    room: dict[str, str]
    generated_at: int
    unique_viewers: int
    peak_concurrent: int
    sessions: int
    open_sessions: int
    watch_time: dict[str, Any]
    funnel: dict[str, int]
    total: Totals
    by_source: list[tuple[str, Totals]]
    by_team: list[tuple[str, Totals]]
    by_sku: list[tuple[str, Totals]]
    offline: list[tuple[str, Totals]]

    def wire(self) -> dict[str, Any]:
        """The JSON answer (docs/GROWTH-reports.md, The report's fields)."""
        return {
            "room": self.room, "generated_at": self.generated_at,
            "unique_viewers": self.unique_viewers, "peak_concurrent": self.peak_concurrent,
            "sessions": {"count": self.sessions, "open": self.open_sessions},
            "watch_time": self.watch_time, "funnel": self.funnel,
            "orders": {
                "count": self.total.orders, "units": self.total.units, "gmv": self.total.gmv(),
                "by_source": [{"source": k, **t.wire()} for k, t in self.by_source],
                "by_team": [{"team": k, **t.wire()} for k, t in self.by_team],
                "by_sku": [{"sku": k, **t.wire()} for k, t in self.by_sku],
                "offline": [{"channel": k, "redemptions": t.orders, "units": t.units, "gmv": t.gmv()}
                            for k, t in self.offline],
            },
        }

    def csv(self) -> str:
        """The report as CSV: sections, each a line naming it (``[name]``), its header line, its rows and
        a blank line (docs/GROWTH-reports.md, CSV layout). Money in minor units of the row's currency;
        the money sections have one row per (group, currency)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")

        def section(name: str, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
            w.writerow([f"[{name}]"])
            w.writerow(header)
            for r in rows:
                w.writerow([_cell(v) for v in r])
            w.writerow([])

        wt = self.watch_time
        section("report", ["field", "value"], [
            ["room_id", self.room["room_id"]], ["title", self.room["title"]], ["status", self.room["status"]],
            ["generated_at", self.generated_at], ["unique_viewers", self.unique_viewers],
            ["peak_concurrent", self.peak_concurrent], ["sessions", self.sessions],
            ["open_sessions", self.open_sessions], ["watch_viewers", wt["viewers"]],
            ["watch_median_s", wt["median_s"]], ["watch_mean_s", wt["mean_s"]],
            ["orders", self.total.orders], ["units", self.total.units],
        ])
        section("funnel", ["step", "users"], self.funnel.items())
        section("watch_time", ["bucket", "from_s", "to_s", "viewers"],
                ([b["label"], b["from_s"], "" if b["to_s"] is None else b["to_s"], b["viewers"]]
                 for b in wt["buckets"]))
        section("orders", ["currency", "orders", "units", "gmv_minor"],
                ([cur, *v] for cur, v in sorted(self.total.per_currency.items())))
        for name, key, groups in (("by_source", "source", self.by_source), ("by_team", "team", self.by_team),
                                  ("by_sku", "sku", self.by_sku)):
            section(name, [key, "currency", "orders", "units", "gmv_minor"], _money_rows(groups))
        section("offline", ["channel", "currency", "redemptions", "units", "gmv_minor"], _money_rows(self.offline))
        return buf.getvalue()


class Reports:
    def __init__(self, store: Store) -> None:
        self.sql = ReportReads(store)

    async def funnel(self, room_id: str) -> dict[str, int]:
        """The report's funnel alone (the dashboard of an ended room whose Redis keys expired)."""
        sql = self.sql
        room = await sql.room(room_id)
        joined = await sql.users(room_id, SignalKind.JOIN) - {room.host_id if room else ""}
        return funnel_steps(joined, await sql.users(room_id, SignalKind.TAP), await sql.users(room_id, SignalKind.HELD),
                            await sql.buyers(room_id))

    async def report(self, who: Identity, room_id: str, now_ms: int) -> ShowReport:
        """The room's report for ``who`` (Forbidden: not its host nor a merchant; NotFound: no room)."""
        may_read(who, room_id)
        room = await self.sql.room(room_id)
        if room is None:
            raise NotFound(f"no room {room_id[:64]!r}")
        sql = self.sql
        # a session without a leave runs until now, or until the room ended (its last status change)
        until = min(now_ms, room.updated_at_ms) if room.status == "ended" else now_ms
        # the room's own host watching their show is not audience
        events = [SessionEvent(k, u, r, a, v) for k, u, r, a, v in await sql.session_events(room_id)
                  if u != room.host_id]
        spans = sessions(events, until)
        joined = {e.user for e in events if e.kind == "join"}
        tapped = await sql.users(room_id, SignalKind.TAP)
        held = await sql.users(room_id, SignalKind.HELD)
        teams = await sql.latest_teams(room_id)
        rows = await sql.order_rows(room_id)
        paid = {row[0] for row in rows}  # the buyers of these very orders (settlement may add more meanwhile)
        offline = await sql.offline(room_id)

        total = Totals()
        for _user, _src, _sku, cur, n, units, gmv in rows:
            total.add(n, units, cur, gmv)
        by_source = dict(totals_by((src, n, u, cur, g) for _, src, _, cur, n, u, g in rows))
        sources = [*SOURCES, *sorted(set(by_source) - set(SOURCES))]
        return ShowReport(
            room={"room_id": room.room_id, "title": room.title, "status": room.status},
            generated_at=now_ms, unique_viewers=len(joined),
            peak_concurrent=peak_concurrent((s.start_ms, s.end_ms) for s in spans),
            sessions=len(spans), open_sessions=sum(1 for s in spans if s.open),
            watch_time=watch_summary(watch_per_viewer(spans)),
            funnel=funnel_steps(joined, tapped, held, paid),
            total=total,
            by_source=[(k, by_source.get(k) or Totals()) for k in sources],
            by_team=totals_by((teams.get(user, ""), n, u, cur, g) for user, _, _, cur, n, u, g in rows),
            by_sku=totals_by((sku, n, u, cur, g) for _, _, sku, cur, n, u, g in rows),
            offline=totals_by((ch, n, u, cur, g) for ch, cur, n, u, g in offline),
        )


# -- CSV -------------------------------------------------------------------------------------------------

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> Any:
    """Text that a spreadsheet would run as a formula gets a leading apostrophe."""
    if isinstance(v, str) and v.startswith(_FORMULA):
        return "'" + v
    return v


def _money_rows(groups: Iterable[tuple[str, Totals]]) -> list[list[Any]]:
    """One row per (group, currency); a group without orders: one row of zeros, currency ''."""
    out: list[list[Any]] = []
    for key, t in groups:
        if not t.per_currency:
            out.append([key, "", 0, 0, 0])
        for cur, (n, units, total) in sorted(t.per_currency.items()):
            out.append([key, cur, n, units, total])
    return out

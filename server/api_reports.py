"""The HTTP transport of show reports (docs/GROWTH-reports.md): ``GET /api/rooms/{room}/report``, JSON or,
with ``?format=csv``, CSV. For the room's host or any merchant; parse, call ``commerce``, answer."""

from __future__ import annotations

from aiohttp import web

from commerce.errors import InvalidInput

from .api import _commerce, identity, json
from .appkeys import HUB

__all__ = ["setup"]

_FORMATS = ("json", "csv")


async def room_report(request: web.Request) -> web.Response:
    who = identity(request)
    fmt = request.query.get("format", "json")
    if fmt not in _FORMATS:
        raise InvalidInput("format must be json or csv")
    room_id = request.match_info["room"]
    report = await _commerce(request).reports.report(who, room_id, request.app[HUB].now_ms())
    if fmt == "json":
        return json(report.wire())
    name = "".join(ch for ch in room_id if ch.isalnum() or ch in "-_")[:64] or "room"
    return web.Response(text=report.csv(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="report-{name}.csv"',
                                 "Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/rooms/{room}/report", room_report)

"""The HTTP transport of re-engagement (docs/GROWTH-reengage.md): a viewer's reminders of a show or a sale,
and a host's or merchant's notice to an audience about a sale. Parse, call ``commerce``, answer."""

from __future__ import annotations

from aiohttp import web

from commerce.reminders import NotifyBody
from commerce.validation import Schema

from .api import _commerce, _parse, body, identity, json, viewer_of

__all__ = ["setup"]

_NOTIFY = Schema(NotifyBody)


def _target(request: web.Request) -> tuple[str, str | None]:
    return request.match_info["room"], request.match_info.get("sale")


async def remind(request: web.Request) -> web.Response:
    room_id, sale_id = _target(request)
    fresh, out = await _commerce(request).reengage.remind(viewer_of(request), room_id, sale_id)
    return json(out, 201 if fresh else 200)


async def forget(request: web.Request) -> web.Response:
    room_id, sale_id = _target(request)
    removed = await _commerce(request).reengage.forget(viewer_of(request), room_id, sale_id)
    return json({"room_id": room_id, "sale_id": sale_id, "removed": removed})


async def my_reminders(request: web.Request) -> web.Response:
    return json({"reminders": await _commerce(request).reengage.of(viewer_of(request))})


async def notify(request: web.Request) -> web.Response:
    actor = identity(request)
    req = _parse(_NOTIFY, await body(request))
    out = await _commerce(request).reengage.notify(actor, request.match_info["room"], request.match_info["sale"], req)
    return json(out, 202)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/me/reminders", my_reminders)
    r.add_put("/api/me/reminders/{room}", remind)
    r.add_delete("/api/me/reminders/{room}", forget)
    r.add_put("/api/me/reminders/{room}/{sale}", remind)
    r.add_delete("/api/me/reminders/{room}/{sale}", forget)
    r.add_post("/api/rooms/{room}/sales/{sale}/notify", notify)

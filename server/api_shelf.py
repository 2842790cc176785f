"""The HTTP transport of each viewer's shelf (docs/PROTOCOL.md, Each viewer their own shelf):
``GET /api/rooms/{room}/shelf`` (viewer token) -> ``{room, order, personal}``, the same as the ``shelf``
message a viewer's socket gets after its snapshot. Parse, call ``commerce.shelf``, answer."""

from __future__ import annotations

from aiohttp import web

from .api import _commerce, json, viewer_of

__all__ = ["setup"]


async def get_shelf(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    return json(await _commerce(request).shelf.view(viewer, request.match_info["room"]))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/rooms/{room}/shelf", get_shelf)

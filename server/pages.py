"""Static web pages: the viewers' page, the hosts' control panel, the merchants' stock-pool page, the
lucky-draw check and the JS client module."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["setup", "WEB_DIR"]

WEB_DIR = Path(__file__).parent / "web"


def _page(name: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = WEB_DIR / name
        if not path.exists():
            raise web.HTTPNotFound(text=f"{name} is not installed")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})
    return handler


def setup(app: web.Application) -> None:
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/rooms/{room}", _page("room.html"))
    app.router.add_get("/rooms/{room}/report", _page("report.html"))
    app.router.add_get("/host/{room}", _page("host.html"))
    app.router.add_get("/host", _page("host.html"))
    app.router.add_get("/merchant", _page("merchant.html"))
    app.router.add_get("/verify/{draw}", _page("verify.html"))
    app.router.add_get("/shop/{shop}", _page("shop.html"))
    WEB_DIR.mkdir(exist_ok=True)
    app.router.add_static("/static/", WEB_DIR, show_index=False, append_version=False)

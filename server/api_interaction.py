"""The HTTP transport of the interaction features (docs/PROTOCOL.md Interaction): fan teams, polls,
coupon drops and the wallet, lucky draws and their published entrant lists. Parse, call
``commerce``, answer; the hosts' actions go through ``POST /api/rooms/{room}/actions/{action}``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from commerce.errors import ErrorCode, Refused
from commerce.identity import ANONYMOUS
from commerce.interaction_requests import ClaimBody, KeyId, VoteBody
from commerce.requests import CouponRef
from commerce.validation import Schema

from .api import _commerce, _parse, body, identity, json, viewer_of

__all__ = ["setup"]

_VOTE, _CLAIM = Schema(VoteBody), Schema(ClaimBody)
_OK = {"VOTED", "CLAIMED", "ENTERED"}


def _answer(out: dict[str, Any], created: bool = False) -> web.Response:
    """An interaction outcome: its fields with 200/201, or the typed error of a refusal code."""
    code = out.get("code", "")
    if code in _OK:
        return json(out, 201 if created else 200)
    if code == "ALREADY_VOTED":
        return json({"error": {"code": code, "message": "you voted in this poll already"}, **out}, 409)
    if code == "ALREADY_CLAIMED":
        return json({"error": {"code": code, "message": "you hold a coupon of this drop already"}, **out}, 409)
    raise Refused(ErrorCode(code), out.get("message") or code.replace("_", " ").lower())


async def get_teams(request: web.Request) -> web.Response:
    return json(await _commerce(request).teams.view(request.match_info["room"]))


async def join_team(request: web.Request) -> web.Response:
    out = await _commerce(request).teams.join(viewer_of(request), request.match_info["room"],
                                              _id(request, "team"))
    return json(out)


async def get_poll(request: web.Request) -> web.Response:
    """Anyone may read a poll; with a viewer token the answer says how that viewer voted (``you``)."""
    who = identity(request) if "Authorization" in request.headers else ANONYMOUS
    return json(await _commerce(request).polls.get(_id(request, "poll"), who))


async def vote(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    req = _parse(_VOTE, await body(request))
    return _answer(await _commerce(request).polls.vote(viewer, None, _id(request, "poll"), req.option))


async def get_drop(request: web.Request) -> web.Response:
    return json(await _commerce(request).coupons.get(_id(request, "drop")))


async def claim(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    req = _parse(_CLAIM, await body(request))
    return _answer(await _commerce(request).coupons.claim(viewer, None, _id(request, "drop"), req.request_id), True)


async def my_coupons(request: web.Request) -> web.Response:
    return json({"coupons": await _commerce(request).coupons.wallet(viewer_of(request))})


async def get_draw(request: web.Request) -> web.Response:
    return json(await _commerce(request).draws.get(_id(request, "draw")))


async def draw_entrants(request: web.Request) -> web.Response:
    return json(await _commerce(request).draws.entrants(_id(request, "draw")))


def _id(request: web.Request, name: str) -> str:
    """A team, poll, drop or draw id from the path: INVALID unless 1-40 characters of [A-Za-z0-9_-] (a drop:
    1-64, a draw's coupon prize being ``<draw>-prize``)."""
    value = request.match_info[name]
    rule = (CouponRef if name == "drop" else KeyId).__metadata__[0]  # type: ignore[attr-defined]
    if not rule.pattern.match(value):
        raise Refused(ErrorCode.INVALID, f"{name} must be {rule.expect}")
    return value


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/rooms/{room}/teams", get_teams)
    r.add_post("/api/rooms/{room}/teams/{team}/join", join_team)
    r.add_get("/api/polls/{poll}", get_poll)
    r.add_post("/api/polls/{poll}/vote", vote)
    r.add_get("/api/drops/{drop}", get_drop)
    r.add_post("/api/drops/{drop}/claim", claim)
    r.add_get("/api/me/coupons", my_coupons)
    r.add_get("/api/draws/{draw}", get_draw)
    r.add_get("/api/draws/{draw}/entrants", draw_entrants)


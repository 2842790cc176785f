"""The HTTP transport of interest audiences and online-to-offline offers (docs/PROTOCOL.md, Interest
audiences): parse, call ``commerce``, answer. An export is streamed a page at a time (CSV or JSON Lines),
so a big audience never sits in memory."""

from __future__ import annotations

import csv
import io

import orjson
from aiohttp import web

from commerce.audiences import AUDIENCE_ID_RULE, DefineAudience
from commerce.errors import InvalidInput
from commerce.offers import OFFER_ID_RULE, CreateOffer, RedeemOffer
from commerce.requests import CHANNEL_RULE
from commerce.validation import ID_RE, ID_RULE, Schema

from .api import _commerce, _parse, body, identity, json

__all__ = ["setup"]

_DEFINE, _OFFER, _REDEEM = Schema(DefineAudience), Schema(CreateOffer), Schema(RedeemOffer)
_FORMATS = {"csv": "text/csv", "jsonl": "application/x-ndjson"}
_COLUMNS = ("user_id", "signals", "last_at")


def _audience_id(request: web.Request) -> str:
    value = request.match_info["audience"]
    if not AUDIENCE_ID_RULE.pattern.match(value):
        raise InvalidInput(f"audience must be {AUDIENCE_ID_RULE.expect}")
    return value


async def define_audience(request: web.Request) -> web.Response:
    audiences = _commerce(request).audiences
    who = audiences.authorize(identity(request))  # 401 / 403 before the body is read
    fresh, audience = await audiences.define(who, _parse(_DEFINE, await body(request)))
    return json(audience, 201 if fresh else 200)


async def list_audiences(request: web.Request) -> web.Response:
    return json({"audiences": await _commerce(request).audiences.listing(identity(request))})


async def get_audience(request: web.Request) -> web.Response:
    return json(await _commerce(request).audiences.view(identity(request), _audience_id(request)))


async def delete_audience(request: web.Request) -> web.Response:
    return json({"removed": await _commerce(request).audiences.remove(identity(request), _audience_id(request))})


async def export_audience(request: web.Request) -> web.StreamResponse:
    """One row per member, ordered by user id; written as each page of members is read."""
    audiences = _commerce(request).audiences
    who = audiences.authorize(identity(request))
    fmt = request.query.get("format", "csv")
    if fmt not in _FORMATS:
        raise InvalidInput("format must be csv or jsonl")
    rec = await audiences.owned(who, _audience_id(request))
    resp = web.StreamResponse(headers={
        "Content-Type": f"{_FORMATS[fmt]}; charset=utf-8" if fmt == "csv" else _FORMATS[fmt],
        "Content-Disposition": f'attachment; filename="{rec.audience_id}.{fmt}"', "Cache-Control": "no-store"})
    await resp.prepare(request)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(_COLUMNS)
    pending = 0
    async for row in audiences.export_rows(rec.audience_id):
        if fmt == "csv":
            writer.writerow([row[c] for c in _COLUMNS])
        else:
            buf.write(orjson.dumps(row).decode())
            buf.write("\n")
        pending += 1
        if pending >= 500:
            await resp.write(buf.getvalue().encode())
            buf.seek(0)
            buf.truncate()
            pending = 0
    if buf.tell():
        await resp.write(buf.getvalue().encode())
    await resp.write_eof()
    return resp


# -- offers -----------------------------------------------------------------------------------------

def _offer_id(request: web.Request) -> str:
    value = request.match_info["offer"]
    if not OFFER_ID_RULE.pattern.match(value):
        raise InvalidInput(f"offer must be {OFFER_ID_RULE.expect}")
    return value


async def create_offer(request: web.Request) -> web.Response:
    offers = _commerce(request).offers
    who = offers.authorize(identity(request))
    fresh, offer = await offers.create(who, _parse(_OFFER, await body(request)))
    return json(offer, 201 if fresh else 200)


async def list_offers(request: web.Request) -> web.Response:
    return json({"offers": await _commerce(request).offers.listing(identity(request))})


async def store_offers(request: web.Request) -> web.Response:
    offers = _commerce(request).offers
    who = offers.authorize(identity(request))
    channel = request.match_info["channel"]
    if not CHANNEL_RULE.pattern.match(channel):
        raise InvalidInput(f"channel must be {CHANNEL_RULE.expect}")
    user = request.query.get("user", "")
    if not ID_RE.match(user):
        raise InvalidInput(f"user must be {ID_RULE}")
    return json({"offers": await offers.for_viewer(who, channel, user)})


async def redeem_offer(request: web.Request) -> web.Response:
    offers = _commerce(request).offers
    who = offers.authorize(identity(request))
    fresh, out = await offers.redeem(who, _offer_id(request), _parse(_REDEEM, await body(request)))
    return json(out, 201 if fresh else 200)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/audiences", define_audience)
    r.add_get("/api/audiences", list_audiences)
    r.add_get("/api/audiences/{audience}", get_audience)
    r.add_delete("/api/audiences/{audience}", delete_audience)
    r.add_get("/api/audiences/{audience}/export", export_audience)
    r.add_post("/api/offers", create_offer)
    r.add_get("/api/offers", list_offers)
    r.add_post("/api/offers/{offer}/redeem", redeem_offer)
    r.add_get("/api/stores/{channel}/offers", store_offers)

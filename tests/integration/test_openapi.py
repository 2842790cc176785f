"""The OpenAPI 3.1 contract (server/openapi.py) against the running app: the document validates, it names
exactly the app's routes, every documented route answers a body its schema for that status accepts (a
real app over a real socket on real engines, with real tokens), and ``/api/docs`` names every operation."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
import pytest
from openapi_spec_validator import validate

from commerce.identity import mint_merchant_token
from gateway_helpers import Api, host_token, viewer
from goods_helpers import until
from server import openapi
from server.app import create_app
from server.appkeys import SETTINGS
from server.config import Settings

pytestmark = pytest.mark.timeout(180, method="thread")

_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass
class Seen:
    """One answer: the route template it was for, and what came back."""
    method: str
    template: str
    status: int
    content_type: str
    body: Any


@dataclass
class Caller:
    """Calls a documented route by its template and records the answer."""
    api: Api
    client: Any
    seen: list[Seen] = field(default_factory=list)

    async def call(self, method: str, template: str, token: str | None = None, json: Any = None,
                   query: str = "", **params: str) -> tuple[int, Any]:
        path = template.format(**params) + (f"?{query}" if query else "")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kw: dict[str, Any] = {"headers": headers}
        if json is not None:
            kw["json"] = json
        async with self.client.request(method, path, **kw) as r:
            raw = await r.read()
            ctype = r.content_type
            if ctype == "application/json":
                body: Any = orjson.loads(raw) if raw else None
            else:
                body = raw.decode()
        self.seen.append(Seen(method.lower(), template, r.status, ctype, body))
        return r.status, body

    async def ok(self, method: str, template: str, token: str | None = None, json: Any = None, query: str = "",
                 status: int | tuple[int, ...] = (200, 201), **params: str) -> Any:
        st, body = await self.call(method, template, token, json, query, **params)
        allowed = (status,) if isinstance(status, int) else status
        assert st in allowed, f"{method} {template} {params} -> {st} {body!r}"
        return body


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Any:
    s = settings.replace(tick_ms=50, settle_block_ms=100, reap_interval_ms=50)
    return await aiohttp_client(create_app(s))


def _router_ops(app: Any) -> set[tuple[str, str]]:
    """Every (method, path template) of the app's router that the contract covers: not HEAD (implied by
    GET), not the WebSocket, not the static files nor the web pages (server/pages.py)."""
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if template is None or route.method == "HEAD" or not openapi.documented(template, route.handler):
            continue
        out.add((route.method.lower(), template))
    return out


def _doc_ops(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, p) for p, item in doc["paths"].items() for m in item if m in _METHODS}


async def test_the_document_validates_and_names_exactly_the_routes(client: Any) -> None:
    r = await client.get("/api/openapi.json")
    assert r.status == 200 and r.content_type == "application/json"
    doc = await r.json()
    validate(doc)  # OpenAPI 3.1 (openapi-spec-validator)
    assert doc["openapi"].startswith("3.1")
    assert _doc_ops(doc) == _router_ops(client.app)
    assert ("get", "/ws") not in _doc_ops(doc) and ("get", "/static/{filename}") not in _doc_ops(doc)
    assert ("post", "/api/rooms") in _doc_ops(doc) and ("get", "/api/openapi.json") in _doc_ops(doc)
    # every operation is described: a summary, its responses, and the error body for the codes it may give
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            assert op.get("summary") and op.get("operationId"), (method, path)
            assert not op.get("x-undescribed"), f"{method.upper()} {path} has no entry in server/openapi_routes.py"
            assert op["responses"], (method, path)
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["name"] == name and p["in"] == "path" for p in op.get("parameters", [])), (path, name)
    codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
    assert "SOLD_OUT" in codes and "HOLD_LOST" in codes
    # the request bodies come from the typed definitions: rules and defaults
    def body_of(method: str, path: str) -> dict[str, Any]:
        schema = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        return dict(doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]])
    create_sale = body_of("post", "/api/rooms/{room}/sales")
    assert create_sale["properties"]["units"] == {"type": "integer", "minimum": 1, "maximum": 1_000_000}
    assert create_sale["properties"]["per_user_limit"]["default"] == 1 and "product_id" in create_sale["required"]
    assert create_sale["properties"]["pool"]["pattern"] == "^(?!.*--)[A-Za-z0-9_-]{1,40}$"
    # every field of every request body has a schema, not only words (each Check rule is in CHECKS)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            refs = [content["schema"]] if "$ref" in content.get("schema", {}) else content.get("schema", {}).get(
                "anyOf", [])
            for r in refs:
                body = doc["components"]["schemas"][r["$ref"].rsplit("/", 1)[-1]]
                for name, prop in body.get("properties", {}).items():
                    assert set(prop) & {"type", "enum", "const", "oneOf", "anyOf", "$ref"}, (method, path, name)
    room = body_of("post", "/api/rooms")
    assert room["properties"]["title"]["maxLength"] == 200 and room["required"] == ["title"]
    assert room["properties"]["room_id"]["type"] == ["string", "null"]  # optional: null means absent
    # the same document object every time (built once at startup)
    again = await (await client.get("/api/openapi.json")).read()
    assert again == await (await client.get("/api/openapi.json")).read()


async def test_the_docs_page_names_every_operation(client: Any) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    r = await client.get("/api/docs")
    assert r.status == 200 and r.content_type == "text/html"
    page = await r.text()
    assert "<script" not in page.lower() and "http://" not in page.replace("http://127.0.0.1", "")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in _METHODS:
                assert f'id="{op["operationId"]}"' in page, op["operationId"]
                assert f"{method.upper()} {path}</h3>" in page, (method, path)
    # body fields with their rules in words, error codes by status
    assert "at most 200 characters" in page and "<code>SOLD_OUT</code>" in page and "from 1 to 1000000" in page


def _schema_for(doc: dict[str, Any], method: str, template: str, status: int, ctype: str) -> dict[str, Any]:
    resp = doc["paths"][template][method]["responses"].get(str(status))
    assert resp is not None, f"{method.upper()} {template}: status {status} is not documented"
    content = resp.get("content", {})
    assert ctype in content, f"{method.upper()} {template} {status}: {ctype} is not documented ({list(content)})"
    return dict(content[ctype].get("schema", {}))


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with ``#/components/schemas/X`` references pointing into the document."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "components": doc["components"]}


async def test_every_documented_route_answers_as_documented(client: Any, uid: str, settings: Settings) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    c = Caller(Api(client), client)
    await _exercise(c, uid, client.app)
    called = {(s.method, s.template) for s in c.seen}
    missing = sorted(_doc_ops(doc) - called)
    assert not missing, f"documented routes never called: {missing}"
    failures = []
    for s in c.seen:
        schema = _resolve(doc, _schema_for(doc, s.method, s.template, s.status, s.content_type))
        if s.content_type != "application/json":
            assert isinstance(s.body, str)
            continue
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(s.body))
        if errors:
            failures.append(f"{s.method.upper()} {s.template} {s.status}: {errors[0].message} at "
                            f"{list(errors[0].absolute_path)} in {str(s.body)[:300]}")
    assert not failures, "\n".join(failures)
    # the main routes answered with their success bodies, not just errors
    ok = {(s.method, s.template) for s in c.seen if 200 <= s.status < 300}
    for want in (("post", "/api/rooms"), ("get", "/api/rooms/{room}"), ("post", "/api/rooms/{room}/products"),
                 ("post", "/api/rooms/{room}/sales"), ("get", "/api/sales/{sale}"),
                 ("post", "/api/sales/{sale}/reserve"), ("get", "/api/holds/{hold}"),
                 ("post", "/api/holds/{hold}/pay"), ("delete", "/api/holds/{hold}"),
                 ("get", "/api/orders/{order}"), ("get", "/api/me/orders"), ("post", "/api/viewer-token"),
                 ("post", "/api/pools"), ("get", "/api/pools/{pool}"), ("post", "/api/channels/{channel}/holds"),
                 ("post", "/api/orders/{order}/refund"), ("get", "/api/polls/{poll}"),
                 ("post", "/api/drops/{drop}/claim"), ("post", "/api/audiences"), ("post", "/api/share-links")):
        assert want in ok, want


async def _exercise(c: Caller, uid: str, app: Any) -> None:
    """Calls every route of the app at least once, main routes with their success answers."""
    s: Settings = app[SETTINGS]
    host = host_token(s.secret)
    merchant = mint_merchant_token(s.secret, "m-" + secrets.token_hex(3))
    vtok, vuser = viewer(s.secret, "Ana")
    v2, _ = viewer(s.secret, "Bo")
    room, sku, pool = f"oa{uid[:12]}", f"SKU-{uid}", f"pl{uid[:10]}"

    await c.ok("GET", "/healthz")
    await c.ok("GET", "/api/time")
    await c.ok("GET", "/api/openapi.json")
    await c.ok("GET", "/api/docs")
    for extra in ("/metrics", "/readyz"):  # other parts of the app may add these
        if any(r.resource is not None and r.resource.canonical == extra for r in app.router.routes()):
            await c.call("GET", extra)
    guest = await c.ok("POST", "/api/viewer-token", json={"name": "Guest"}, status=201)
    await c.call("POST", "/api/viewer-token", json={"name": 42})
    await c.call("POST", "/api/rooms", None, {"title": "x"})
    await c.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Contract night"}, status=201)
    await c.ok("GET", "/api/rooms")
    await c.ok("POST", "/api/rooms/{room}/products", host, {"product_id": "p0", "sku": sku, "title": "Mug",
                                                            "unit_price": 1500, "currency": "EUR"}, room=room)
    await c.ok("POST", "/api/rooms/{room}/products", host, {"product_id": "p1", "sku": f"{sku}-1", "title": "Cup",
                                                            "unit_price": 900, "description": "blue"}, room=room)
    sale = await c.ok("POST", "/api/rooms/{room}/sales", host, {"product_id": "p0", "units": 5, "per_user_limit": 3},
                      room=room, status=201)
    sale_id = sale["sale_id"]
    await c.ok("GET", "/api/rooms/{room}", room=room)
    await c.call("GET", "/api/rooms/{room}", room="nope-" + uid[:8])
    await c.ok("GET", "/api/sales/{sale}", sale=sale_id)
    # buying: reserve, the hold, pay, the settled order, release
    hold = await c.ok("POST", "/api/sales/{sale}/reserve", vtok, {"request_id": "r1"}, sale=sale_id, status=201)
    await c.call("POST", "/api/sales/{sale}/reserve", None, {"request_id": "r1"}, sale=sale_id)
    await c.ok("GET", "/api/holds/{hold}", vtok, hold=hold["hold_id"])
    await c.call("POST", "/api/holds/{hold}/checkout", vtok, {}, hold=hold["hold_id"])  # instant mode: 409
    paid = await c.ok("POST", "/api/holds/{hold}/pay", vtok, {}, hold=hold["hold_id"], status=201)
    await c.ok("POST", "/api/holds/{hold}/pay", vtok, {}, hold=hold["hold_id"], status=200)
    order_id = paid["order_id"]

    async def settled() -> Any:
        st, body = await c.call("GET", "/api/orders/{order}", vtok, order=order_id)
        return body if st == 200 else None
    await until("the order settled", settled)
    await c.ok("GET", "/api/me/orders", vtok)
    await c.ok("GET", "/api/me/orders", vtok, query="limit=1")
    await c.call("GET", "/api/me/orders", vtok, query="limit=x")
    second = await c.ok("POST", "/api/sales/{sale}/reserve", v2, {"request_id": "r2", "qty": 2}, sale=sale_id)
    await c.ok("DELETE", "/api/holds/{hold}", v2, hold=second["hold_id"])
    await c.call("DELETE", "/api/holds/{hold}", v2, hold=second["hold_id"])
    await c.call("POST", "/api/payments/webhook/{provider}", None, {"type": "nothing"}, provider="sandbox")
    # host actions
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {}, room=room, action="go_live")
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {"product": "p0"}, room=room, action="pin")
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {}, room=room, action="unpin")
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {"text": "hello"}, room=room, action="announce")
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {"user": "someone"}, room=room, action="mute")
    await c.call("POST", "/api/rooms/{room}/actions/{action}", host, {"comment": "c1"}, room=room,
                 action="hide_comment")
    launched = await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {"product": "p1", "units": 3},
                          room=room, action="launch_sale")
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {"sale": launched["sale"]["sale_id"]}, room=room,
               action="end_sale")
    await c.call("POST", "/api/rooms/{room}/actions/{action}", host, {}, room=room, action="nope")
    await c.ok("GET", "/api/rooms/{room}/dashboard", host, room=room)
    await c.ok("GET", "/api/rooms/{room}/report", host, room=room)
    await c.ok("GET", "/api/rooms/{room}/report", host, query="format=csv", room=room)
    await c.ok("GET", "/api/rooms/{room}/shelf", vtok, room=room)
    # stock pools, channels, refunds
    await c.call("POST", "/api/pools", vtok, {"sku": "x", "title": "x", "unit_price": 1, "units": 1})
    await c.ok("POST", "/api/pools", merchant, {"pool_id": pool, "sku": f"{sku}-pool", "title": "Lamp",
                                                "unit_price": 2500, "units": 20}, status=201)
    await c.ok("GET", "/api/pools", merchant)
    await c.ok("GET", "/api/pools/{pool}", merchant, pool=pool)
    await c.ok("POST", "/api/pools/{pool}/stock", merchant, {"units": 5, "request_id": "st1"}, pool=pool)
    await c.ok("GET", "/api/pools/{pool}/ledger", merchant, pool=pool)
    await c.ok("GET", "/api/pools/{pool}/audit", merchant, pool=pool)
    await c.ok("POST", "/api/rooms/{room}/products", host, {"product_id": "p2", "sku": f"{sku}-pool", "title": "Lamp",
                                                            "unit_price": 2500}, room=room)
    psale = await c.ok("POST", "/api/rooms/{room}/sales", host, {"product_id": "p2", "units": 2, "pool": pool},
                       room=room, status=201)
    await c.ok("POST", "/api/rooms/{room}/sales/{sale}/topup", host, {"units": 1, "request_id": "t1"}, room=room,
               sale=psale["sale_id"])
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host,
               {"sale": psale["sale_id"], "units": 1, "request_id": "t2"}, room=room, action="topup_sale")
    chold = await c.ok("POST", "/api/channels/{channel}/holds", vtok, {"pool": pool, "request_id": "c1"},
                       channel="web-shop", status=201)
    cpaid = await c.ok("POST", "/api/holds/{hold}/pay", vtok, {}, hold=chold["hold_id"], status=201)

    async def channel_settled() -> Any:
        st, body = await c.call("GET", "/api/orders/{order}", vtok, order=cpaid["order_id"])
        return body if st == 200 else None
    await until("the channel order settled", channel_settled)
    await c.ok("POST", "/api/orders/{order}/refund", merchant, {"restock": True, "reason": "changed mind"},
               order=cpaid["order_id"], status=201)
    await c.ok("GET", "/api/skus/{sku}/history", merchant, sku=f"{sku}-pool")
    # saved for later
    await c.ok("PUT", "/api/me/saved/{room}/{product}", vtok, room=room, product="p1", status=201)
    await c.ok("GET", "/api/me/saved", vtok)
    await c.ok("DELETE", "/api/me/saved/{room}/{product}", vtok, room=room, product="p1")
    # interaction: teams, polls, drops, draws
    teams = [{"team_id": "red", "name": "Red", "colour": "#aa0000", "badge": "R"},
             {"team_id": "blue", "name": "Blue", "colour": "#0000aa", "badge": "B"}]
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {"teams": teams}, room=room, action="set_teams")
    await c.ok("GET", "/api/rooms/{room}/teams", room=room)
    await c.ok("POST", "/api/rooms/{room}/teams/{team}/join", vtok, room=room, team="red")
    poll = await c.ok("POST", "/api/rooms/{room}/actions/{action}", host,
                      {"question": "Which colour?", "options": ["red", "blue"], "poll_id": f"q{uid[:8]}"},
                      room=room, action="open_poll")
    poll_id = poll["poll"]["poll_id"]
    await c.ok("GET", "/api/polls/{poll}", poll=poll_id)
    await c.ok("POST", "/api/polls/{poll}/vote", vtok, {"option": 1}, poll=poll_id)
    await c.ok("GET", "/api/polls/{poll}", vtok, poll=poll_id)
    await c.call("POST", "/api/polls/{poll}/vote", vtok, {"option": 0}, poll=poll_id)  # 409 ALREADY_VOTED
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {"poll": poll_id}, room=room, action="close_poll")
    drop = await c.ok("POST", "/api/rooms/{room}/actions/{action}", host,
                      {"count": 5, "kind": "amount", "value": 100, "drop_id": f"d{uid[:8]}"}, room=room,
                      action="drop_coupons")
    drop_id = drop["drop"]["drop_id"]
    await c.ok("GET", "/api/drops/{drop}", drop=drop_id)
    await c.ok("POST", "/api/drops/{drop}/claim", vtok, {"request_id": "k1"}, drop=drop_id, status=201)
    await c.call("POST", "/api/drops/{drop}/claim", vtok, {"request_id": "k2"}, drop=drop_id)  # 409 ALREADY_CLAIMED
    await c.ok("GET", "/api/me/coupons", vtok)
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {"drop": drop_id}, room=room, action="end_drop")
    draw = await c.ok("POST", "/api/rooms/{room}/actions/{action}", host,
                      {"title": "Lamp draw", "winners": 1, "entry_s": 60, "prize": {"pool": pool},
                       "draw_id": f"w{uid[:8]}"}, room=room, action="create_draw")
    draw_id = draw["draw"]["draw_id"]
    await c.ok("GET", "/api/draws/{draw}", draw=draw_id)
    await c.call("GET", "/api/draws/{draw}/entrants", draw=draw_id)  # 409 NOT_STARTED before the draw
    await c.call("GET", "/api/draws/{draw}", draw="bad--id")
    # re-engagement
    await c.ok("PUT", "/api/me/reminders/{room}", vtok, room=room)
    later = await c.ok("POST", "/api/rooms/{room}/sales", host, {"product_id": "p1", "units": 2, "starts_in_s": 3600},
                       room=room, status=201)
    await c.ok("PUT", "/api/me/reminders/{room}/{sale}", vtok, room=room, sale=later["sale_id"], status=201)
    await c.call("PUT", "/api/me/reminders/{room}/{sale}", vtok, room=room, sale=sale_id)  # started: 409
    await c.ok("GET", "/api/me/reminders", vtok)
    await c.ok("DELETE", "/api/me/reminders/{room}/{sale}", vtok, room=room, sale=later["sale_id"])
    await c.ok("DELETE", "/api/me/reminders/{room}", vtok, room=room)
    # audiences and offers
    audience = await c.ok("POST", "/api/audiences", merchant,
                          {"name": "Paid", "rules": [{"signal": "paid"}], "audience_id": f"a{uid[:8]}"})
    aid = audience["audience_id"]
    await c.ok("GET", "/api/audiences", merchant)
    await c.ok("GET", "/api/audiences/{audience}", merchant, audience=aid)
    await c.ok("GET", "/api/audiences/{audience}/export", merchant, audience=aid)
    await c.ok("GET", "/api/audiences/{audience}/export", merchant, query="format=jsonl", audience=aid)
    await c.ok("POST", "/api/rooms/{room}/sales/{sale}/notify", host, {"audience_id": aid, "request_id": "n1"},
               room=room, sale=sale_id, status=(202, 200, 201))
    offer = await c.ok("POST", "/api/offers", merchant, {"audience_id": aid, "sku": f"{sku}-pool", "price": 1000,
                                                         "valid_s": 3600, "offer_id": f"f{uid[:8]}"})
    await c.ok("GET", "/api/offers", merchant)
    await c.ok("GET", "/api/stores/{channel}/offers", merchant, query=f"user={vuser}", channel="store-1")
    await c.call("POST", "/api/offers/{offer}/redeem", merchant,
                 {"user": vuser, "channel": "store-1", "request_id": "x1"}, offer=offer["offer_id"])
    await c.ok("DELETE", "/api/audiences/{audience}", merchant, audience=aid)
    # share-to-earn
    link = await c.ok("POST", "/api/share-links", v2, {"room_id": room, "product_id": "p0"}, status=201)
    await c.ok("GET", "/api/share-links/{code}", code=link["code"])
    await c.ok("GET", "/api/me/share-links", v2)
    await c.ok("GET", "/api/me/earnings", v2)
    await c.ok("GET", "/api/payouts.csv", host, query=f"room={room}")
    await c.ok("PUT", "/api/rooms/{room}/products/{product}/commission", host, {"commission_bps": 1250}, room=room,
               product="p0")
    await c.ok("GET", "/api/rooms/{room}/sharing", host, room=room)
    await c.ok("PUT", "/api/pools/{pool}/shopkeepers", merchant, {"open": True, "commission_bps": 800}, pool=pool)
    await c.ok("GET", "/api/shop-pools")
    shop = await c.ok("POST", "/api/shops", v2, {"shop_id": f"s{uid[:10]}", "title": "Bo's picks", "pools": [pool]},
                      status=201)
    await c.ok("GET", "/api/shops/{shop}", shop=shop["shop_id"])
    await c.ok("PUT", "/api/shops/{shop}/items", v2, {"pools": [pool]}, shop=shop["shop_id"])
    await c.ok("GET", "/api/me/shops", v2)
    await c.ok("POST", "/api/rooms/{room}/actions/{action}", host, {}, room=room, action="end_live")
    assert guest["guest"] is True

"""The machine-readable contract of the HTTP API: an OpenAPI 3.1 document built from the app's router and
the same typed definitions the handlers use, served at ``GET /api/openapi.json``, and the same document as
a page at ``GET /api/docs`` (server-rendered HTML, no scripts, nothing fetched: works offline).

What comes from where: paths, methods and path parameters from ``app.router`` (every route except the
WebSocket ``/ws``, the static files and the web pages of server/pages.py; HEAD is implied by GET); request
bodies from the request dataclasses (server/openapi_schema.py); the host actions' bodies from
``HOST_ACTIONS``; error bodies ``{"error": {code, message}}`` with ``code`` from ``ErrorCode`` and each
status from ``status_of``; summaries, roles, query parameters and success shapes from
server/openapi_routes.py and server/openapi_shapes.py. Built once per app at startup (the router is
frozen by then), then answered from memory.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from commerce.audiences import AUDIENCE_ID_RULE
from commerce.errors import ErrorCode, status_of
from commerce.host_actions import HOST_ACTIONS
from commerce.interaction_requests import KeyId
from commerce.requests import CHANNEL_RULE, CouponRef, PoolId

from .openapi_html import render
from .openapi_routes import ACTION_BODY, ROUTES, Op
from .openapi_schema import body_schema, js_pattern
from .openapi_shapes import SHAPES, ref

__all__ = ["setup", "build", "documented", "CONTRACT", "Contract", "VERSION"]

VERSION = "1"
Json = dict[str, Any]
_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")
_SLUG = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_ID = {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,128}$"}


def _match(rule: Any) -> Json:
    return {"type": "string", "pattern": js_pattern(rule.pattern), "description": rule.expect}


_PATH_PARAMS: dict[str, Json] = {
    "room": _SLUG, "product": _SLUG, "sale": _SLUG, "code": _SLUG, "sku": _ID, "hold": _ID, "order": _ID,
    "pool": _match(PoolId.__metadata__[0]), "channel": _match(CHANNEL_RULE),  # type: ignore[attr-defined]
    "team": _match(KeyId.__metadata__[0]), "poll": _match(KeyId.__metadata__[0]),  # type: ignore[attr-defined]
    "draw": _match(KeyId.__metadata__[0]), "drop": _match(CouponRef.__metadata__[0]),  # type: ignore[attr-defined]
    "audience": _match(AUDIENCE_ID_RULE), "offer": _match(AUDIENCE_ID_RULE),
    "shop": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,48}$"},
    "provider": {"type": "string", "description": "the payment provider's name, e.g. sandbox"},
    "action": {"type": "string", "enum": list(HOST_ACTIONS)},
}

_ROLES = {
    "viewer": "A viewer's token (role `viewer`): signed by the platform, or a guest token from "
              "`POST /api/viewer-token` (claim `guest: true`). Hosts' tokens also act as viewers where noted.",
    "host": "A host's token (role `host`, claim `rooms`: the rooms it hosts, `*` for all).",
    "merchant": "A merchant's token (role `merchant`): it owns the stock pools, audiences and offers it creates.",
}


@dataclass(frozen=True, slots=True)
class Contract:
    """The document, its JSON bytes and its page, built once."""
    doc: Json
    body: bytes
    html: str


CONTRACT = web.AppKey("openapi_contract", Contract)


def documented(template: str, handler: Any) -> bool:
    """Whether a route belongs in the contract: not the WebSocket, not a web page (server/pages.py)."""
    return template != "/ws" and getattr(handler, "__module__", "") != "server.pages"


def _routes(router: web.UrlDispatcher) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for route in router.routes():
        resource = route.resource
        if resource is None or isinstance(resource, web.StaticResource) or route.method == "HEAD":
            continue
        if documented(resource.canonical, route.handler):
            out.append((route.method.lower(), resource.canonical))
    return list(dict.fromkeys(out))


def _operation_id(method: str, template: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", _PARAM.sub(lambda m: f"by_{m.group(1)}", template)).strip("_")
    return f"{method}_{words}"


def _error_codes(op: Op, template: str) -> list[ErrorCode]:
    """The codes an operation may answer: its own, plus those of its token check, its body and its path."""
    codes: list[ErrorCode] = [*op.errors]
    roles = [r for r in op.auth if r != "optional"]
    if op.auth:
        codes.append(ErrorCode.UNAUTHORIZED)
    if roles and set(roles) & {"host", "merchant"}:
        codes.append(ErrorCode.FORBIDDEN)
    if op.body is not None:
        codes += [ErrorCode.BAD_JSON, ErrorCode.INVALID, ErrorCode.TOO_LARGE]
    if _PARAM.search(template) or op.query:
        codes.append(ErrorCode.INVALID)
    codes += [ErrorCode.URI_TOO_LONG, ErrorCode.INTERNAL, ErrorCode.UNAVAILABLE]
    return list(dict.fromkeys(codes))


def _responses(op: Op, template: str) -> Json:
    out: Json = {}
    for status, schema in sorted((op.replies or {200: {}}).items()):
        content: Json = {op.content: {"schema": schema}}
        for media, alt in (op.alt_content or {}).items():
            content[media] = {"schema": alt}
        out[str(status)] = {"description": "success" if status < 300 else "answered", "content": content}
    by_status: dict[int, list[str]] = {}
    for code in _error_codes(op, template):
        by_status.setdefault(status_of(code), []).append(code.value)
    for status, codes in sorted(by_status.items()):
        if str(status) in out:  # the operation's own answer for that status (GET /readyz's 503)
            continue
        schema = {"allOf": [ref("Error"), {"properties": {"error": {"properties": {"code": {"enum": codes}}}}}]}
        out[str(status)] = {"description": ", ".join(codes), "content": {"application/json": {"schema": schema}}}
    return out


def _security(op: Op) -> list[Json]:
    roles = [r for r in op.auth if r != "optional"] or (["viewer", "host", "merchant"] if op.auth else [])
    alternatives: list[Json] = [{r: []} for r in roles]
    if "optional" in op.auth:
        alternatives.insert(0, {})
    return alternatives


def _body(op: Op, schemas: Json) -> Json | None:
    if op.body is None:
        return None
    if op.body == ACTION_BODY:
        names = []
        for name, action in HOST_ACTIONS.items():
            cls = action.schema.cls
            schemas.setdefault(cls.__name__, body_schema(cls))
            names.append(name)
        variants = [{**ref(HOST_ACTIONS[n].schema.cls.__name__), "title": n} for n in names]
        return {"required": False, "description": "the fields of the action named in the path",
                "content": {"application/json": {"schema": {"anyOf": variants}}},
                "x-actions": {n: HOST_ACTIONS[n].schema.cls.__name__ for n in names}}
    assert isinstance(op.body, type)
    name = op.body.__name__
    schema = body_schema(op.body)
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two schemas named {name}")
    schemas[name] = schema
    required = any(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in dataclasses.fields(op.body))
    return {"required": required, "content": {"application/json": {"schema": ref(name)}}}


def _parameters(op: Op, template: str) -> list[Json]:
    params = [{"name": name, "in": "path", "required": True,
               "schema": _PATH_PARAMS.get(name, {"type": "string"})} for name in _PARAM.findall(template)]
    for q in op.query:
        params.append({"name": q.name, "in": "query", "required": False, "schema": q.schema,
                       "description": q.description})
    return params


def build(routes: Iterable[tuple[str, str]], base_url: str = "/") -> Json:
    """The OpenAPI 3.1 document of these (method, path template) routes."""
    schemas: Json = dict(SHAPES)
    paths: Json = {}
    tags: dict[str, None] = {}
    for method, template in routes:
        op = ROUTES.get((method, template))
        undescribed = op is None
        if op is None:
            op = Op("other", f"{method.upper()} {template}")
        tags.setdefault(op.tag)
        operation: Json = {"tags": [op.tag], "summary": op.summary, "operationId": _operation_id(method, template),
                           "security": _security(op), "responses": _responses(op, template)}
        if op.description:
            operation["description"] = op.description
        params = _parameters(op, template)
        if params:
            operation["parameters"] = params
        body = _body(op, schemas)
        if body is not None:
            operation["requestBody"] = body
        if undescribed:
            operation["x-undescribed"] = True
        paths.setdefault(template, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {"title": "livesale HTTP API", "version": VERSION,
                 "description": "Live-stream shopping: rooms, flash sales, holds, orders, stock pools, interaction "
                                "and growth. Errors are `{\"error\": {\"code\", \"message\"}}` with the status of "
                                "their code. The WebSocket protocol (`/ws`) is in docs/PROTOCOL.md."},
        "servers": [{"url": base_url}],
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {role: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": text}
                                for role, text in _ROLES.items()},
        },
    }


async def _startup(app: web.Application) -> None:
    doc = build(_routes(app.router))
    app[CONTRACT] = Contract(doc, orjson.dumps(doc), render(doc))


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[CONTRACT].body, content_type="application/json",
                        headers={"Cache-Control": "no-cache"})


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=request.app[CONTRACT].html, content_type="text/html",
                        headers={"Cache-Control": "no-cache"})


def setup(app: web.Application) -> None:
    """After every other ``setup``: the contract is built from the router once the app starts."""
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/api/docs", docs_page)
    app.on_startup.append(_startup)

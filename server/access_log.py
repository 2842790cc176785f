"""HTTP request ids and the access log.

- ``request_id_middleware`` (outermost): the request's id is its ``X-Request-Id`` header when that is a
  sane id (1-128 of ``A-Za-z0-9._:-``), else a new random one; kept in ``request[REQUEST_ID]``, bound
  to the log context (``server/logs.py``) with the route's room / sale / hold / order ids while the
  handler runs (a WebSocket's whole session), and echoed in the response's ``X-Request-Id``
  (``on_response_prepare``: every response, errors and the WebSocket handshake included).
- ``AccessLogger``: one line per request on the ``livesale.access`` logger (INFO): method, path without
  the query string (it may carry ``?token=``), status, bytes, duration, request id and the peer's
  address; in the JSON format each is a field. ``livesale serve`` uses it unless ``LIVESALE_ACCESS_LOG``
  is off.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from . import logs

__all__ = ["request_id_middleware", "AccessLogger", "ACCESS_LOGGER", "HEADER", "request_id_of", "setup",
           "runner_options", "REQUEST_ID"]

HEADER = "X-Request-Id"
ACCESS_LOGGER = "livesale.access"
REQUEST_ID = web.RequestKey("request_id", str)  # the request's id, on the request (the access log reads it)
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# route parameters that name the money path's objects -> the log context's field names
_IDS = (("room", "room_id"), ("sale", "sale_id"), ("hold", "hold_id"), ("order", "order_id"))


def request_id_of(request: BaseRequest) -> str:
    """The request's id: its sane ``X-Request-Id``, else a new one (16 hex digits)."""
    given = request.headers.get(HEADER, "")
    return given if _SANE.fullmatch(given) else secrets.token_hex(8)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id_of(request)
    request[REQUEST_ID] = rid
    info = request.match_info
    token = logs.bind(request_id=rid, **{field: info.get(name) for name, field in _IDS})
    try:
        return await handler(request)
    finally:
        logs.unbind(token)


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[HEADER] = rid


def setup(app: web.Application) -> None:
    """Echo the request id on every response (the middleware is in ``create_app``'s list, first)."""
    app.on_response_prepare.append(_echo_request_id)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log, as one line in the process's log format (``server/logs.py``)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        rid = request.get(REQUEST_ID) or "-"
        ms = round(time * 1000, 1)
        size = response.body_length
        remote = request.remote or "-"
        self.logger.info('%s "%s %s" %d %dB %.1fms', remote, request.method, request.path, response.status,
                         size, ms,
                         extra={"method": request.method, "path": request.path, "status": response.status,
                                "bytes": size, "duration_ms": ms, "request_id": rid, "remote": remote})

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def runner_options(enabled: bool) -> dict[str, Any]:
    """``web.AppRunner`` keyword arguments: our access log, or none."""
    if not enabled:
        return {"access_log": None}
    return {"access_log": logging.getLogger(ACCESS_LOGGER), "access_log_class": AccessLogger}

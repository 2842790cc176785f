"""Liveness and readiness over HTTP (docs/OPERATIONS.md, Health and readiness).

- ``GET /healthz``: liveness only. The process's event loop answered: 200 with local facts (pid, uptime,
  gateway id, connections, loaded rooms, counters); it asks nothing of Redis or SQL, so a dependency's
  outage never gets a live gateway restarted.
- ``GET /readyz``: whether this process can serve now. Redis answers ``PING``, the database ``SELECT 1``
  (through the Store) and the room subscription is reading (``RoomReader.reading``), each bounded by
  ``CHECK_TIMEOUT_S`` and run at once: 200 ``{"status": "ready", "checks": {...}}``, else 503
  ``{"status": "unready", "checks": {...}, "error": {"code": "UNAVAILABLE", ...}}``. Each check:
  ``{"ok": bool, "ms": float}`` plus ``"error"`` (the failure, redacted) when it failed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from .appkeys import CORE, GATEWAY, HUB
from .logs import redact

__all__ = ["setup", "run_checks", "CHECK_TIMEOUT_S"]

CHECK_TIMEOUT_S = 2.0
_STARTED = time.monotonic()

Probe = Callable[[], Awaitable[Any]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _check(probe: Probe, timeout_s: float) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), timeout_s)
        failed = None
    except TimeoutError:
        failed = f"no answer within {timeout_s:g} s"
    except Exception as exc:
        failed = redact(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}".rstrip(": "))
    out: dict[str, Any] = {"ok": failed is None, "ms": round((time.perf_counter() - start) * 1000, 1)}
    if failed is not None:
        out["error"] = failed
    return out


async def run_checks(probes: Mapping[str, Probe], timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Every probe at once, each bounded by ``timeout_s``: name -> ``{"ok", "ms", "error"?}``."""
    names = list(probes)
    results = await asyncio.gather(*(_check(probes[n], timeout_s) for n in names))
    return dict(zip(names, results, strict=True))


async def liveness(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return _json({"status": "ok", "ok": True, "pid": os.getpid(), "uptime_s": round(time.monotonic() - _STARTED, 1),
                  "gateway": hub.gateway_id, "connections": len(request.app[GATEWAY].connections),
                  "rooms": len(hub.rooms), "stats": hub.stats})


async def readiness(request: web.Request) -> web.Response:
    core, reader = request.app[CORE], request.app[HUB].reader

    async def room_bus() -> None:
        if not reader.reading:
            raise ConnectionError("the room subscription is not reading (reconnecting)")

    checks = await run_checks({"redis": core.redis.ping, "database": core.store.ping, "room_bus": room_bus})
    if all(c["ok"] for c in checks.values()):
        return _json({"status": "ready", "checks": checks})
    failing = ", ".join(name for name, c in checks.items() if not c["ok"])
    return _json({"status": "unready", "checks": checks,
                  "error": {"code": "UNAVAILABLE", "message": f"not ready: {failing} failing"}}, 503)


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", liveness)
    app.router.add_get("/readyz", readiness)

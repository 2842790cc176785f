"""The platform's public key set (JWKS), from a file or an http(s) URL, kept in memory.

Verification never does I/O: it looks a token's ``kid`` up in the snapshot held here. The snapshot is
loaded at start, reloaded every ``refresh_s`` seconds in the background (so a key the platform
removed stops being accepted), and reloaded at once when a token names a ``kid`` it does not hold
(at most once per ``min_refetch_s``, so random kids cannot flood the platform's endpoint). Every
load runs in a worker thread (``asyncio.to_thread``): a URL is fetched with PyJWT's ``PyJWKClient``
(its own cache off: this class is the cache), a file is read and parsed. A failed reload keeps the
keys already held.

Only public signing keys are kept: ``kty`` RSA (RS256) or OKP (EdDSA), with a ``kid``, ``use``
absent or ``sig``, ``alg`` absent or RS256/EdDSA. A key carrying private parts (``d``) is refused:
gateways must never hold the platform's signing key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from .tasks import OwnedTasks

__all__ = ["KeySet", "KeySetError", "PLATFORM_ALGS", "parse_jwks"]

log = logging.getLogger(__name__)

PLATFORM_ALGS = ("RS256", "EdDSA")
_KTY_ALG = {"RSA": "RS256", "OKP": "EdDSA"}


class KeySetError(ValueError):
    """The key set could not be read, fetched or parsed."""


def parse_jwks(data: object, source: str = "JWKS") -> dict[str, jwt.PyJWK]:
    """``{"keys": [...]}`` -> kid -> key, keeping only usable public signing keys (see the module doc)."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeySetError(f"{source}: expected a JSON object with a \"keys\" list")
    keys: dict[str, jwt.PyJWK] = {}
    for raw in data["keys"]:
        if not isinstance(raw, dict):
            continue
        kid, kty, alg = raw.get("kid"), raw.get("kty"), raw.get("alg")
        why = ""
        if not isinstance(kid, str) or not kid:
            why = "no kid"
        elif raw.get("use") not in (None, "sig"):
            why = f"use {raw.get('use')!r} is not sig"
        elif kty not in _KTY_ALG:
            why = f"kty {kty!r} is not RSA or OKP"
        elif alg is not None and alg != _KTY_ALG[kty]:
            why = f"alg {alg!r} does not fit kty {kty} (expected {_KTY_ALG[kty]})"
        elif "d" in raw:
            why = "it holds a private key (publish only the public part)"
        elif kid in keys:
            why = "duplicate kid"
        if why:
            log.warning("%s: key %r ignored: %s", source, kid, why)
            continue
        try:
            keys[str(kid)] = jwt.PyJWK(raw, _KTY_ALG[str(kty)])
        except jwt.PyJWTError as e:
            log.warning("%s: key %r ignored: %s", source, kid, e)
    return keys


class KeySet:
    """kid -> public key of the platform, from ``source`` (a file path or an http(s):// URL)."""

    def __init__(self, source: str, refresh_s: float = 300.0, min_refetch_s: float = 5.0,
                 timeout_s: float = 5.0) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.min_refetch_s = min_refetch_s
        self.is_url = source.startswith(("http://", "https://"))
        self._client = (jwt.PyJWKClient(source, cache_keys=False, cache_jwk_set=False, timeout=timeout_s)
                        if self.is_url else None)
        self._keys: Mapping[str, jwt.PyJWK] = {}
        self._last_load = -math.inf  # monotonic time of the last load attempt
        self._inflight: asyncio.Task[None] | None = None
        self._tasks = OwnedTasks(log, "jwks refresh")

    # -- lookups (no I/O) -----------------------------------------------------------------------

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def should_refetch(self, kid: str) -> bool:
        """``kid`` is unknown and a reload may run now (or one is already running)."""
        if kid in self._keys:
            return False
        return self._inflight is not None or time.monotonic() - self._last_load >= self.min_refetch_s

    # -- loading ----------------------------------------------------------------------------------

    def load_now(self) -> dict[str, jwt.PyJWK]:
        """Read or fetch and parse the set (blocking: call it in a thread). Raises KeySetError."""
        data: Any
        try:
            if self._client is not None:
                data = self._client.fetch_data()
            else:
                data = json.loads(Path(self.source).expanduser().read_bytes())
        except (OSError, ValueError, jwt.PyJWTError) as e:
            raise KeySetError(f"{self.source}: cannot load the key set: {e}") from None
        return parse_jwks(data, self.source)

    async def refresh(self) -> None:
        """Reload once (joining a reload already running); on failure keep the keys held."""
        if self._inflight is None:
            self._last_load = time.monotonic()
            self._inflight = asyncio.ensure_future(self._load())
            self._inflight.add_done_callback(self._loaded)
        await asyncio.shield(self._inflight)

    def _loaded(self, task: asyncio.Task[None]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: _load logs its own failures

    async def _load(self) -> None:
        try:
            keys = await asyncio.to_thread(self.load_now)
        except KeySetError as e:
            log.warning("%s (keeping the %d keys held)", e, len(self._keys))
            return
        except Exception:  # a reload must never fail a join or a request
            log.exception("platform key set %s: reload failed (keeping the %d keys held)", self.source,
                          len(self._keys))
            return
        added, removed = set(keys) - set(self._keys), set(self._keys) - set(keys)
        if added or removed:
            log.info("platform key set %s: kids %s (added %s, removed %s)", self.source, sorted(keys),
                     sorted(added), sorted(removed))
        self._keys = keys

    async def ensure(self, kid: str) -> None:
        """Reload if ``kid`` is unknown and the rate limit allows; never raises."""
        if self.should_refetch(kid):
            await self.refresh()

    async def start(self) -> None:
        """The first load. A file that cannot be read stops the start (KeySetError); an unreachable URL
        is logged and retried (on the next unknown kid and every ``refresh_s``)."""
        if self.is_url:
            await self.refresh()
            if not self._keys:
                log.error("platform key set %s: no usable key yet; platform-signed tokens are refused "
                          "until it loads", self.source)
        else:
            self._last_load = time.monotonic()
            self._keys = await asyncio.to_thread(self.load_now)
            if not self._keys:
                log.warning("platform key set %s holds no usable key", self.source)
        self._tasks.spawn(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def aclose(self) -> None:
        await self._tasks.cancel(5.0)
        if self._inflight is not None:
            self._inflight.cancel()

"""Signed host and viewer tokens: HS256 JWTs (our secret, and earlier secrets during a rotation) and
JWTs the platform signs with its own key (RS256 or EdDSA, public keys from a JWKS: ``jwks.KeySet``).

Verification is pure (no I/O): ``TokenVerifier.verify`` reads the key set held in memory;
``TokenVerifier.verify_async`` / ``prepare`` first reload the set when a token names an unknown ``kid``.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from .jwks import PLATFORM_ALGS, KeySet

__all__ = ["Identity", "TokenError", "TokenVerifier", "mint_host_token", "mint_viewer_token", "verify_token",
           "ANONYMOUS", "SUB_RULE", "PLATFORM_ALGS", "PLATFORM_LEEWAY_S"]

_ALG = "HS256"
_MAX_TOKEN = 4096
_REQUIRED = {"require": ["sub", "exp"]}
# platform-signed tokens come from other machines: this much clock skew is allowed on exp, nbf and iat
PLATFORM_LEEWAY_S = 10
# A subject is the user id everywhere else (holds, orders, rate limits, `mute`): the same alphabet as
# the protocol's ids, so a token the server accepts at join can also buy, pay and be muted.
_SUB = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}\Z")
SUB_RULE = "1-128 characters of [A-Za-z0-9_.:@-]"


class TokenError(ValueError):
    """The token is missing, malformed, expired or not signed with our secret."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str            # "" for anonymous watchers
    name: str
    role: str            # "anonymous" | "viewer" | "host" | "merchant"
    rooms: tuple[str, ...] = ()
    guest: bool = False  # a guest viewer token (``POST /api/viewer-token``), not the platform's sign-in

    @property
    def is_viewer(self) -> bool:
        return self.role in ("viewer", "host") and bool(self.user)

    def hosts(self, room_id: str) -> bool:
        return self.role == "host" and ("*" in self.rooms or room_id in self.rooms)

    @property
    def is_merchant(self) -> bool:
        """A merchant (brand or supplier) owns stock pools; its pools are those it created."""
        return self.role == "merchant" and bool(self.user)


ANONYMOUS = Identity(user="", name="", role="anonymous")


def _check_sub(sub: object, what: str) -> str:
    if not isinstance(sub, str) or not _SUB.match(sub):
        raise TokenError(f"{what} must be {SUB_RULE}, got {str(sub)[:40]!r}")
    return sub


def mint_host_token(secret: str, host_id: str, rooms: tuple[str, ...] = ("*",), ttl_s: int = 7 * 86400) -> str:
    """Raises TokenError when ``host_id`` is not a valid subject (see ``SUB_RULE``)."""
    _check_sub(host_id, "host id")
    now = int(time.time())
    return jwt.encode({"sub": host_id, "role": "host", "name": host_id, "rooms": list(rooms),
                       "iat": now, "exp": now + ttl_s}, secret, algorithm=_ALG)


def mint_merchant_token(secret: str, merchant_id: str, ttl_s: int = 7 * 86400) -> str:
    """A merchant's token (role ``merchant``): it owns the stock pools it creates."""
    _check_sub(merchant_id, "merchant id")
    now = int(time.time())
    return jwt.encode({"sub": merchant_id, "role": "merchant", "name": merchant_id, "iat": now, "exp": now + ttl_s},
                      secret, algorithm=_ALG)


def mint_viewer_token(secret: str, name: str, user: str | None = None, ttl_s: int = 30 * 86400,
                      guest: bool = False) -> tuple[str, str]:
    """Returns (token, user id). ``name`` is free-form display text; ``user`` (default: a random
    ``v-<hex>``) must be a valid subject, else TokenError. ``guest`` marks a guest token (claim
    ``"guest": true``), as ``POST /api/viewer-token`` issues them."""
    user = _check_sub(user, "viewer id") if user else "v-" + secrets.token_hex(6)
    now = int(time.time())
    claims: dict[str, object] = {"sub": user, "role": "viewer", "name": name, "iat": now, "exp": now + ttl_s}
    if guest:
        claims["guest"] = True
    return jwt.encode(claims, secret, algorithm=_ALG), user


def _claims_identity(claims: dict[str, Any]) -> Identity:
    role = claims.get("role")
    sub = claims.get("sub")
    if role not in ("viewer", "host", "merchant"):
        raise TokenError("token has no valid role (viewer, host or merchant)")
    if not isinstance(sub, str) or not _SUB.match(sub):
        raise TokenError(f"token subject (sub) must be {SUB_RULE}")
    rooms = claims.get("rooms") or []
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise TokenError("token has malformed rooms")
    raw_name = claims.get("name")
    name = raw_name if isinstance(raw_name, str) else sub
    return Identity(user=sub, name=name[:40], role=role, rooms=tuple(rooms), guest=claims.get("guest") is True)


def _header(token: object) -> dict[str, Any]:
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
        raise TokenError("token must be a non-empty string")
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("token is not valid") from None


class TokenVerifier:
    """Built once at start. Accepts:

    - HS256 tokens signed with any of ``secrets`` (the first one is the one livesale mints with; the
      others are earlier secrets kept during a rotation);
    - RS256 / EdDSA tokens whose header ``kid`` names a key of the platform's ``keys`` (JWKS) of that
      algorithm, and, when set, whose ``iss`` is ``issuer`` and whose ``aud`` holds ``audience``.

    The algorithm decides the key kind, never the other way round: an HS256 token is only checked
    against the secrets (never against a public key), an RS256/EdDSA one only against the key its
    ``kid`` names; ``none`` and every other algorithm are refused. Every token needs ``sub`` and
    ``exp`` and the role / rooms rules of ``Identity``."""

    def __init__(self, secrets: Sequence[str], keys: KeySet | None = None, issuer: str = "",
                 audience: str = "") -> None:
        self.secrets = tuple(s for s in secrets if s)
        if not self.secrets:
            raise ValueError("TokenVerifier needs at least one HS256 secret")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience

    async def start(self) -> None:
        if self.keys is not None:
            await self.keys.start()

    async def aclose(self) -> None:
        if self.keys is not None:
            await self.keys.aclose()

    def _unknown_kid(self, token: object) -> str | None:
        """The kid of a platform-signed token that the key set does not hold (None otherwise)."""
        if self.keys is None:
            return None
        try:
            header = _header(token)
        except TokenError:
            return None
        kid = header.get("kid")
        if header.get("alg") in PLATFORM_ALGS and isinstance(kid, str) and kid and self.keys.get(kid) is None:
            return kid
        return None

    async def prepare(self, token: object) -> None:
        """Reload the key set if ``token`` names an unknown kid (rate-limited; never raises)."""
        kid = self._unknown_kid(token)
        if kid is not None and self.keys is not None:
            await self.keys.ensure(kid)

    async def verify_async(self, token: object) -> Identity:
        if self.keys is not None:
            await self.prepare(token)
        return self.verify(token)

    def verify(self, token: object) -> Identity:
        """The token's identity, from the keys held now; raises TokenError."""
        if self.keys is None:  # HS256 only: PyJWT checks the algorithm (a join's one parse of the token)
            if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
                raise TokenError("token must be a non-empty string")
            return _claims_identity(self._decode_hs(token))
        header = _header(token)
        assert isinstance(token, str)
        alg = header.get("alg")
        if alg == _ALG:
            return _claims_identity(self._decode_hs(token))
        if alg in PLATFORM_ALGS and self.keys is not None:
            return _claims_identity(self._decode_platform(token, str(alg), header.get("kid")))
        raise TokenError("token is not valid")

    def _decode_hs(self, token: str) -> dict[str, Any]:
        for secret in self.secrets:
            try:
                return jwt.decode(token, secret, algorithms=[_ALG], options=_REQUIRED)  # type: ignore[arg-type]
            except jwt.InvalidSignatureError:
                continue  # maybe signed with an earlier secret
            except jwt.ExpiredSignatureError:
                raise TokenError("token expired") from None
            except jwt.PyJWTError:
                break
        raise TokenError("token is not valid")

    def _decode_platform(self, token: str, alg: str, kid: object) -> dict[str, Any]:
        assert self.keys is not None
        if not isinstance(kid, str) or not kid:
            raise TokenError("a platform-signed token needs a key id (kid)")
        key = self.keys.get(kid)
        if key is None:
            raise TokenError("token key id (kid) is not in the platform key set")
        if key.algorithm_name != alg:
            raise TokenError("token is not valid")
        try:
            return jwt.decode(token, key.key, algorithms=[alg], options=_REQUIRED,  # type: ignore[arg-type]
                              issuer=self.issuer or None, audience=self.audience or None,
                              leeway=PLATFORM_LEEWAY_S)
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except (jwt.InvalidIssuerError, jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as e:
            raise TokenError(f"token is not valid: {e}") from None
        except jwt.PyJWTError:
            raise TokenError("token is not valid") from None


def verify_token(secret: str, token: object) -> Identity:
    """An HS256 token signed with ``secret`` (``TokenVerifier`` for rotation and platform keys)."""
    return TokenVerifier([secret]).verify(token)

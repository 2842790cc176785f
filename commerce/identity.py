"""Signed host and viewer tokens (HS256 JWTs). Pure: no I/O."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

import jwt

__all__ = ["Identity", "TokenError", "mint_host_token", "mint_viewer_token", "verify_token", "ANONYMOUS",
           "SUB_RULE"]

_ALG = "HS256"
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
    role: str            # "anonymous" | "viewer" | "host"
    rooms: tuple[str, ...] = ()
    guest: bool = False  # a guest viewer token (``POST /api/viewer-token``), not the platform's sign-in

    @property
    def is_viewer(self) -> bool:
        return self.role in ("viewer", "host") and bool(self.user)

    def hosts(self, room_id: str) -> bool:
        return self.role == "host" and ("*" in self.rooms or room_id in self.rooms)


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


def verify_token(secret: str, token: object) -> Identity:
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise TokenError("token must be a non-empty string")
    try:
        claims = jwt.decode(token, secret, algorithms=[_ALG], options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.PyJWTError:
        raise TokenError("token is not valid") from None
    role = claims.get("role")
    sub = claims.get("sub")
    if role not in ("viewer", "host"):
        raise TokenError("token has no valid role (viewer or host)")
    if not isinstance(sub, str) or not _SUB.match(sub):
        raise TokenError(f"token subject (sub) must be {SUB_RULE}")
    rooms = claims.get("rooms") or []
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise TokenError("token has malformed rooms")
    raw_name = claims.get("name")
    name = raw_name if isinstance(raw_name, str) else sub
    return Identity(user=sub, name=name[:40], role=role, rooms=tuple(rooms), guest=claims.get("guest") is True)

"""Webhook signatures: HMAC-SHA256 over ``<timestamp>.<body>`` with a shared secret. Pure.

Header (``Livesale-Signature``): ``t=<unix seconds>,v1=<64 hex>`` (several ``v1=`` entries are
accepted, so a provider can sign with an old and a new secret during a rotation). A signature is
genuine when one ``v1`` equals HMAC-SHA256(secret, ``f"{t}.".encode() + body``) (compared in constant
time) and ``t`` is within ``tolerance_s`` of ``now_s`` in either direction.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

__all__ = ["SIGNATURE_HEADER", "SignatureError", "sign", "signature_header", "verify_signature"]

SIGNATURE_HEADER = "Livesale-Signature"
_MAX_HEADER = 1024


class SignatureError(ValueError):
    """A webhook whose signature is missing, malformed or wrong (``stale`` False), or whose timestamp
    is outside the tolerance window (``stale`` True)."""

    def __init__(self, message: str, *, stale: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.stale = stale


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


@dataclass(frozen=True, slots=True)
class _Parsed:
    timestamp: int
    signatures: tuple[str, ...]


def _parse(header: str | None) -> _Parsed:
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    if len(header) > _MAX_HEADER:
        raise SignatureError(f"{SIGNATURE_HEADER} header too long")
    timestamp: int | None = None
    sigs: list[str] = []
    for part in header.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header")
        if key == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()) or len(value) > 12:
                raise SignatureError(f"malformed timestamp in {SIGNATURE_HEADER}")
            timestamp = int(value)
        elif key == "v1":
            if len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
                raise SignatureError(f"malformed v1 signature in {SIGNATURE_HEADER}")
            sigs.append(value)
        # other schemes (v0, v2, ...) are ignored
    if timestamp is None:
        raise SignatureError(f"no timestamp in {SIGNATURE_HEADER}")
    if not sigs:
        raise SignatureError(f"no v1 signature in {SIGNATURE_HEADER}")
    return _Parsed(timestamp, tuple(sigs))


def verify_signature(secrets: str | tuple[str, ...], header: str | None, body: bytes, *, now_s: float,
                     tolerance_s: int) -> int:
    """Check a webhook's signature and timestamp; returns the timestamp. Raises ``SignatureError``.

    The signature is checked before the timestamp, so an attacker learns nothing from a "stale"
    answer; both must pass."""
    keys = (secrets,) if isinstance(secrets, str) else secrets
    if not keys or not all(keys):
        raise SignatureError("no webhook secret configured")
    parsed = _parse(header)
    good = False
    for key in keys:
        expected = sign(key, parsed.timestamp, body)
        for candidate in parsed.signatures:
            good |= hmac.compare_digest(expected, candidate)
    if not good:
        raise SignatureError("the signature does not match")
    if abs(now_s - parsed.timestamp) > tolerance_s:
        raise SignatureError(f"timestamp outside the {tolerance_s} s tolerance", stale=True)
    return parsed.timestamp

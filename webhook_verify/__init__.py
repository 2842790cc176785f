"""Check a livesale re-engagement webhook delivery (docs/WEBHOOKS.md) on the platform's side.

    from webhook_verify import verify, VerificationError

    seen = set()  # delivery ids already handled (keep them at least ``tolerance_s``; a store shared by
                  # the receiver's processes in production)
    try:
        delivery = verify(secret, request_headers, raw_body, seen=seen)
    except VerificationError as e:
        ...  # e.code: BAD_SIGNATURE, STALE, REPLAYED or MALFORMED

The procedure, in order (any language can follow it):

1. Read the headers ``X-Livesale-Delivery`` (the delivery id: 1-128 of ``[A-Za-z0-9_.:-]``),
   ``X-Livesale-Timestamp`` (unix seconds, digits only) and ``X-Livesale-Signature`` (``v1=<64 lowercase
   hex>``; several comma-separated ``v1=`` entries are allowed during a secret rotation). Missing or
   malformed: ``MALFORMED``.
2. Compute HMAC-SHA256 with the shared secret over the bytes ``<timestamp>.<delivery id>.<raw body>`` (the
   body exactly as received, before any JSON parsing) and compare its lowercase hex with each ``v1`` value
   in constant time. None equal: ``BAD_SIGNATURE``.
3. The timestamp must be within ``tolerance_s`` (default 300) of the receiver's clock, either way:
   otherwise ``STALE``.
4. The body must be a JSON object whose ``delivery_id`` equals the header: otherwise ``MALFORMED``.
5. A delivery id already handled is a replay: ``REPLAYED`` (answer it 2xx without acting again: the same
   delivery is retried, with the same id, until it gets a 2xx). On success the id is added to ``seen``.

Standard library only; it imports nothing of the server, so it can be copied and run on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["VerificationError", "verify", "sign", "DELIVERY_HEADER", "TIMESTAMP_HEADER", "SIGNATURE_HEADER",
           "BAD_SIGNATURE", "STALE", "REPLAYED", "MALFORMED"]

DELIVERY_HEADER = "X-Livesale-Delivery"
TIMESTAMP_HEADER = "X-Livesale-Timestamp"
SIGNATURE_HEADER = "X-Livesale-Signature"
BAD_SIGNATURE, STALE, REPLAYED, MALFORMED = "BAD_SIGNATURE", "STALE", "REPLAYED", "MALFORMED"

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
_TS = re.compile(r"^[0-9]{1,12}\Z")
_HEX = re.compile(r"^[0-9a-f]{64}\Z")
_MAX_SIGNATURE_HEADER = 1024


class VerificationError(Exception):
    """The delivery is not to be trusted (or was handled before): ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SeenSet(Protocol):
    def __contains__(self, item: object, /) -> bool: ...

    def add(self, item: str, /) -> None: ...


def sign(secret: str | bytes, timestamp: int | str, delivery_id: str, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 of ``<timestamp>.<delivery_id>.<body>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.{delivery_id}.".encode() + body, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict: look the name up case-insensitively
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value.strip() if isinstance(value, str) else None


def verify(secret: str | bytes, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
           tolerance_s: float = 300, seen: SeenSet | None = None) -> dict[str, Any]:
    """The delivery's JSON body once the checks above pass; raises ``VerificationError`` otherwise."""
    if not secret:
        raise ValueError("no webhook secret")
    delivery_id = _header(headers, DELIVERY_HEADER)
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if delivery_id is None or not _ID.match(delivery_id):
        raise VerificationError(MALFORMED, f"{DELIVERY_HEADER} missing or malformed")
    if timestamp is None or not _TS.match(timestamp):
        raise VerificationError(MALFORMED, f"{TIMESTAMP_HEADER} missing or malformed")
    if signature is None or len(signature) > _MAX_SIGNATURE_HEADER:
        raise VerificationError(MALFORMED, f"{SIGNATURE_HEADER} missing or too long")
    candidates = []
    for part in signature.split(","):
        scheme, eq, value = part.strip().partition("=")
        if eq and scheme == "v1":
            if not _HEX.match(value):
                raise VerificationError(MALFORMED, f"{SIGNATURE_HEADER}: a v1 value is not 64 lowercase hex digits")
            candidates.append(value)
    if not candidates:
        raise VerificationError(MALFORMED, f"{SIGNATURE_HEADER} has no v1 signature")
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError("body must be the raw bytes received")
    expected = sign(secret, timestamp, delivery_id, bytes(body))
    good = False
    for candidate in candidates:  # every candidate compared, in constant time
        good |= hmac.compare_digest(expected, candidate)
    if not good:
        raise VerificationError(BAD_SIGNATURE, "the signature does not match")
    clock = time.time() if now is None else now
    if abs(clock - int(timestamp)) > tolerance_s:
        raise VerificationError(STALE, f"timestamp is more than {tolerance_s} s from this clock")
    try:
        delivery = json.loads(body)
    except ValueError:
        raise VerificationError(MALFORMED, "the body is not JSON") from None
    if not isinstance(delivery, dict) or delivery.get("delivery_id") != delivery_id:
        raise VerificationError(MALFORMED, "the body is not a delivery with this delivery_id")
    if seen is not None:
        if delivery_id in seen:
            raise VerificationError(REPLAYED, f"delivery {delivery_id} was handled already")
        seen.add(delivery_id)
    return delivery

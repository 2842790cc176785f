"""Server-to-client WebSocket frames built once and written as-is to many transports. Pure.

A server frame is unmasked (RFC 6455 5.1): FIN + opcode, a 7/16/64-bit length, the payload.
Used only on connections without permessage-deflate, so every viewer gets the same bytes.
"""

from __future__ import annotations

import struct

__all__ = ["frame", "TEXT", "BINARY", "PING_FRAME", "close_frame"]

TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _H16.pack(first, 126, n) + payload
    return _H64.pack(first, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(struct.pack("!H", code) + reason.encode()[:120], CLOSE)


PING_FRAME = bytes((0x80 | PING, 0))

"""Commands packed into the Redis protocol by hiredis (C) instead of redis-py's asyncio connection (Python).

redis-py's asyncio ``Connection.pack_command`` builds each command in Python, one ``join`` per argument
(~0.6 µs an argument here): a reserve batch of 200 requests is ~800 arguments, ~0.5 ms of the gateway's CPU,
and the buyers' hold index and the signal stream pack as many again. hiredis (installed with redis-py's
``hiredis`` extra, already our reply parser) packs the same bytes in C (~0.06 ms for that batch); redis-py
uses it only in its synchronous client. ``packed(cls)`` is ``cls`` with hiredis's packer: the byte-for-byte
same protocol (tests/unit/test_redis_pack.py), and anything hiredis refuses (a memoryview, a bool, None) goes
to redis-py's own packer, which packs it or raises its usual ``DataError``.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection

__all__ = ["HiredisPacking", "packed"]


class HiredisPacking:
    """Mix-in for a redis-py asyncio connection class: ``pack_command`` in C."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        # a command name with its literal words in one argument ("CONFIG GET"), split as redis-py does
        if isinstance(head, str):
            if " " in head:
                args = (*head.encode().split(), *args[1:])
        elif b" " in head:
            args = (*head.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


_PACKED: dict[type, type] = {}


def packed(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (Connection, SSLConnection, UnixDomainSocketConnection...) packing with hiredis; one class each."""
    if issubclass(cls, HiredisPacking):
        return cls
    if cls not in _PACKED:
        _PACKED[cls] = type(f"Hiredis{cls.__name__}", (HiredisPacking, cls), {})
    return _PACKED[cls]

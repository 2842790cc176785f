"""The client's typed exceptions: every one carries the protocol's ``code`` and a ``message``. Pure.

A refusal the server sends as ``error {code, message, rid?}`` becomes a ``LiveSaleError`` with that code;
the client's own failures use codes of their own (``TIMEOUT``, ``DISCONNECTED``, ``CLOSED``), as the
JavaScript client does (docs/CLIENT.md).
"""

from __future__ import annotations

from typing import Any

__all__ = ["LiveSaleError", "JoinRefused", "RequestTimeout", "ConnectionLost", "ClientClosed", "RETRYABLE"]

# error codes after which the same request, with the SAME rid, is sent again (docs/PROTOCOL.md Codes:
# the server deduplicates buy / pay / release / checkout by rid, so a retry never doubles anything)
RETRYABLE = frozenset({"UNAVAILABLE", "INTERNAL", "PAYMENT_UNAVAILABLE"})


class LiveSaleError(Exception):
    """A request or the session failed: ``code`` (the server's error code or the client's own),
    ``message``, and ``reply`` (the server's ``error`` message as a dict, when there was one)."""

    default_code = "ERROR"

    def __init__(self, code: str | None = None, message: str = "", reply: dict[str, Any] | None = None) -> None:
        self.code = code or self.default_code
        self.message = message
        self.reply = reply
        super().__init__(f"{self.code}: {message}" if message else self.code)

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> LiveSaleError:
        return cls(str(reply.get("code") or "ERROR"), str(reply.get("message") or ""), reply)


class JoinRefused(LiveSaleError):
    """The server refused the ``join`` (unknown room, bad or expired token): final, no reconnect."""


class RequestTimeout(LiveSaleError):
    """No reply within the request timeout (the request may or may not have been applied)."""

    default_code = "TIMEOUT"


class ConnectionLost(LiveSaleError):
    """The connection dropped before the reply, for a request that is not safe to send again, or after
    the last attempt of one that is."""

    default_code = "DISCONNECTED"


class ClientClosed(LiveSaleError):
    """The client was closed (``close()``) while the request waited."""

    default_code = "CLOSED"

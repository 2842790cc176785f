"""livesale_client: a Python client of the livesale WebSocket protocol (docs/PROTOCOL.md, docs/CLIENT.md).

Stand-alone: it imports nothing of the server. ``livesale_client.aio`` is the asyncio client,
``livesale_client.sync`` the same API for threads (and gevent); ``messages`` the typed events and answers,
``errors`` the typed exceptions, ``clock`` the NTP-style clock sync.
"""

from __future__ import annotations

from .clock import ClockSync
from .core import RetryPolicy, new_rid
from .errors import ClientClosed, ConnectionLost, JoinRefused, LiveSaleError, RequestTimeout
from .messages import (
    Announcement, BuyResult, Error, Hello, Message, Ok, OrderConfirmed, PayResult, PaymentStarted, ProductPinned,
    ProductUnpinned, ReleaseResult, Resumed, RoomEvent, SaleClosed, SaleOpen, SaleScheduled, SaleSoldOut, Snapshot,
    Tick, Unknown, parse,
)

__all__ = [
    "ClockSync", "RetryPolicy", "new_rid", "LiveSaleError", "JoinRefused", "RequestTimeout", "ConnectionLost",
    "ClientClosed", "Message", "RoomEvent", "Unknown", "Hello", "Snapshot", "Resumed", "Tick", "ProductPinned",
    "ProductUnpinned", "SaleScheduled", "SaleOpen", "SaleSoldOut", "SaleClosed", "Announcement", "BuyResult",
    "PayResult", "ReleaseResult", "PaymentStarted", "OrderConfirmed", "Ok", "Error", "parse",
]

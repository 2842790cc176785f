"""Client addresses and per-address limits, for both transports (WebSocket and HTTP). Pure: no I/O.

The client address is the TCP peer's, unless the peer is one of the trusted proxies
(``LIVESALE_TRUSTED_PROXIES``): then ``X-Forwarded-For`` is read from its last hop backwards, skipping
trusted proxies, and the first address that is not one is the client (a client cannot forge hops
that a trusted proxy appended after its own). Limits are kept per gateway process, in memory.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict

__all__ = ["Network", "parse_proxies", "client_address", "AddressRate", "AddressCount"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(raw: str) -> tuple[Network, ...]:
    """``"10.0.0.1, 10.1.0.0/16, ::1"`` -> networks; ValueError names the first bad entry."""
    out: list[Network] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part[:60]!r} is not an IP address or network") from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: tuple[Network, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str:
    """The client's address: the peer's, or (behind a trusted proxy) the last untrusted hop of
    ``X-Forwarded-For``. "" when the peer is unknown (a unix socket)."""
    if not proxies:  # nobody to trust: the peer's address as the socket gives it (already canonical)
        return peer or ""
    peer_ip = _ip(peer) if peer else None
    if peer_ip is None:
        return peer or ""
    if not proxies or not forwarded_for or not _trusted(peer_ip, proxies):
        return str(peer_ip)
    client = peer_ip
    for hop in reversed(forwarded_for.split(",")):
        ip = _ip(hop)
        if ip is None:  # a malformed hop: stop at the last address we could trust
            break
        client = ip
        if not _trusted(ip, proxies):
            break
    return str(client)


class AddressRate:
    """A token bucket per address (``rate`` per second, ``burst`` at most), in memory, bounded: past
    ``max_keys`` addresses the least recently seen one is forgotten (it starts again with a full
    bucket). ``rate`` 0 turns the limit off."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # addr -> (tokens, stamp)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, addr: str, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        entry = self._buckets.get(addr)
        if entry is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
        else:
            tokens = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
            self._buckets.move_to_end(addr)
        ok = tokens >= 1.0
        self._buckets[addr] = (tokens - 1.0 if ok else tokens, now)
        return ok

    def __len__(self) -> int:
        return len(self._buckets)


class AddressCount:
    """Concurrent connections per address, at most ``cap`` each (0: no cap). An address leaves the
    table when its last connection closes, so the table holds only live connections' addresses."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._count: dict[str, int] = {}

    def acquire(self, addr: str) -> bool:
        n = self._count.get(addr, 0)
        if self.cap and n >= self.cap:
            return False
        self._count[addr] = n + 1
        return True

    def release(self, addr: str) -> None:
        n = self._count.get(addr, 0) - 1
        if n > 0:
            self._count[addr] = n
        else:
            self._count.pop(addr, None)

    def of(self, addr: str) -> int:
        return self._count.get(addr, 0)

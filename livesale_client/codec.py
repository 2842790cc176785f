"""The two subprotocols' framing (docs/PROTOCOL.md "Transport"). Pure.

``livesale.v1.json``: UTF-8 JSON text frames; ``livesale.v1.msgpack``: binary frames of one msgpack map
(needs the ``msgpack`` package, imported only when that subprotocol is chosen).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SUBPROTOCOLS", "Codec", "codec_for", "ws_url"]

SUBPROTOCOLS = {"json": "livesale.v1.json", "msgpack": "livesale.v1.msgpack"}


class Codec:
    """Encode outbound messages and decode inbound frames of one subprotocol."""

    def __init__(self, protocol: str = "json") -> None:
        if protocol not in SUBPROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(SUBPROTOCOLS)}, not {protocol!r}")
        self.protocol = protocol
        self.subprotocol = SUBPROTOCOLS[protocol]
        self._msgpack: Any = None
        if protocol == "msgpack":
            import msgpack  # optional: only for the binary subprotocol

            self._msgpack = msgpack

    def encode(self, msg: dict[str, Any]) -> str | bytes:
        if self._msgpack is not None:
            return bytes(self._msgpack.packb(msg, use_bin_type=True))
        return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)

    def decode(self, frame: str | bytes) -> dict[str, Any] | None:
        """The message, or None for a frame that is not an object with a string ``type`` (ignored)."""
        try:
            if isinstance(frame, bytes):
                msg = self._msgpack.unpackb(frame, raw=False) if self._msgpack is not None else json.loads(frame)
            else:
                msg = json.loads(frame)
        except ValueError:
            return None
        except Exception:  # msgpack's own exceptions (ExtraData, FormatError, ...)
            return None
        if isinstance(msg, dict) and isinstance(msg.get("type"), str):
            return msg
        return None


def codec_for(protocol: str) -> Codec:
    return Codec(protocol)


def ws_url(url: str) -> str:
    """``ws(s)://host[:port]/ws`` from an http(s):// or ws(s):// base URL (``/ws`` added when no path)."""
    u = url.strip()
    if u.startswith("https://"):
        u = "wss://" + u[len("https://"):]
    elif u.startswith("http://"):
        u = "ws://" + u[len("http://"):]
    elif not u.startswith(("ws://", "wss://")):
        u = "ws://" + u
    scheme, _, rest = u.partition("://")
    host, slash, path = rest.partition("/")
    if not slash or not path.strip("/"):
        return f"{scheme}://{host}/ws"
    return u

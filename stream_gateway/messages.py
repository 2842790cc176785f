"""Typed wire messages (docs/PROTOCOL.md): inbound parsing/validation and outbound encoding. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson

__all__ = [
    "PROTOCOL_VERSION", "SUBPROTOCOL_JSON", "SUBPROTOCOL_MSGPACK", "ProtocolError", "Inbound",
    "parse_inbound", "encode_json", "encode_msgpack", "HOST_ACTIONS", "ACTION_TYPES",
]

PROTOCOL_VERSION = "livesale.v1"
SUBPROTOCOL_JSON = "livesale.v1.json"
SUBPROTOCOL_MSGPACK = "livesale.v1.msgpack"

_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
_ROOM = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ProtocolError(ValueError):
    """A message the server refuses; ``code`` is a stable error code (BAD_JSON, BAD_MESSAGE, INVALID)."""

    def __init__(self, code: str, message: str, rid: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rid = rid


@dataclass(frozen=True, slots=True)
class Inbound:
    type: str
    rid: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


MAX_SALE_UNITS = 1_000_000  # units one sale may allocate (WS launch_sale and HTTP POST /api/rooms/{room}/sales)

# field spec: name -> (kind, required, default). kinds: id, room, str:<max>, int:<lo>:<hi>, resume, token
_SPECS: dict[str, dict[str, tuple[str, bool, Any]]] = {
    "join": {"room": ("room", True, None), "token": ("token", False, None), "resume": ("resume", False, None)},
    "clock": {"t0": ("num", True, None)},
    "ping": {},
    "buy": {"sale": ("room", True, None), "qty": ("int:1:1000000", False, 1)},
    "pay": {"hold": ("id", True, None)},
    "release": {"hold": ("id", True, None)},
    "comment": {"text": ("str:300", True, None)},
    "like": {"n": ("int:1:50", False, 1)},
    "go_live": {},
    "end_live": {},
    "pin": {"product": ("room", True, None)},
    "unpin": {},
    "launch_sale": {
        "product": ("room", True, None), "units": (f"int:1:{MAX_SALE_UNITS}", True, None),
        "price": ("int:0:1000000000000", False, None), "limit": ("int:1:1000000", False, 1),
        "starts_in_s": ("int:0:31536000", False, 0), "duration_s": ("int:1:31536000", False, 300),
        "hold_ttl_s": ("int:5:86400", False, None), "sale_id": ("room", False, None),
    },
    "end_sale": {"sale": ("room", True, None)},
    "announce": {"text": ("str:300", True, None)},
    "hide_comment": {"comment": ("id", True, None)},
    "mute": {"user": ("id", True, None)},
}
_RID_REQUIRED = {"buy", "pay", "release"}
HOST_ACTIONS = frozenset({"go_live", "end_live", "pin", "unpin", "launch_sale", "end_sale", "announce",
                          "hide_comment", "mute"})
ACTION_TYPES = frozenset(_SPECS)


def _checker(msg_type: str, name: str, kind: str) -> Callable[[Any, str | None], Any]:
    """Build the validator of one field once (the spec is parsed here, not per message)."""
    def bad(expect: str, rid: str | None) -> ProtocolError:
        return ProtocolError("BAD_MESSAGE", f"{msg_type}.{name} must be {expect}", rid)

    if kind in ("id", "room"):
        pattern, expect = (_ID, "1-128 characters of [A-Za-z0-9_.:@-]") if kind == "id" else \
            (_ROOM, "1-64 characters of [A-Za-z0-9_-]")
        match = pattern.match

        def check_id(value: Any, rid: str | None) -> Any:
            if value.__class__ is not str or not match(value):
                raise bad(expect, rid)
            return value
        return check_id
    if kind == "token":
        def check_token(value: Any, rid: str | None) -> Any:
            if not isinstance(value, str) or len(value) > 4096:
                raise bad("a token string", rid)
            return value
        return check_token
    if kind == "num":
        def check_num(value: Any, rid: str | None) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise bad("a number", rid)
            return value
        return check_num
    if kind.startswith("str:"):
        limit = int(kind[4:])

        def check_str(value: Any, rid: str | None) -> Any:
            if not isinstance(value, str) or not value.strip():
                raise bad("a non-empty string", rid)
            if len(value) > limit:
                raise ProtocolError("INVALID", f"{msg_type}.{name} is longer than {limit} characters", rid)
            return value.strip()
        return check_str
    if kind.startswith("int:"):
        _, lo_s, hi_s = kind.split(":")
        lo, hi = int(lo_s), int(hi_s)

        def check_int(value: Any, rid: str | None) -> Any:
            if value.__class__ is not int:  # bool is a subclass of int: refused too
                raise bad("an integer", rid)
            if not lo <= value <= hi:
                raise ProtocolError("INVALID", f"{msg_type}.{name} must be between {lo} and {hi}", rid)
            return value
        return check_int
    if kind == "resume":
        def check_resume(value: Any, rid: str | None) -> Any:
            if (not isinstance(value, dict) or not isinstance(value.get("epoch"), str)
                    or len(value["epoch"]) > 64 or isinstance(value.get("seq"), bool)
                    or not isinstance(value.get("seq"), int) or value["seq"] < 0):
                raise bad("an object {epoch: string, seq: integer >= 0}", rid)
            return (value["epoch"], value["seq"])
        return check_resume
    raise AssertionError(kind)


# fields for which JSON null means "absent" (clients commonly send `token: null` for "no token")
_NULL_MEANS_ABSENT = frozenset({("join", "token"), ("join", "resume")})
_MISSING = object()

_COMPILED: dict[str, tuple[tuple[str, Callable[[Any, str | None], Any], bool, Any, bool], ...]] = {
    t: tuple((name, _checker(t, name, kind), required, default, (t, name) in _NULL_MEANS_ABSENT)
             for name, (kind, required, default) in spec.items())
    for t, spec in _SPECS.items()
}


def decode_frame(data: bytes | str) -> Any:
    try:
        if isinstance(data, str):
            return orjson.loads(data)
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:
        raise ProtocolError("BAD_JSON", "message is not valid JSON (text) or msgpack (binary)") from None


def parse_inbound(data: bytes | str) -> Inbound:
    obj = decode_frame(data)
    if not isinstance(obj, dict):
        raise ProtocolError("BAD_JSON", "message must be an object")
    rid = obj.get("rid")
    if rid is not None and (not isinstance(rid, str) or not _ID.match(rid)):
        raise ProtocolError("BAD_MESSAGE", "rid must be 1-128 characters of [A-Za-z0-9_.:@-]")
    msg_type = obj.get("type")
    if not isinstance(msg_type, str):
        raise ProtocolError("BAD_MESSAGE", "message has no string `type`", rid)
    spec = _COMPILED.get(msg_type)
    if spec is None:
        raise ProtocolError("BAD_MESSAGE", f"unknown message type {msg_type[:40]!r}", rid)
    if rid is None and msg_type in _RID_REQUIRED:
        raise ProtocolError("BAD_MESSAGE", f"{msg_type} needs a rid", rid)
    fields: dict[str, Any] = {}
    for name, check, required, default, nullable in spec:
        value = obj.get(name, _MISSING)
        if value is _MISSING or (value is None and nullable):
            if required:
                raise ProtocolError("BAD_MESSAGE", f"{msg_type}.{name} is required", rid)
            fields[name] = default
        elif value is None:  # null is a value of the wrong type, like 1.0, true or "1" (an absent field defaults)
            raise ProtocolError("BAD_MESSAGE", f"{msg_type}.{name} must not be null (leave it out for the default)",
                                rid)
        else:
            fields[name] = check(value, rid)
    return Inbound(msg_type, rid, fields)


def encode_json(obj: Any) -> bytes:
    return orjson.dumps(obj)


def encode_msgpack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)

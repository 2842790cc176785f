"""The WebSocket protocol's messages (docs/PROTOCOL.md), typed. Pure: no I/O.

Inbound: a frame is decoded (orjson for text frames, msgpack for binary ones) and checked against
the typed definition of its ``type``: the session messages below, the viewers' requests and the
hosts' actions from ``commerce`` (the same definitions the HTTP API uses). Outbound: one builder
per reply, typed as a TypedDict; room events are ``commerce.events``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, NotRequired, TypedDict

import msgpack
import orjson

from commerce.errors import BadJson, BadMessage, CommerceError, ErrorCode
from commerce.host_actions import HOST_ACTIONS
from commerce.interaction_requests import ClaimCoupon, EnterDraw, JoinTeam, Vote
from commerce.requests import Buy, CheckoutHold, Comment, Like, Pay, Release, View
from commerce.validation import ID_RE, ID_RULE, Check, Number, Schema, Slug

__all__ = [
    "PROTOCOL_VERSION", "SUBPROTOCOL_JSON", "SUBPROTOCOL_MSGPACK", "Inbound", "BadInbound", "Join", "Clock",
    "Ping", "parse_inbound", "decode_frame", "encode_json", "encode_msgpack", "hello", "clock_reply", "pong",
    "buy_result", "pay_result", "release_result", "payment_started", "ok", "error",
]

PROTOCOL_VERSION = "livesale.v1"
SUBPROTOCOL_JSON = "livesale.v1.json"
SUBPROTOCOL_MSGPACK = "livesale.v1.msgpack"


def _token(v: Any) -> str:
    if v.__class__ is not str or len(v) > 4096:
        raise ValueError
    return str(v)


def _resume(v: Any) -> tuple[str, int]:
    epoch, seq = v["epoch"], v["seq"]
    if epoch.__class__ is not str or len(epoch) > 64 or seq.__class__ is not int or seq < 0:
        raise ValueError
    return epoch, seq


# -- the session's own messages (the rest are commerce's requests) -------------------------------------

@dataclass(frozen=True, slots=True)
class Join:
    room: Slug
    token: Annotated[str, Check(_token, "a token string")] | None = None
    resume: Annotated[tuple[str, int], Check(_resume, "an object {epoch: string, seq: integer >= 0}")] | None = None
    ref: Slug | None = None     # a share link's code (docs/PROTOCOL.md Share-to-earn)
    device: Slug | None = None  # the page's per-browser id: who an anonymous watcher is in show reports


@dataclass(frozen=True, slots=True)
class Clock:
    t0: Annotated[float, Number()]


@dataclass(frozen=True, slots=True)
class Ping:
    pass


SCHEMAS: dict[str, Schema[Any]] = {
    "join": Schema(Join, "join"), "clock": Schema(Clock, "clock"), "ping": Schema(Ping, "ping"),
    "buy": Schema(Buy, "buy"), "pay": Schema(Pay, "pay"), "release": Schema(Release, "release"),
    "comment": Schema(Comment, "comment"), "like": Schema(Like, "like"),
    "checkout": Schema(CheckoutHold, "checkout"),
    "join_team": Schema(JoinTeam, "join_team"), "vote": Schema(Vote, "vote"),
    "claim_coupon": Schema(ClaimCoupon, "claim_coupon"), "enter_draw": Schema(EnterDraw, "enter_draw"),
    "view": Schema(View, "view"),
    **{name: action.schema for name, action in HOST_ACTIONS.items()},
}
RID_REQUIRED = frozenset({"buy", "pay", "release", "checkout", "vote", "claim_coupon", "enter_draw"})
_new = tuple.__new__  # a NamedTuple made without its Python-level __new__ (per message: 0.08 vs 0.22 µs)


class Inbound(NamedTuple):
    """One parsed request (a NamedTuple: one per inbound message)."""
    type: str
    rid: str | None
    body: Any  # the typed request: Join, Buy, LaunchSale, ...


class BadInbound(Exception):
    """A frame the server refuses: ``error`` says why; ``rid`` is the request's id when it had one."""

    def __init__(self, error: CommerceError, rid: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.rid = rid


def decode_frame(data: bytes | str) -> Any:
    try:
        if isinstance(data, str):
            return orjson.loads(data)
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:
        raise BadInbound(BadJson("message is not valid JSON (text) or msgpack (binary)")) from None


def parse_inbound(data: bytes | str) -> Inbound:
    obj = decode_frame(data)
    if obj.__class__ is not dict:
        raise BadInbound(BadJson("message must be an object"))
    rid = obj.get("rid")
    if rid is not None and (rid.__class__ is not str or not ID_RE.match(rid)):
        raise BadInbound(BadMessage(f"rid must be {ID_RULE}"))
    msg_type = obj.get("type")
    if msg_type.__class__ is not str:
        raise BadInbound(BadMessage("message has no string `type`"), rid)
    schema = SCHEMAS.get(msg_type)
    if schema is None:
        raise BadInbound(BadMessage(f"unknown message type {msg_type[:40]!r}"), rid)
    if rid is None and msg_type in RID_REQUIRED:
        raise BadInbound(BadMessage(f"{msg_type} needs a rid"), rid)
    try:
        return _new(Inbound, (msg_type, rid, schema.parse(obj)))
    except CommerceError as e:
        raise BadInbound(e, rid) from None


def encode_json(obj: Any) -> bytes:
    return orjson.dumps(obj)


def encode_msgpack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


# -- replies and personal messages ----------------------------------------------------------------------

class Limits(TypedDict):
    max_msg: int
    buy_rate: float
    comment_rate: float
    tick_ms: int
    guests: bool  # the server issues guest viewer tokens (POST /api/viewer-token)
    payments: str  # LIVESALE_PAYMENT_MODE: "instant" (`pay`) or a provider mode (`checkout`)


class Hello(TypedDict):
    type: Literal["hello"]
    v: str
    server_time: int
    session: str
    limits: Limits


class ClockReply(TypedDict):
    type: Literal["clock"]
    t0: float
    t1: int
    t2: int
    rid: NotRequired[str]


class Pong(TypedDict):
    type: Literal["pong"]
    rid: NotRequired[str]


class BuyResult(TypedDict):
    type: Literal["buy_result"]
    rid: str
    code: str
    sale: str
    qty: int
    units_left: int | None
    hold: NotRequired[str]
    pay_by: NotRequired[int]
    starts_at: NotRequired[int]
    message: NotRequired[str]


class HoldResult(TypedDict):
    type: Literal["pay_result", "release_result"]
    rid: str
    code: str
    hold: str
    order: NotRequired[str]


class Ok(TypedDict):
    type: Literal["ok"]
    rid: str | None
    action: str


class Error(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    rid: NotRequired[str]


def hello(server_time: int, session: str, limits: Limits) -> Hello:
    return {"type": "hello", "v": PROTOCOL_VERSION, "server_time": server_time, "session": session,
            "limits": limits}


def clock_reply(t0: float, t1: int, t2: int, rid: str | None) -> ClockReply:
    out: ClockReply = {"type": "clock", "t0": t0, "t1": t1, "t2": t2}
    if rid:
        out["rid"] = rid
    return out


def pong(rid: str | None) -> Pong:
    return {"type": "pong", "rid": rid} if rid else {"type": "pong"}


def buy_result(rid: str, code: str, sale: str, qty: int, units_left: int | None) -> BuyResult:
    return {"type": "buy_result", "rid": rid, "code": code, "sale": sale, "qty": qty, "units_left": units_left}


def pay_result(rid: str, code: str, hold: str, order: str | None = None) -> HoldResult:
    out: HoldResult = {"type": "pay_result", "rid": rid, "code": code, "hold": hold}
    if order:
        out["order"] = order
    return out


def release_result(rid: str, code: str, hold: str) -> HoldResult:
    return {"type": "release_result", "rid": rid, "code": code, "hold": hold}


def payment_started(rid: str, started: dict[str, Any]) -> dict[str, Any]:
    """The answer to `checkout`: hold, payment_id, amount, currency, provider, redirect_url? client_secret?"""
    return {"type": "payment_started", "rid": rid, **started}


def ok(rid: str | None, action: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": "ok", "rid": rid, "action": action, **extra}


def error(code: ErrorCode | str, message: str, rid: str | None) -> Error:
    out: Error = {"type": "error", "code": str(code), "message": message}
    if rid:
        out["rid"] = rid
    return out

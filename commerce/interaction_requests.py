"""Typed definitions of the interaction requests (docs/PROTOCOL.md Interaction): fan teams, polls,
coupon drops and lucky draws, for the WebSocket and the HTTP API alike. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from .requests import Flag, MAX_PRICE, Price
from .validation import Check, Id, Match, Range, Schema, Text

__all__ = [
    "KeyId", "TeamDef", "SetTeams", "JoinTeam", "OpenPoll", "ClosePoll", "Vote", "DropCoupons", "EndDrop",
    "ClaimCoupon", "CouponTerms", "DrawPrize", "DrawRule", "CreateDraw", "EnterDraw", "ClaimBody", "VoteBody",
    "MAX_TEAMS", "MAX_OPTIONS",
]

MAX_TEAMS = 30
MAX_OPTIONS = 6
_KEY_ID = re.compile(r"^(?!.*--)[A-Za-z0-9_-]{1,40}\Z")
KEY_ID_RULE = "1-40 characters of [A-Za-z0-9_-], without '--'"
KeyId = Annotated[str, Match(_KEY_ID, KEY_ID_RULE)]  # team, poll, drop and draw ids
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}\Z")
_CURRENCY = re.compile(r"^[A-Z]{3}\Z")


def _text(v: Any, lo: int, hi: int) -> str:
    if not isinstance(v, str) or not lo <= len(v.strip()) <= hi:
        raise ValueError
    return v.strip()


@dataclass(frozen=True, slots=True)
class TeamDef:
    team_id: str
    name: str
    colour: str
    badge: str


def _teams(v: object) -> tuple[TeamDef, ...]:
    if not isinstance(v, list) or not 2 <= len(v) <= MAX_TEAMS:
        raise ValueError
    out = []
    for item in v:
        if not isinstance(item, dict) or set(item) - {"team_id", "name", "colour", "badge"}:
            raise ValueError
        tid, colour = item.get("team_id"), item.get("colour")
        if not (isinstance(tid, str) and _KEY_ID.match(tid) and isinstance(colour, str) and _COLOUR.match(colour)):
            raise ValueError
        out.append(TeamDef(tid, _text(item.get("name"), 1, 40), colour.lower(), _text(item.get("badge"), 1, 8)))
    if len({t.team_id for t in out}) != len(out):
        raise ValueError
    return tuple(out)


def _options(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not 2 <= len(v) <= MAX_OPTIONS:
        raise ValueError
    return tuple(_text(o, 1, 80) for o in v)


def _kind(v: object) -> str:
    if v not in ("amount", "percent"):
        raise ValueError
    return str(v)


def _ids(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > 100 or not all(isinstance(x, str) and re.match(r"^[A-Za-z0-9_-]{1,64}\Z", x)
                                                         for x in v):
        raise ValueError
    return tuple(dict.fromkeys(v))


Teams = Annotated[tuple[TeamDef, ...], Check(
    _teams, f"a list of 2-{MAX_TEAMS} {{team_id, name (1-40), colour (#rrggbb), badge (1-8)}} with distinct ids")]
Options = Annotated[tuple[str, ...], Check(_options, f"a list of 2-{MAX_OPTIONS} strings of 1-80 characters")]
Kind = Annotated[str, Check(_kind, "amount or percent")]
Ids = Annotated[tuple[str, ...], Check(_ids, "a list of up to 100 ids (1-64 characters of [A-Za-z0-9_-])")]
Currency = Annotated[str, Match(_CURRENCY, "a 3-letter ISO 4217 code such as EUR")]


# -- fan teams -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SetTeams:
    teams: Teams
    allow_switch: Flag = True
    switch_cooldown_s: Annotated[int, Range(0, 86_400)] = 600


@dataclass(frozen=True, slots=True)
class JoinTeam:
    team: KeyId


# -- polls -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OpenPoll:
    question: Annotated[str, Text(200)]
    options: Options
    duration_s: Annotated[int, Range(5, 86_400)] = 60
    poll_id: KeyId | None = None


@dataclass(frozen=True, slots=True)
class ClosePoll:
    poll: KeyId


@dataclass(frozen=True, slots=True)
class Vote:
    poll: KeyId
    option: Annotated[int, Range(0, 1_000)]


@dataclass(frozen=True, slots=True)
class VoteBody:
    """``POST /api/polls/{poll}/vote``."""
    option: Annotated[int, Range(0, 1_000)]


# -- coupon drops ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CouponTerms:
    """What a coupon takes off: ``kind`` amount (minor units) or percent, above ``min_spend``."""
    kind: Kind
    value: Annotated[int, Range(1, MAX_PRICE)]
    currency: Currency = "EUR"
    min_spend: Price = 0
    valid_s: Annotated[int, Range(60, 2_592_000)] = 3_600


@dataclass(frozen=True, slots=True)
class DropCoupons:
    count: Annotated[int, Range(1, 1_000_000)]
    kind: Kind
    value: Annotated[int, Range(1, MAX_PRICE)]
    currency: Currency = "EUR"
    min_spend: Price = 0
    sales: Ids = ()
    products: Ids = ()
    team: KeyId | None = None
    starts_in_s: Annotated[int, Range(0, 31_536_000)] = 0
    claim_s: Annotated[int, Range(1, 86_400)] = 60
    valid_s: Annotated[int, Range(60, 2_592_000)] = 3_600
    drop_id: KeyId | None = None


@dataclass(frozen=True, slots=True)
class EndDrop:
    drop: KeyId


@dataclass(frozen=True, slots=True)
class ClaimCoupon:
    drop: KeyId


@dataclass(frozen=True, slots=True)
class ClaimBody:
    """``POST /api/drops/{drop}/claim``."""
    request_id: Id


# -- lucky draws -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DrawPrize:
    pool: str | None = None          # units of a product from its stock pool ...
    units: int = 1
    coupon: CouponTerms | None = None  # ... or a coupon


@dataclass(frozen=True, slots=True)
class DrawRule:
    keyword: str | None = None
    team: str | None = None
    watched_s: int = 0
    bought: bool = False


_POOL = re.compile(r"^(?!.*--)[A-Za-z0-9_-]{1,40}\Z")


_COUPON = Schema(CouponTerms, "prize.coupon")


def _prize(v: object) -> DrawPrize:
    if not isinstance(v, dict) or set(v) - {"pool", "units", "coupon"} or ("pool" in v) == ("coupon" in v):
        raise ValueError
    if "pool" in v:
        pool, units = v["pool"], v.get("units", 1)
        if not (isinstance(pool, str) and _POOL.match(pool) and units.__class__ is int and 1 <= units <= 100):
            raise ValueError
        return DrawPrize(pool=pool, units=units)
    c = v["coupon"]
    if not isinstance(c, dict) or set(c) - {"kind", "value", "currency", "min_spend", "valid_s"}:
        raise ValueError
    try:
        return DrawPrize(coupon=_COUPON.parse(c))
    except Exception:
        raise ValueError from None


def _rule(v: object) -> DrawRule:
    if not isinstance(v, dict) or set(v) - {"keyword", "team", "watched_s", "bought"}:
        raise ValueError
    kw, team, watched, bought = v.get("keyword"), v.get("team"), v.get("watched_s", 0), v.get("bought", False)
    if kw is not None:
        kw = _text(kw, 1, 40)
    if team is not None and not (isinstance(team, str) and _KEY_ID.match(team)):
        raise ValueError
    if watched.__class__ is not int or not 0 <= watched <= 86_400 or bought.__class__ is not bool:
        raise ValueError
    return DrawRule(kw, team, watched, bought)


Prize = Annotated[DrawPrize, Check(_prize, "{pool, units? (1-100)} or {coupon: {kind, value, currency?, min_spend?, "
                                           "valid_s?}}")]
Rule = Annotated[DrawRule, Check(_rule, "{keyword? (1-40), team?, watched_s? (0-86400), bought? (true/false)}")]


@dataclass(frozen=True, slots=True)
class CreateDraw:
    title: Annotated[str, Text(120)]
    winners: Annotated[int, Range(1, 1_000)]
    entry_s: Annotated[int, Range(10, 86_400)]
    prize: Prize
    rule: Rule = DrawRule()
    pay_within_s: Annotated[int, Range(60, 86_400)] = 600
    draw_id: KeyId | None = None


@dataclass(frozen=True, slots=True)
class EnterDraw:
    draw: KeyId

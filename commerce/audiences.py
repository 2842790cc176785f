"""Interest audiences (docs/PROTOCOL.md, Interest audiences): a merchant or a host defines rules over the
viewers' interest signals; the audience is counted, listed and exported now, from SQL, by ONE query
per page (inventory/audiences.py compiles the rules).

The rule language, checked by the typed request machinery (``DefineAudience``): ``rules`` is a list
of 1-10 conditions that must all hold, each ``{signal, sku?, product?, room?, sale?, ref?, detail?,
within_days?, min_count?, min_value?, absent?}``. Examples:

- "held but did not pay SKU X in the last 7 days":
  ``[{"signal": "held_unpaid", "sku": "X", "within_days": 7}]``
- "team Lakers, watched more than 10 minutes":
  ``[{"signal": "team", "ref": "lakers"}, {"signal": "leave", "min_value": 600000}]``
- "tapped buy in room r1 at least 3 times, never paid":
  ``[{"signal": "tap", "room": "r1", "min_count": 3}, {"signal": "paid", "room": "r1", "absent": true}]``

An audience belongs to the token that defined it (user id and role): only that owner reads it.
A host whose token names rooms (not ``*``) must name one of them as ``room`` in every condition.
``members`` and ``member_of`` serve the other parts (re-engagement, offers at a store's till).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from inventory.audiences import (
    ANONYMOUS_PREFIXES, MAX_CONDS, RULE_KINDS, AudienceRecord, AudienceStore, Cond,
)
from inventory.store import Store

from .errors import BadMessage, Conflict, Forbidden, InvalidInput, NotFound
from .identity import Identity
from .requests import Flag
from .validation import ID_RE, ID_RULE, Check, Id, Match, Range, Schema, Slug, Text

__all__ = ["Audiences", "DefineAudience", "CondBody", "AudienceId", "AUDIENCE_ID_RULE", "audience_wire",
           "parse_rules"]

AUDIENCE_ID_RULE = Match(re.compile(r"^[A-Za-z0-9_-]{1,64}\Z"), "1-64 characters of [A-Za-z0-9_-]")
AudienceId = Annotated[str, AUDIENCE_ID_RULE]
_KINDS = frozenset(RULE_KINDS)
_KINDS_TEXT = ", ".join(RULE_KINDS)
EXPORT_PAGE = 1000  # members per query of an export


def _kind(v: object) -> str:
    if v not in _KINDS:
        raise ValueError
    return str(v)


Sku = Annotated[str, Match(ID_RE, ID_RULE)]


@dataclass(frozen=True, slots=True)
class CondBody:
    """One condition of an audience's ``rules`` (inventory/audiences.py ``Cond`` says what it selects)."""
    signal: Annotated[str, Check(_kind, f"one of {_KINDS_TEXT}")]
    sku: Sku | None = None
    product: Sku | None = None
    room: Slug | None = None
    sale: Sku | None = None
    ref: Id | None = None
    detail: Annotated[str, Text(64)] | None = None
    within_days: Annotated[int, Range(1, 365)] | None = None   # counted back from now
    min_count: Annotated[int, Range(1, 1_000_000)] = 1
    min_value: Annotated[int, Range(0, 10**15)] | None = None   # the sum of the signals' value
    absent: Flag = False                                         # the viewer does NOT meet the rest


_FIELDS = frozenset(CondBody.__dataclass_fields__)
_CONDS = [Schema(CondBody, f"rules[{i}]") for i in range(MAX_CONDS)]


def parse_rules(v: object) -> tuple[Cond, ...]:
    """``rules``: 1-10 condition objects; a bad one is refused naming its field (``rules[2].within_days``)."""
    if not isinstance(v, list) or not v:
        raise ValueError
    if len(v) > MAX_CONDS:
        raise InvalidInput(f"rules has {len(v)} conditions: at most {MAX_CONDS}")
    out = []
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise BadMessage(f"rules[{i}] must be an object")
        unknown = sorted(str(k) for k in item if k not in _FIELDS)
        if unknown:
            raise InvalidInput(f"rules[{i}] has an unknown field: {unknown[0]}")
        out.append(Cond(**asdict(_CONDS[i].parse(item))))
    if all(c.absent for c in out):
        raise InvalidInput("rules need at least one condition without absent")
    return tuple(out)


Rules = Annotated[tuple[Cond, ...], Check(parse_rules, f"a list of 1-{MAX_CONDS} conditions")]


@dataclass(frozen=True, slots=True)
class DefineAudience:
    """``POST /api/audiences``."""
    name: Annotated[str, Text(200)]
    rules: Rules
    audience_id: AudienceId | None = None


def audience_wire(rec: AudienceRecord) -> dict[str, Any]:
    return {"audience_id": rec.audience_id, "name": rec.name, "rules": [c.wire() for c in rec.rules],
            "owner": rec.owner, "created_at": rec.created_at_ms}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _owner(who: Identity) -> Identity:
    if who.role not in ("merchant", "host") or not who.user:
        raise Forbidden("audiences need a merchant or host token")
    return who


def reachable(user_id: str) -> bool:
    """Anonymous viewers (per-browser ``b:`` and per-session ``s:`` ids) are in no audience."""
    return bool(user_id) and not user_id.startswith(ANONYMOUS_PREFIXES)


class Audiences:
    def __init__(self, store: Store) -> None:
        self.sql = AudienceStore(store)

    # -- definitions (owner's API) -------------------------------------------------------------------

    @staticmethod
    def authorize(who: Identity) -> Identity:
        """FORBIDDEN unless a merchant or host token."""
        return _owner(who)

    async def define(self, who: Identity, req: DefineAudience) -> tuple[bool, dict[str, Any]]:
        """``(True, Audience)`` when stored now; the same id and body again: ``(False, Audience)``."""
        _owner(who)
        if who.role == "host" and "*" not in who.rooms:
            for i, c in enumerate(req.rules):
                if c.room is None or c.room not in who.rooms:
                    raise Forbidden(f"rules[{i}].room must be one of the rooms your token hosts")
        rec = AudienceRecord(req.audience_id or "au-" + secrets.token_hex(6), who.user, who.role, req.name,
                             req.rules, _now_ms())
        fresh, stored = await self.sql.add(rec)
        if not fresh and (stored.owner, stored.owner_role, stored.name, stored.rules) != (
                rec.owner, rec.owner_role, rec.name, rec.rules):
            raise Conflict(f"audience {rec.audience_id} exists with another definition")
        return fresh, audience_wire(stored)

    async def owned(self, who: Identity, audience_id: str) -> AudienceRecord:
        """The audience if ``who`` owns it: NOT_FOUND (no such audience), FORBIDDEN (another owner's)."""
        _owner(who)
        rec = await self.sql.get(audience_id)
        if rec is None:
            raise NotFound(f"no audience {audience_id}")
        if (rec.owner, rec.owner_role) != (who.user, who.role):
            raise Forbidden("this audience belongs to someone else")
        return rec

    async def listing(self, who: Identity) -> list[dict[str, Any]]:
        _owner(who)
        return [audience_wire(r) for r in await self.sql.of_owner(who.user, who.role)]

    async def view(self, who: Identity, audience_id: str) -> dict[str, Any]:
        rec = await self.owned(who, audience_id)
        return {**audience_wire(rec), "count": await self.sql.count(rec.rules, _now_ms())}

    async def remove(self, who: Identity, audience_id: str) -> bool:
        await self.owned(who, audience_id)
        return await self.sql.remove(audience_id)

    # -- members (for every part) ---------------------------------------------------------------------

    async def get(self, audience_id: str) -> AudienceRecord:
        rec = await self.sql.get(audience_id)
        if rec is None:
            raise NotFound(f"no audience {audience_id}")
        return rec

    async def count(self, audience_id: str, *, now_ms: int | None = None) -> int:
        rec = await self.get(audience_id)
        return await self.sql.count(rec.rules, _now_ms() if now_ms is None else now_ms)

    async def export_rows(self, audience_id: str, *, now_ms: int | None = None,
                          page: int = EXPORT_PAGE) -> AsyncIterator[dict[str, Any]]:
        """Every member now, ordered by user id: ``{user_id, signals, last_at}``, read a page (one query)
        at a time. The rules are evaluated at one instant (``now_ms``, default: when the export starts)."""
        rec = await self.get(audience_id)
        now = _now_ms() if now_ms is None else now_ms
        async for user, n, last in self.sql.rows(rec.rules, now, page):
            yield {"user_id": user, "signals": n, "last_at": last}

    async def members(self, audience_id: str, *, now_ms: int | None = None) -> list[str]:
        """The members' user ids now, sorted (re-engagement reaches them)."""
        return [row["user_id"] async for row in self.export_rows(audience_id, now_ms=now_ms)]

    async def contains(self, audience_id: str, user_id: str, *, now_ms: int | None = None) -> bool:
        """Whether the audience holds ``user_id`` now (an audience deleted since: holds nobody)."""
        rec = await self.sql.get(audience_id)
        if rec is None or not reachable(user_id):
            return False
        return await self.sql.holds(rec.rules, _now_ms() if now_ms is None else now_ms, user_id)

    async def member_of(self, user_id: str, among: Sequence[str] | None = None, *,
                        now_ms: int | None = None) -> list[str]:
        """The audiences (ids, sorted) holding ``user_id`` now: of ``among``, or of every audience. One
        query per audience, each reading that viewer's signals only."""
        if not reachable(user_id):
            return []
        now = _now_ms() if now_ms is None else now_ms
        ids = sorted(set(among)) if among is not None else await self.sql.all_ids()
        out = []
        for rec in sorted(await self.sql.get_many(ids), key=lambda r: r.audience_id):
            if await self.sql.holds(rec.rules, now, user_id):
                out.append(rec.audience_id)
        return out

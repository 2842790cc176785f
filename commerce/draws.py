"""Lucky draws (docs/PROTOCOL.md Interaction, Lucky draws; the procedure and its check: docs/DRAWS.md).

A host opens a draw: a secret seed is drawn and its commitment published in ``draw_opened`` before
anyone can enter. Viewers enter (``draw_enter.lua``: once each, only while entries are open) when
they meet the draw's rule; the gateways report who is in the room every second (``draw_seen.lua``).
When entries close, the entrants present at that moment form the list; the ranking of
``commerce/draw_proof.py`` picks the winners, and the seed, the list's hash and the winners go out in
``draw_result`` (the list itself: ``GET /api/draws/{draw}/entrants``). A pool prize is a zero-price
hold in a hidden prize sale drawn from the pool at the draw's creation (``<pool>--d-<draw>``, never
announced, not buyable: ``Checkout.submit_buy`` refuses it); a prize not paid by its ``pay_by`` goes
to the next entrants of the same ranking (``draw_redrawn``), round after round, until every prize is
paid or the list is exhausted. A coupon prize is a coupon of the hidden drop ``<draw>-prize``.

Every step after the creation runs in the ``draw`` deadline handler (``commerce/due.py``), which
every process calls: one process at a time holds the draw's lease (``draw_lease.lua``) and each
step is written only from the state it expects (``draw_update.lua``), so a step is taken once; what a
step does outside the draw's hash is idempotent (the result is a function of the frozen entrant list,
the prize holds are reserved under one request id per round, events are published ``once``).

Redis (``inventory.keys.draw_keys``): ``meta`` (terms, secret seed and mask key, state, result),
``entrants`` (user -> entry id), ``present`` (user -> last seen). SQL: ``inventory/draws.py``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from inventory.domain import ReserveRequest
from inventory.draws import PRIZE_SALE_MARK, DrawRecord, DrawStore
from inventory.keys import POOL_SEP, draw_keys
from inventory.pools import PoolRecord
from inventory.scripts import Inventory
from inventory.store import ProductRecord, Store

from . import draw_proof as proof
from . import events as ev
from .due import DueTimers
from .errors import Conflict, ErrorCode, NotFound, Refused
from .identity import Identity
from .interaction_part import InteractionPart
from .interaction_requests import CreateDraw, DrawPrize, DrawRule
from .live_counts import LiveCounts
from .lua_scripts import script
from .requests import CreateSale
from .room_bus import RoomBus
from .teams import Teams

if TYPE_CHECKING:
    from .checkout import Checkout
    from .coupons import Coupons
    from .sales import Sales

__all__ = ["Draws", "PRESENT_MS"]

log = logging.getLogger(__name__)

PRESENT_MS = 5_000          # an entrant seen in the room this shortly before entries close was there at the draw
LEASE_MS = 60_000           # one process advances a draw at a time; a stopped process's lease lapses after this
ROUND_POLL_MS = 5_000       # while a round's prizes can still be paid: how often it is looked at (all paid early?)
PRIZE_SALE_S = 30 * 86_400  # the prize sale's window (it is closed as soon as the draw is done)
TERMS_CACHED = 1_024        # draws whose fixed terms this process keeps (the entry burst reads them once)

_FIELDS = ("room", "terms", "state", "until", "seed", "sale", "list", "order", "users", "list_hash", "winners",
           "round", "round_state", "round_due", "pos", "new", "holders", "redraws", "drawn_at", "closed")


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _json(v: Any) -> str:
    return orjson.dumps(v).decode()


def prize_wire(p: DrawPrize) -> dict[str, Any]:
    if p.pool is not None:
        return {"pool": p.pool, "units": p.units}
    assert p.coupon is not None
    c = p.coupon
    return {"coupon": {"kind": c.kind, "value": c.value, "currency": c.currency, "min_spend": c.min_spend,
                       "valid_s": c.valid_s}}


def rule_wire(r: DrawRule) -> dict[str, Any]:
    """The rule's parts the host set (an empty rule: presence at the draw only)."""
    out: dict[str, Any] = {}
    if r.keyword:
        out["keyword"] = r.keyword
    if r.team:
        out["team"] = r.team
    if r.watched_s:
        out["watched_s"] = r.watched_s
    if r.bought:
        out["bought"] = True
    return out


@dataclass(frozen=True, slots=True)
class Terms:
    """What never changes once a draw is open (cached per process)."""
    draw_id: str
    room_id: str
    wire: dict[str, Any]   # the public terms: draw_id, room_id, title, prize, winners, rule, times, commitment
    until: int
    mask: bytes
    sale: str              # the prize sale ("" for a coupon prize)

    @property
    def rule(self) -> dict[str, Any]:
        out: dict[str, Any] = self.wire["rule"]
        return out

    @property
    def prize(self) -> dict[str, Any]:
        out: dict[str, Any] = self.wire["prize"]
        return out


class Draws(InteractionPart):
    def __init__(self, store: Store, bus: RoomBus, inventory: Inventory, live: LiveCounts, due: DueTimers,
                 teams: Teams, coupons: Coupons, sales: Sales, checkout: Checkout) -> None:
        super().__init__(store, bus, inventory, live, due)
        self.sql = DrawStore(store)
        self.teams = teams
        self.coupons = coupons
        self.sales = sales
        self.checkout = checkout
        self._enter = script(self.redis, "draw_enter")
        self._seen = script(self.redis, "draw_seen")
        self._lease = script(self.redis, "draw_lease")
        self._update = script(self.redis, "draw_update")
        self._terms: OrderedDict[str, Terms] = OrderedDict()
        live.register("draws", self._live_counts)
        due.register("draw", self._due)

    @property
    def ttl_ms(self) -> int:
        return self.bus.retain_room_ms

    # -- host --------------------------------------------------------------------------------------

    async def create(self, room_id: str, req: CreateDraw) -> dict[str, Any]:
        """Open a draw: ``draw_opened`` (with the seed's commitment) goes to the room before anyone can
        enter. The same id again in the same room answers the draw; in another room: CONFLICT."""
        if await self.store.get_room(room_id) is None:
            raise NotFound(f"no room {room_id}")
        draw_id = req.draw_id or "w-" + secrets.token_hex(5)
        if await self._existing(draw_id, room_id):
            return await self.get(draw_id)
        now = await self.inventory.now_ms()
        until = now + req.entry_s * 1000
        sale_id, named = "", {}
        if req.prize.pool is not None:
            sale_id, pool = await self._prize_sale(room_id, draw_id, req, until)
            named = {"title": pool.title, "sku": pool.sku}  # what the prize is, for the viewers' card
        else:
            assert req.prize.coupon is not None
            await self.coupons.prize_drop(room_id, f"{draw_id}-prize", req.prize.coupon, count=req.winners)
        try:
            return await self._open(room_id, draw_id, req, now, until, sale_id, named)
        except BaseException:
            if sale_id:  # the draw did not open: the prize's units go back to the pool now
                await self._end_prize_sale(sale_id)
            raise

    async def _open(self, room_id: str, draw_id: str, req: CreateDraw, now: int, until: int,
                    sale_id: str, named: dict[str, str]) -> dict[str, Any]:
        seed, mask = proof.new_seed(), proof.new_mask_key()
        terms: dict[str, Any] = {
            "draw_id": draw_id, "room_id": room_id, "title": req.title, "prize": {**prize_wire(req.prize), **named},
            "winners": req.winners, "rule": rule_wire(req.rule), "opened_at": now, "entry_until": until,
            "pay_within_s": req.pay_within_s, "commitment": proof.commitment(seed)}
        stored = await self.sql.add(DrawRecord(
            draw_id=draw_id, room_id=room_id, title=req.title, prize=_json(terms["prize"]), rule=_json(terms["rule"]),
            k=req.winners, pay_within_s=req.pay_within_s, commitment=terms["commitment"], seed="", list_hash="",
            entrants="[]", winner_ids="[]", redraws="[]", state="open", opened_at_ms=now, entry_until_ms=until,
            created_at_ms=now, drawn_at_ms=0))
        k = draw_keys(draw_id)
        if stored.room_id != room_id or stored.commitment != terms["commitment"] \
                or not await self.redis.hsetnx(k.meta, "room", room_id):  # created at the same time elsewhere
            if await self._existing(draw_id, room_id) and await self.redis.hget(k.meta, "room") is not None:
                return await self.get(draw_id)
            raise Conflict(f"draw {draw_id} is being created")
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(k.meta, mapping={"terms": _json(terms), "state": "new", "until": until, "seed": seed.hex(),
                                    "mask": mask.hex(), "sale": sale_id})
            p.pexpire(k.meta, self.ttl_ms)
            await p.execute()
        await self.due.schedule("draw", draw_id, until)
        wire = {**terms, "state": "open", "entrants": 0}
        await self.bus.publish(room_id, ev.draw_opened(wire), {f"draw:{draw_id}": wire}, once=f"draw_opened:{draw_id}")
        await self.redis.hset(k.meta, "state", "open")  # entries open only once the commitment is out
        return wire

    async def _existing(self, draw_id: str, room_id: str) -> bool:
        """Whether the draw exists (in this room); CONFLICT when it is another room's."""
        owner = await self.redis.hget(draw_keys(draw_id).meta, "room")
        if owner is None:
            rec = await self.sql.get(draw_id)
            owner = rec.room_id if rec is not None else None
        if owner is None:
            return False
        if _s(owner) != room_id:
            raise Conflict(f"draw {draw_id} belongs to another room")
        return True

    async def _prize_sale(self, room_id: str, draw_id: str, req: CreateDraw, until: int) -> tuple[str, PoolRecord]:
        """The prize's units move out of the pool now, into a hidden sale that opens when entries close
        (POOL_SHORT when the pool has fewer than winners x units available)."""
        assert req.prize.pool is not None
        pool = await self.sales.pool_sql.get(req.prize.pool)
        if pool is None:
            raise NotFound(f"no stock pool {req.prize.pool}")
        suffix = f"d-{draw_id}"
        if len(pool.pool_id) + len(POOL_SEP) + len(suffix) > 64:
            suffix = "d-" + hashlib.sha256(draw_id.encode()).hexdigest()[:20]
        units = req.winners * req.prize.units
        sale = CreateSale(product_id=await self._prize_product(room_id, pool), units=units, sale_id=suffix,
                          unit_price=0, per_user_limit=req.prize.units, starts_at=until,
                          ends_at=until + PRIZE_SALE_S * 1000, hold_ttl_s=req.pay_within_s, pool=pool.pool_id)
        try:
            wire = await self.sales.launch(room_id, sale, announce=False)
        except Refused as e:
            if e.code is ErrorCode.POOL_SHORT:
                raise Refused(ErrorCode.POOL_SHORT, f"the prize needs {req.winners} x {req.prize.units} = {units} "
                                                    f"units: {e.message}") from None
            raise
        return str(wire["sale_id"]), pool

    async def _prize_product(self, room_id: str, pool: PoolRecord) -> str:
        """The room's product of the pool's SKU; without one, a product row for the prize (not announced)."""
        for p in await self.store.list_products(room_id):
            if p.sku == pool.sku and p.currency == pool.currency:
                return p.product_id
        product_id = f"prize-{pool.pool_id}"
        await self.store.upsert_product(ProductRecord(
            room_id=room_id, product_id=product_id, sku=pool.sku, title=pool.title, description="", image_url="",
            unit_price=pool.unit_price, currency=pool.currency))
        return product_id

    # -- viewers -----------------------------------------------------------------------------------

    async def enter(self, viewer: Identity, room_id: str, draw_id: str, watched_ms: int,
                    keyword_seen: bool = False) -> dict[str, Any]:
        """``entry_result``'s fields: ENTERED (with ``entry_id``), ALREADY_ENTERED, NOT_ELIGIBLE (with
        ``message``), ENDED or NOT_FOUND. ``keyword_seen``: the viewer just commented the keyword."""
        terms = await self._fixed(draw_id)
        if terms is None or terms.room_id != room_id:
            return {"code": "NOT_FOUND", "draw": draw_id, "message": f"no draw {draw_id} in this room"}
        k = draw_keys(draw_id)
        user = viewer.user
        async with self.redis.pipeline(transaction=False) as p:
            p.hget(k.meta, "state")
            p.hget(k.entrants, user)
            p.hexists(k.meta, f"kw:{user}")
            state, mine, kw_before = await p.execute()
        if mine is not None:
            return {"code": "ALREADY_ENTERED", "draw": draw_id, "entry_id": _s(mine)}
        if state is None or _s(state) == "new":
            return {"code": "NOT_FOUND", "draw": draw_id, "message": f"no draw {draw_id} in this room"}
        if _s(state) != "open":
            return {"code": "ENDED", "draw": draw_id, "message": "entries to this draw have closed"}
        rule = terms.rule
        if rule.get("keyword") and keyword_seen and not kw_before:  # remembered for a later enter_draw
            await self.redis.hset(k.meta, f"kw:{user}", "1")
        why = await self._not_eligible(viewer, room_id, rule, watched_ms, bool(keyword_seen or kw_before))
        if why:
            return {"code": "NOT_ELIGIBLE", "draw": draw_id, "message": why}
        code, eid, _count = await self._enter(keys=[k.meta, k.entrants, k.present],
                                              args=[user, proof.entry_id(terms.mask, user), self.ttl_ms])
        code = _s(code)
        out: dict[str, Any] = {"code": code, "draw": draw_id}
        if code in ("ENTERED", "ALREADY_ENTERED"):
            out["entry_id"] = _s(eid)
        elif code == "ENDED":
            out["message"] = "entries to this draw have closed"
        elif code == "NOT_FOUND":
            out["message"] = f"no draw {draw_id} in this room"
        if code == "ENTERED":
            self.live.mark(room_id, "draws", draw_id)
        return out

    async def _not_eligible(self, viewer: Identity, room_id: str, rule: dict[str, Any], watched_ms: int,
                            keyword: bool) -> str:
        """Why the viewer may not enter ("" = they may): every part of the rule the host set."""
        if rule.get("keyword") and not keyword:
            return f"comment the keyword \"{rule['keyword']}\" to enter this draw"
        if rule.get("team") and await self.teams.team_of(room_id, viewer.user) != rule["team"]:
            return f"only members of team {rule['team']} may enter this draw"
        need = int(rule.get("watched_s") or 0)
        if need and watched_ms < need * 1000:
            return (f"watch the show for {need} s before entering (this connection: {max(0, watched_ms) // 1000} s "
                    f"without a break)")
        if rule.get("bought") and not await self._bought(viewer.user, room_id):
            return "only viewers who paid for an order in this show may enter this draw"
        return ""

    async def _bought(self, user: str, room_id: str) -> bool:
        """A settled order in the room (SQL), or a paid hold of one of the room's sales being settled."""
        if await self.sql.paid_in_room(user, room_id):
            return True
        for h in await self.checkout.my_holds.recent(user, 50):
            if h.status == "confirmed" and not h.channel and PRIZE_SALE_MARK not in h.sale_id:
                counters = await self.inventory.counters(h.sale_id)
                if counters is not None and counters.room_id == room_id:
                    return True
        return False

    async def on_comment(self, viewer: Identity, room_id: str, draw_ids: list[str], watched_ms: int) -> None:
        """A comment holding the keyword of these open draws enters the viewer (refusals stay quiet; a
        fresh entry is told to the viewer's sockets as an ``entry_result`` without ``rid``)."""
        for draw_id in draw_ids:
            try:
                out = await self.enter(viewer, room_id, draw_id, watched_ms, keyword_seen=True)
                if out["code"] == "ENTERED":
                    await self.bus.to_user(room_id, viewer.user, {"type": "entry_result", "rid": None, **out})
            except Exception as exc:  # the comment itself went out: an entry failure must not fail it
                log.warning("draw %s: keyword entry of %s failed: %s", draw_id, viewer.user, exc)

    async def seen(self, room_id: str, draw_ids: list[str], users: list[str], now_ms: int) -> None:
        """The viewers connected to the room on one gateway (every second): one script per open draw,
        which scores them with Redis TIME (the draw's clock; ``now_ms``, the gateway's, is not needed)."""
        users = [u for u in users if u]
        if not users:
            return
        for draw_id in draw_ids:
            k = draw_keys(draw_id)
            await self._seen(keys=[k.meta, k.present], args=[self.ttl_ms, *users])

    # -- reading -------------------------------------------------------------------------------------

    async def get(self, draw_id: str) -> dict[str, Any]:
        """The public Draw (the seed only once drawn)."""
        m = await self._load(draw_id)
        if m.get("terms") is not None:
            return await self._wire(draw_id, m)
        rec = await self.sql.get(draw_id)
        if rec is None:
            raise NotFound(f"no draw {draw_id}")
        return _record_wire(rec)

    async def entrants(self, draw_id: str) -> dict[str, Any]:
        """The published entrant list and what checks it (docs/DRAWS.md); NOT_STARTED before the draw."""
        m = await self._load(draw_id)
        if m.get("terms") is not None:
            if m.get("state") not in ("drawn", "done"):
                terms = orjson.loads(m["terms"])
                raise Refused(ErrorCode.NOT_STARTED, f"the entrant list of draw {draw_id} is published when entries "
                                                     f"close, at {terms['entry_until']} (server time, ms)")
            terms = orjson.loads(m["terms"])
            return {"draw_id": draw_id, "commitment": terms["commitment"], "list_hash": m["list_hash"],
                    "seed": m["seed"], "k": terms["winners"], "entrants": orjson.loads(m["list"]),
                    "winner_ids": orjson.loads(m["winners"]), "redraws": orjson.loads(m.get("redraws") or "[]")}
        rec = await self.sql.get(draw_id)
        if rec is None:
            raise NotFound(f"no draw {draw_id}")
        if rec.state != "drawn":
            raise Refused(ErrorCode.NOT_STARTED, f"the entrant list of draw {draw_id} is published when entries "
                                                 f"close, at {rec.entry_until_ms} (server time, ms)")
        return {"draw_id": draw_id, "commitment": rec.commitment, "list_hash": rec.list_hash, "seed": rec.seed,
                "k": rec.k, "entrants": orjson.loads(rec.entrants), "winner_ids": orjson.loads(rec.winner_ids),
                "redraws": orjson.loads(rec.redraws)}

    async def _load(self, draw_id: str) -> dict[str, str]:
        vals = await self.redis.hmget(draw_keys(draw_id).meta, list(_FIELDS))
        return {f: _s(v) for f, v in zip(_FIELDS, vals, strict=True) if v is not None}

    async def _wire(self, draw_id: str, m: dict[str, str]) -> dict[str, Any]:
        terms = orjson.loads(m["terms"])
        drawn = m.get("state") in ("drawn", "done")
        if drawn:
            return {**terms, "state": "drawn", "entrants": len(orjson.loads(m["list"])), "list_hash": m["list_hash"],
                    "seed": m["seed"], "winner_ids": orjson.loads(m["winners"]),
                    "redraws": orjson.loads(m.get("redraws") or "[]")}
        return {**terms, "state": "open", "entrants": int(await self.redis.hlen(draw_keys(draw_id).entrants))}

    async def _fixed(self, draw_id: str) -> Terms | None:
        """The draw's fixed terms (room, rule, mask key, entry window), cached in this process."""
        got = self._terms.get(draw_id)
        if got is not None:
            return got
        vals = await self.redis.hmget(draw_keys(draw_id).meta, ["room", "terms", "until", "mask", "sale"])
        if any(v is None for v in vals[:4]):
            return None
        room, terms, until, mask, sale = (_s(v) if v is not None else "" for v in vals)
        got = Terms(draw_id, room, orjson.loads(terms), int(until), bytes.fromhex(mask), sale)
        self._terms[draw_id] = got
        while len(self._terms) > TERMS_CACHED:
            self._terms.popitem(last=False)
        return got

    async def _live_counts(self, room_id: str, ids: set[str]) -> object:
        """The ambient lane's ``draws: {draw_id: {entrants}}``."""
        order = sorted(ids)
        async with self.redis.pipeline(transaction=False) as p:
            for draw_id in order:
                p.hlen(draw_keys(draw_id).entrants)
            counts = await p.execute()
        return {d: {"entrants": int(n)} for d, n in zip(order, counts, strict=True)}

    # -- the draw and its rounds (the "draw" deadline) -------------------------------------------------

    async def _due(self, draw_id: str) -> int | None:
        """Advance the draw as far as it goes now; the next instant to look again, or None: done."""
        k = draw_keys(draw_id)
        token = secrets.token_hex(8)
        got = int(await self._lease(keys=[k.meta], args=[token, LEASE_MS, "take"]))
        if got < 0:
            return None  # no such draw (any more)
        if got == 0:
            return await self.inventory.now_ms() + 1_000  # another process is at it
        try:
            return await self._advance(draw_id, token)
        finally:
            await self._lease(keys=[k.meta], args=[token, 0, "drop"])

    async def _set(self, draw_id: str, token: str, values: dict[str, Any], expect: tuple[str, str] = ("", ""),
                   not_before: int = 0) -> None:
        pairs: list[Any] = []
        for f, v in values.items():
            pairs += [f, v]
        ok = await self._update(keys=[draw_keys(draw_id).meta],
                                args=[token, expect[0], expect[1], not_before, self.ttl_ms, *pairs])
        if not int(ok):
            raise RuntimeError(f"draw {draw_id}: step from {expect} not written (lease lost or state moved)")

    async def _advance(self, draw_id: str, token: str) -> int | None:
        terms = await self._fixed(draw_id)
        if terms is None:
            return None
        for _ in range(1_000):  # one state transition per pass; bounded
            m = await self._load(draw_id)
            state = m.get("state", "")
            if state in ("new", "open"):
                if await self.inventory.now_ms() < terms.until:
                    return terms.until
                await self._set(draw_id, token, {"state": "drawing"}, ("state", state), terms.until)
            elif state == "drawing":
                await self._draw(draw_id, token, terms, m)
            elif state == "drawn" and m.get("round_state") == "pending":
                await self._hand_out(draw_id, token, terms, m)
            elif state == "drawn":
                nxt = await self._end_round(draw_id, token, terms, m)
                if nxt is not None:
                    return nxt
            elif state == "done":
                await self._finish(draw_id, token, terms, m)
                return None
            else:
                log.warning("draw %s in an unknown state %r", draw_id, state)
                return None
        return await self.inventory.now_ms() + 1_000

    async def _draw(self, draw_id: str, token: str, terms: Terms, m: dict[str, str]) -> None:
        """Entries are closed (nothing changes the entrants or their presence any more): the list of the
        entrants present at the draw, its hash, the ranking and the winners; SQL first, then Redis."""
        k = draw_keys(draw_id)
        entered = {_s(u): _s(e) for u, e in (await self.redis.hgetall(k.entrants)).items()}
        present = {_s(u) for u in await self.redis.zrangebyscore(k.present, terms.until - PRESENT_MS, "+inf")}
        users = {eid: user for user, eid in entered.items() if user in present}
        entries = sorted(users)
        seed = bytes.fromhex(m["seed"])
        lhash = proof.list_hash(entries)
        order = proof.ranking(seed, entries)
        winners = order[:int(terms.wire["winners"])]
        now = await self.inventory.now_ms()
        await self.sql.drawn(draw_id, m["seed"], lhash, _json(entries), _json(winners), now)
        await self._set(draw_id, token, {
            "state": "drawn", "list": _json(entries), "order": _json(order), "users": _json(users), "list_hash": lhash,
            "winners": _json(winners), "round": 0, "round_state": "pending", "pos": len(winners),
            "new": _json(winners), "holders": "{}", "redraws": "[]", "drawn_at": now}, ("state", "drawing"))

    async def _hand_out(self, draw_id: str, token: str, terms: Terms, m: dict[str, str]) -> None:
        """Round ``round``'s prizes to its new winners, the room told (``draw_result`` for round 0,
        ``draw_redrawn`` after), each winner sent ``draw_won``."""
        r = int(m["round"])
        users: dict[str, str] = orjson.loads(m["users"])
        new: list[str] = orjson.loads(m["new"])
        prize = terms.prize
        won: dict[str, dict[str, Any]] = {}
        holders: dict[str, str] = {}
        now = round_due = await self.inventory.now_ms()
        if "pool" in prize and new:
            units = int(prize["units"])
            results = await self.inventory.reserve_many(
                terms.sale, [ReserveRequest(users[e], units, f"draw-{draw_id}-{r}") for e in new])
            index: dict[str, dict[str, int]] = {}
            for e, res in zip(new, results, strict=True):
                holders[e] = res.hold_id or ""
                if res.ok and res.hold_id:
                    pay_by = int(res.at_ms or 0)
                    round_due = max(round_due, pay_by)
                    won[e] = {"hold": res.hold_id, "pay_by": pay_by}
                    index.setdefault(users[e], {})[res.hold_id] = now
                else:  # e.g. the pool's per-SKU limit: this prize goes to the next entrant at the round's end
                    log.warning("draw %s: no prize hold for %s: %s", draw_id, e, res.code.value)
                    won[e] = {"hold": None, "pay_by": None}
            await self.checkout.my_holds.add_many(index)  # the winners see it in GET /api/me/orders
        elif new:
            for e in new:
                coupon = await self.coupons.grant(f"{draw_id}-prize", users[e])
                won[e] = {"coupon": coupon, "pay_by": coupon.get("expires_at")}
        wire = await self._wire(draw_id, await self._load(draw_id))
        if r == 0:
            await self.bus.publish(terms.room_id, ev.draw_result(wire), {f"draw:{draw_id}": wire},
                                   once=f"draw_result:{draw_id}")
        else:
            last = orjson.loads(m["redraws"])[-1]
            await self.bus.publish(terms.room_id, ev.draw_redrawn(wire, r, last["replaced"], last["added"]),
                                   {f"draw:{draw_id}": wire}, once=f"draw_redrawn:{draw_id}:{r}")
        for e in new:
            await self.bus.to_user(terms.room_id, users[e], {"type": "draw_won", "draw_id": draw_id, "entry_id": e,
                                                              "prize": prize, **won[e]})
        done = "pool" not in prize or not new
        await self._set(draw_id, token, {"round_state": "out", "holders": _json(holders), "round_due": round_due,
                                         **({"state": "done"} if done else {})}, ("round_state", "pending"))

    async def _end_round(self, draw_id: str, token: str, terms: Terms, m: dict[str, str]) -> int | None:
        """The round's prizes: while one can still be paid, the next instant to look (its pay-by, or
        sooner to see all paid early); then the unpaid ones go to the next entrants of the ranking
        (a new round), or the draw is done."""
        holders: dict[str, str] = orjson.loads(m["holders"])
        now = await self.inventory.now_ms()
        unpaid: list[tuple[str, str]] = []  # (entry id, hold id still held past its pay-by, or "")
        waiting = False
        for e, hold_id in holders.items():
            h = await self.inventory.get_hold(hold_id) if hold_id else None
            if h is not None and h.status == "confirmed":
                continue
            if h is not None and h.status == "held" and now < h.pay_by_ms:
                waiting = True
            else:
                unpaid.append((e, hold_id if h is not None and h.status == "held" else ""))
        if waiting:
            return max(now + 1_000, min(int(m["round_due"]), now + ROUND_POLL_MS))
        order: list[str] = orjson.loads(m["order"])
        pos = int(m["pos"])
        added = order[pos:pos + len(unpaid)]
        if not added:
            await self._set(draw_id, token, {"state": "done"}, ("round_state", "out"))
            return None
        for _, hold_id in unpaid:  # past its pay-by: its units go back now for the next winners
            if hold_id:
                await self.inventory.release(hold_id, "")
        r = int(m["round"]) + 1
        redraws = [*orjson.loads(m["redraws"]), {"round": r, "replaced": [e for e, _ in unpaid], "added": added}]
        await self.sql.redrawn(draw_id, _json(redraws))
        await self._set(draw_id, token, {"round": r, "round_state": "pending", "pos": pos + len(added),
                                         "new": _json(added), "redraws": _json(redraws)}, ("round_state", "out"))
        return None

    async def _finish(self, draw_id: str, token: str, terms: Terms, m: dict[str, str]) -> None:
        """Every prize is paid or the list is exhausted: the prize sale ends and what it still has goes
        back to its pool."""
        if terms.sale and m.get("closed") != "1":
            await self._end_prize_sale(terms.sale)
            await self._set(draw_id, token, {"closed": "1"}, ("state", "done"))

    async def _end_prize_sale(self, sale_id: str) -> None:
        await self.inventory.close(sale_id)
        await self.inventory.pools.give_back(sale_id)


def _record_wire(rec: DrawRecord) -> dict[str, Any]:
    """The public Draw from its SQL row (after Redis forgot it)."""
    out: dict[str, Any] = {
        "draw_id": rec.draw_id, "room_id": rec.room_id, "title": rec.title, "prize": orjson.loads(rec.prize),
        "winners": rec.k, "rule": orjson.loads(rec.rule), "opened_at": rec.opened_at_ms,
        "entry_until": rec.entry_until_ms, "pay_within_s": rec.pay_within_s, "commitment": rec.commitment,
        "state": rec.state, "entrants": len(orjson.loads(rec.entrants))}
    if rec.state == "drawn":
        out.update(list_hash=rec.list_hash, seed=rec.seed, winner_ids=orjson.loads(rec.winner_ids),
                   redraws=orjson.loads(rec.redraws))
    return out

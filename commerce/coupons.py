"""Coupon drops (docs/PROTOCOL.md Interaction, Coupon drops): the host drops N coupons, viewers claim
them in a burst (``coupon_claim.lua``: never more than N, never two to one viewer, every loser told
why), and a claimed coupon is redeemed at most once at pay.

Redeeming touches the drop's keys (its hash slot) and the sale's (another slot), so it is an
idempotent two-step that recovers after a crash between the steps:

1. ``coupon_lock.lua`` (drop slot) locks the viewer's coupon to one hold, until the hold's pay-by;
   a second payment with the same coupon is refused (``COUPON_USED``);
2. ``confirm.lua`` (sale slot) confirms the hold with the discount, recorded on the hold (``cp``,
   ``dc``) and on its order;
3. ``coupon_finish.lua`` (drop slot) marks the coupon redeemed (or claimed again when the hold was
   not confirmed).

``recover`` finishes what a stopped process left between the steps, from the hold's record: a
confirmed hold that names the coupon makes it redeemed; a hold still payable keeps the lock; any
other makes it claimed again."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from dataclasses import dataclass
from typing import Any

import orjson

from inventory.domain import Hold
from inventory.keys import PREFIX, drop_keys, wallet_key
from inventory.scripts import Inventory
from inventory.store import SaleRecord, Store

from . import events as ev
from .batcher import Batcher
from .due import DueTimers
from .errors import Conflict, ErrorCode, NotFound, Refused
from .identity import Identity
from .interaction_part import InteractionPart
from .signals import SignalKind
from .interaction_requests import CouponTerms, DropCoupons
from .live_counts import LiveCounts
from .lua_scripts import script
from .room_bus import RoomBus
from .tasks import OwnedTasks
from .teams import Teams

__all__ = ["Coupons", "Terms", "discount_for", "APPLYING_REGISTRY"]

log = logging.getLogger(__name__)

APPLYING_REGISTRY = f"{PREFIX}:coupons:applying"  # SET of drop ids with coupons locked to a hold (for recover)
RECOVER_EVERY_S = 2.0
WALLET_MAX = 200
TERMS_KEPT = 1000  # drops whose fixed fields a process keeps
_FIXED = ("room", "kind", "value", "currency", "min_spend", "sales", "products", "team", "count", "prize",
          "starts_at", "claim_until", "expires_at")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True, slots=True)
class Terms:
    """What a drop's coupons take off, and where they apply."""
    room_id: str
    kind: str           # amount | percent
    value: int
    currency: str
    min_spend: int
    sales: tuple[str, ...]
    products: tuple[str, ...]

    @classmethod
    def of(cls, meta: dict[str, str]) -> Terms:
        return cls(meta["room"], meta["kind"], int(meta["value"]), meta["currency"], int(meta["min_spend"]),
                   tuple(orjson.loads(meta["sales"])), tuple(orjson.loads(meta["products"])))


def discount_for(terms: Terms, sale: SaleRecord, qty: int) -> int:
    """The discount a coupon gives on ``qty`` units of ``sale``; COUPON_NOT_APPLICABLE says why not. Pure."""
    if sale.deposit:
        raise Refused(ErrorCode.COUPON_NOT_APPLICABLE, "coupons do not apply to pre-sales")
    if terms.sales or terms.products:
        if sale.sale_id not in terms.sales and sale.product_id not in terms.products:
            raise Refused(ErrorCode.COUPON_NOT_APPLICABLE, "this coupon is not for this sale or product")
    elif sale.room_id != terms.room_id:
        raise Refused(ErrorCode.COUPON_NOT_APPLICABLE, "this coupon is for the sales of another room")
    if terms.kind == "amount" and sale.currency != terms.currency:
        raise Refused(ErrorCode.COUPON_NOT_APPLICABLE,
                      f"this coupon is in {terms.currency}, the sale in {sale.currency}")
    list_total = sale.unit_price * qty
    if list_total < terms.min_spend:
        raise Refused(ErrorCode.COUPON_NOT_APPLICABLE,
                      f"this coupon needs a spend of at least {terms.min_spend} (this order: {list_total})")
    if terms.kind == "amount":
        return min(terms.value, list_total)
    return list_total * terms.value // 100


async def _deliver(work: Awaitable[dict[str, Any]], done: Callable[[dict[str, Any] | BaseException], None]) -> None:
    try:
        out = await work
    except Exception as exc:  # Redis unreachable: the viewer gets INTERNAL and may retry with the same rid
        done(exc)
        return
    done(out)


def drop_state(meta: dict[str, str], now_ms: int) -> str:
    state = meta.get("state", "open")
    if state in ("claimed_out", "ended"):
        return state
    if now_ms < int(meta["starts_at"]):
        return "scheduled"
    return "ended" if now_ms >= int(meta["claim_until"]) else "open"


def drop_wire(drop_id: str, meta: dict[str, str], now_ms: int) -> dict[str, Any]:
    count, claimed = int(meta["count"]), int(meta.get("claimed", 0))
    return {"drop_id": drop_id, "room_id": meta["room"], "kind": meta["kind"], "value": int(meta["value"]),
            "currency": meta["currency"], "min_spend": int(meta["min_spend"]),
            "sales": orjson.loads(meta["sales"]), "products": orjson.loads(meta["products"]),
            "team": meta.get("team") or None, "count": count, "claimed": claimed,
            "redeemed": int(meta.get("redeemed", 0)), "left": max(0, count - claimed),
            "starts_at": int(meta["starts_at"]), "claim_until": int(meta["claim_until"]),
            "expires_at": int(meta["expires_at"]), "state": drop_state(meta, now_ms)}


def coupon_wire(drop_id: str, meta: dict[str, str], claim: dict[str, Any], now_ms: int) -> dict[str, Any]:
    state = {"c": "claimed", "a": "applying", "r": "redeemed"}[claim["s"]]
    if state != "redeemed" and now_ms >= int(meta["expires_at"]):
        state = "expired"
    out = {"drop_id": drop_id, "room_id": meta["room"], "kind": meta["kind"], "value": int(meta["value"]),
           "currency": meta["currency"], "min_spend": int(meta["min_spend"]), "sales": orjson.loads(meta["sales"]),
           "products": orjson.loads(meta["products"]), "claimed_at": int(claim["t"]),
           "expires_at": int(meta["expires_at"]), "state": state}
    if claim.get("o"):
        out["order_id"] = claim["o"]
    return out


class Coupons(InteractionPart):
    def __init__(self, store: Store, bus: RoomBus, inventory: Inventory, live: LiveCounts, due: DueTimers,
                 teams: Teams) -> None:
        super().__init__(store, bus, inventory, live, due)
        self.teams = teams
        self._create = script(self.redis, "coupon_drop")
        self._claim = script(self.redis, "coupon_claim")
        self._lock = script(self.redis, "coupon_lock")
        self._finish = script(self.redis, "coupon_finish")
        self._recovered_at = 0.0
        self._terms: dict[str, dict[str, str]] = {}  # drop id -> its fixed fields (``_terms_of``)
        self.claims: Batcher[tuple[str, str, str], Any] = Batcher(self._claim_many, "coupon claim batch")
        self._tasks = OwnedTasks(log, "coupon claim")  # the claims answered after a read or a wallet write
        live.register("drops", self._live)
        due.register("drop", self._claim_window_over)

    # -- host --------------------------------------------------------------------------------------

    async def drop(self, room_id: str, req: DropCoupons) -> dict[str, Any]:
        if req.kind == "percent" and req.value > 100:
            raise Refused(ErrorCode.INVALID, "a percent coupon's value must be between 1 and 100")
        if req.team is not None:
            definition = await self.teams.definition(room_id)
            if definition is None or req.team not in {t["team_id"] for t in definition["teams"]}:
                raise NotFound(f"no team {req.team} in room {room_id}")
        drop_id = req.drop_id or "d-" + secrets.token_hex(4)
        terms = {"kind": req.kind, "value": req.value, "currency": req.currency, "min_spend": req.min_spend,
                 "sales": orjson.dumps(list(req.sales)).decode(), "products": orjson.dumps(list(req.products)).decode(),
                 "team": req.team or "", "count": req.count, "prize": "0"}
        meta = await self._create_drop(room_id, drop_id, terms, req.starts_in_s * 1000, req.claim_s * 1000,
                                       req.valid_s * 1000)
        self._remember(drop_id, meta)  # this process's claims go straight into the batch
        now = await self.inventory.now_ms()
        wire = drop_wire(drop_id, meta, now)
        await self.bus.publish(room_id, ev.coupon_drop(wire), {f"drop:{drop_id}": wire})
        await self.due.schedule("drop", drop_id, int(meta["claim_until"]) + 1)
        return wire

    async def _create_drop(self, room_id: str, drop_id: str, terms: dict[str, Any], starts_in_ms: int,
                           claim_ms: int, valid_ms: int) -> dict[str, str]:
        k = drop_keys(drop_id)
        args: list[Any] = [room_id, self.bus.retain_room_ms, starts_in_ms, claim_ms, valid_ms]
        for f, v in terms.items():
            args += [f, v]
        code, owner = await self._create(keys=[k.meta], args=args)
        meta = await self._meta(drop_id)
        if _text(code) == "EXISTS":
            if _text(owner) != room_id:
                raise Conflict(f"drop id {drop_id} is used in another room")
            if meta is None or any(str(meta.get(f)) != str(v) for f, v in terms.items()):
                raise Conflict(f"drop {drop_id} exists with other terms")
        if meta is None:
            raise NotFound(f"no drop {drop_id}")
        return meta

    async def end(self, room_id: str, drop_id: str) -> dict[str, Any]:
        meta = await self._meta(drop_id)
        if meta is None or meta["room"] != room_id:
            raise NotFound(f"no drop {drop_id} in room {room_id}")
        await self._close(drop_id, "ended")
        return await self.get(drop_id)

    async def _close(self, drop_id: str, state: str) -> bool:
        """Close claims once (open -> ``state``); the caller that closed it announces coupon_drop_ended."""
        k = drop_keys(drop_id)
        flipped = await self.redis.eval(
            "if redis.call('HGET', KEYS[1], 'state') == 'open' then redis.call('HSET', KEYS[1], 'state', ARGV[1]) "
            "return 1 end return 0", 1, k.meta, state)
        if int(flipped):
            await self._announce_end(drop_id)
        return bool(int(flipped))

    async def _announce_end(self, drop_id: str) -> None:
        meta = await self._meta(drop_id)
        if meta is None:
            return
        wire = drop_wire(drop_id, meta, await self.inventory.now_ms())
        if meta.get("prize") != "1":
            await self.bus.publish(meta["room"], ev.coupon_drop_ended(wire), {f"drop:{drop_id}": wire})

    async def _claim_window_over(self, drop_id: str) -> int | None:
        meta = await self._meta(drop_id)
        if meta is not None and meta.get("state") == "open":
            await self._close(drop_id, "ended")
        return None

    # -- viewers -----------------------------------------------------------------------------------

    async def claim(self, viewer: Identity, room_id: str | None, drop_id: str, request_id: str) -> dict[str, Any]:
        """``claim_result``'s fields: {code, drop, left, coupon?}. Claims of one drop arriving together are
        decided by one script call (``Batcher``), like the buys of a sale."""
        terms = await self._terms_of(drop_id)
        if terms is None or (room_id is not None and terms["room"] != room_id) or terms.get("prize") == "1":
            return {"code": "NOT_FOUND", "drop": drop_id, "left": 0}
        team = ""
        if terms.get("team"):
            team = await self.teams.team_of(terms["room"], viewer.user) or ""
        reply = await self.claims.call(drop_id, (viewer.user, request_id or "r-" + secrets.token_hex(4), team))
        return await self._answer(viewer.user, drop_id, terms, reply)

    def submit_claim(self, viewer: Identity, room_id: str | None, drop_id: str, request_id: str,
                     done: Callable[[dict[str, Any] | BaseException], None]) -> None:
        """``claim`` for the burst: a drop whose terms this process knows (and no team rule) goes straight
        into the batch, and a losing claim is answered from the batch's result loop (no task of its own);
        a winning one writes the viewer's wallet before ``done`` gets its answer."""
        terms = self._terms.get(drop_id)
        if terms is None or terms.get("team"):  # a read first (the terms, the viewer's team)
            self._tasks.spawn(_deliver(self.claim(viewer, room_id, drop_id, request_id), done))
            return
        if (room_id is not None and terms["room"] != room_id) or terms.get("prize") == "1":
            done({"code": "NOT_FOUND", "drop": drop_id, "left": 0})
            return
        self.claims.submit(drop_id, (viewer.user, request_id or "r-" + secrets.token_hex(4), ""),
                            partial(self._decided, viewer.user, drop_id, terms, done))

    def _decided(self, user: str, drop_id: str, terms: dict[str, str],
                 done: Callable[[dict[str, Any] | BaseException], None], reply: Any) -> None:
        if isinstance(reply, BaseException):
            done(reply)
        elif _text(reply[0]) in ("CLAIMED", "ALREADY_CLAIMED") or int(reply[3]):  # a coupon to show, an end to tell
            self._tasks.spawn(_deliver(self._answer(user, drop_id, terms, reply), done))
        else:
            done({"code": _text(reply[0]), "drop": drop_id, "left": int(reply[2])})

    async def _claim_many(self, drop_id: str, reqs: Sequence[tuple[str, str, str]], grant: bool = False) -> list[Any]:
        k = drop_keys(drop_id)
        args: list[Any] = ["1" if grant else "0"]
        for user, rid, team in reqs:
            args += (user, rid, team)
        return list(await self._claim(keys=[k.meta, k.claims], args=args))

    async def _answer(self, user: str, drop_id: str, terms: dict[str, str], reply: Any) -> dict[str, Any]:
        code = _text(reply[0])
        claimed_at, left, last, fresh = (int(v) for v in reply[1:5])
        out: dict[str, Any] = {"code": code, "drop": drop_id, "left": left}
        if fresh:  # just claimed: the coupon is as the script wrote it
            if self.signals is not None:
                self.signals.record(SignalKind.COUPON_CLAIMED, user, terms.get("room", ""), ref=drop_id)
            out["coupon"] = coupon_wire(drop_id, terms, {"s": "c", "t": claimed_at}, claimed_at)
            async with self.redis.pipeline(transaction=False) as p:
                p.zadd(wallet_key(user), {drop_id: claimed_at})
                p.pexpireat(wallet_key(user), int(terms["expires_at"]) + self.bus.retain_room_ms)
                await p.execute()
            self.live.mark(terms["room"], "drops", drop_id)
        elif code in ("CLAIMED", "ALREADY_CLAIMED"):  # the one the viewer holds, in its state now
            claim = await self._claim_of(drop_id, user)
            if claim is not None:
                out["coupon"] = coupon_wire(drop_id, terms, claim, await self.inventory.now_ms())
        if last:
            await self._announce_end(drop_id)
        return out

    async def _terms_of(self, drop_id: str) -> dict[str, str] | None:
        """A drop's fields that never change after it is dropped (its room, terms, team, times), read once
        per process: a claim then costs one script call."""
        terms = self._terms.get(drop_id)
        if terms is None:
            meta = await self._meta(drop_id)
            if meta is None:
                return None
            terms = self._remember(drop_id, meta)
        return terms

    def _remember(self, drop_id: str, meta: dict[str, str]) -> dict[str, str]:
        terms = {f: meta[f] for f in _FIXED if f in meta}
        if len(self._terms) >= TERMS_KEPT:
            self._terms.pop(next(iter(self._terms)))
        self._terms[drop_id] = terms
        return terms

    async def prize_drop(self, room_id: str, drop_id: str, terms: CouponTerms, count: int) -> dict[str, Any]:
        """A hidden drop whose coupons only ``grant`` hands out (a draw's coupon prize): no claim
        window (its coupons are valid ``terms.valid_s`` from now), not announced, not claimable."""
        fields = {"kind": terms.kind, "value": terms.value, "currency": terms.currency,
                  "min_spend": terms.min_spend, "sales": "[]", "products": "[]", "team": "", "count": count,
                  "prize": "1"}
        if terms.kind == "percent" and terms.value > 100:
            raise Refused(ErrorCode.INVALID, "a percent coupon's value must be between 1 and 100")
        meta = await self._create_drop(room_id, drop_id, fields, 0, terms.valid_s * 1000, terms.valid_s * 1000)
        return drop_wire(drop_id, meta, await self.inventory.now_ms())

    async def grant(self, drop_id: str, user: str) -> dict[str, Any]:
        """Give ``user`` a coupon of a prize drop (idempotent per user): the Coupon."""
        terms = await self._terms_of(drop_id)
        if terms is None:
            raise NotFound(f"no drop {drop_id}")
        (reply,) = await self._claim_many(drop_id, [(user, f"grant-{drop_id}", "")], grant=True)
        out = await self._answer(user, drop_id, terms, reply)
        if "coupon" not in out:
            raise Refused(ErrorCode(out["code"]) if out["code"] in ErrorCode.__members__ else ErrorCode.CONFLICT,
                          f"the prize coupon could not be granted: {out['code']}")
        coupon: dict[str, Any] = out["coupon"]
        return coupon

    async def wallet(self, viewer: Identity) -> list[dict[str, Any]]:
        """The viewer's coupons, newest first (at most ``WALLET_MAX``)."""
        drops = await self.redis.zrevrange(wallet_key(viewer.user), 0, WALLET_MAX - 1)
        now = await self.inventory.now_ms()
        out = []
        for raw in drops:
            drop_id = _text(raw)
            meta, claim = await self._meta(drop_id), await self._claim_of(drop_id, viewer.user)
            if meta is not None and claim is not None:
                out.append(coupon_wire(drop_id, meta, claim, now))
        return out

    async def get(self, drop_id: str) -> dict[str, Any]:
        meta = await self._meta(drop_id)
        if meta is None:
            raise NotFound(f"no drop {drop_id}")
        return drop_wire(drop_id, meta, await self.inventory.now_ms())

    # -- redeeming at pay ----------------------------------------------------------------------------

    async def lock_for(self, viewer: Identity, hold: Hold, drop_id: str, sale: SaleRecord | None) -> int:
        """Step 1: check the coupon applies to the hold and lock it to the hold; the discount. Refused:
        NOT_FOUND, COUPON_NOT_APPLICABLE, COUPON_USED, COUPON_EXPIRED."""
        meta = await self._meta(drop_id)
        claim = await self._claim_of(drop_id, viewer.user) if meta is not None else None
        if meta is None or claim is None:
            raise Refused(ErrorCode.NOT_FOUND, f"you have no coupon of drop {drop_id}")
        if claim["s"] in ("a", "r") and claim.get("h") != hold.hold_id:  # the script decides; this says it first
            raise Refused(ErrorCode.COUPON_USED, "this coupon was used for another payment")
        if claim["s"] == "c" and await self.inventory.now_ms() >= int(meta["expires_at"]):
            raise Refused(ErrorCode.COUPON_EXPIRED, "this coupon has expired")
        if sale is None:
            raise Refused(ErrorCode.COUPON_NOT_APPLICABLE, "this coupon does not apply to this hold")
        discount = discount_for(Terms.of(meta), sale, hold.qty)
        k = drop_keys(drop_id)
        await self.redis.sadd(APPLYING_REGISTRY, drop_id)
        (code,) = await self._lock(keys=[k.meta, k.claims, k.applying], args=[viewer.user, hold.hold_id,
                                                                             hold.pay_by_ms])
        code = _text(code)
        if code in ("LOCKED", "REDEEMED"):
            return discount
        if code == "COUPON_USED":
            raise Refused(ErrorCode.COUPON_USED, "this coupon was used for another payment")
        if code == "COUPON_EXPIRED":
            raise Refused(ErrorCode.COUPON_EXPIRED, "this coupon has expired")
        raise Refused(ErrorCode.NOT_FOUND, f"you have no coupon of drop {drop_id}")

    async def finish(self, user: str, drop_id: str, hold_id: str, payable_ok: bool = False,
                     hold: Hold | None = None) -> None:
        """Step 3, from the hold's record (``hold``: as the caller just read it, else read here):
        redeemed when the hold was confirmed with this coupon, else claimed again (``payable_ok``: a hold
        still payable keeps the lock, e.g. a provider payment that has not arrived yet)."""
        if hold is None:
            hold = await self.inventory.get_hold(hold_id)
        await self._settle_lock(user, drop_id, hold_id, hold, payable_ok=payable_ok)

    async def _settle_lock(self, user: str, drop_id: str, hold_id: str, hold: Hold | None, payable_ok: bool) -> str:
        k = drop_keys(drop_id)
        if hold is not None and hold.status == "confirmed" and hold.coupon == drop_id:
            outcome, arg = "redeemed", hold_id
        elif (payable_ok and hold is not None and hold.status == "held"
              and hold.pay_by_ms > await self.inventory.now_ms()):
            outcome, arg = "extend", str(hold.pay_by_ms)
        else:
            outcome, arg = "claimed", ""
        code, _ = await self._finish(keys=[k.meta, k.claims, k.applying], args=[user, hold_id, outcome, arg])
        code = _text(code)
        if code in ("REDEEMED", "CLAIMED"):
            meta = await self._meta(drop_id)
            if meta is not None:
                self.live.mark(meta["room"], "drops", drop_id)
                if code == "REDEEMED" and self.signals is not None and hold is not None:
                    self.signals.record(SignalKind.COUPON_REDEEMED, user, meta["room"], sale=hold.sale_id,
                                        ref=drop_id)
        return code

    async def recover(self) -> None:
        """Finish the redemptions a stopped process left between the steps (locks whose lapse passed)."""
        mono = time.monotonic()
        if mono - self._recovered_at < RECOVER_EVERY_S:
            return
        self._recovered_at = mono
        now = await self.inventory.now_ms()
        for raw in await self.redis.smembers(APPLYING_REGISTRY):
            drop_id = _text(raw)
            k = drop_keys(drop_id)
            if not await self.redis.exists(k.meta):
                await self.redis.srem(APPLYING_REGISTRY, drop_id)
                continue
            lapsed = await self.redis.zrangebyscore(k.applying, "-inf", now, start=0, num=200)
            for u in lapsed:
                user = _text(u)
                claim = await self._claim_of(drop_id, user)
                if claim is None or claim.get("s") != "a":
                    await self.redis.zrem(k.applying, user)
                    continue
                hold = await self.inventory.get_hold(claim["h"])
                code = await self._settle_lock(user, drop_id, claim["h"], hold, payable_ok=True)
                log.info("coupons: %s of %s locked to %s recovered: %s", drop_id, user, claim["h"], code)
            if not await self.redis.zcard(k.applying):
                await self.redis.srem(APPLYING_REGISTRY, drop_id)

    async def aclose(self) -> None:
        await self.claims.aclose()
        await self._tasks.drain(5.0)

    # -- reading -------------------------------------------------------------------------------------

    async def _meta(self, drop_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(drop_keys(drop_id).meta)
        return {_text(a): _text(b) for a, b in raw.items()} or None

    async def _claim_of(self, drop_id: str, user: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(drop_keys(drop_id).claims, user)
        return orjson.loads(raw) if raw else None

    async def _live(self, room_id: str, ids: set[str]) -> object:
        out = {}
        for drop_id in ids:
            meta = await self._meta(drop_id)
            if meta is not None:
                count, claimed = int(meta["count"]), int(meta.get("claimed", 0))
                out[drop_id] = {"claimed": claimed, "redeemed": int(meta.get("redeemed", 0)),
                                "left": max(0, count - claimed)}
        return out

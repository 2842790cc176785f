"""Model test of stock pools (issue "Goods", item 3): a Hypothesis state machine drives one merchant's pool,
two rooms' sales drawn from it and a web-shop channel through the commerce layer against the real engines
(Redis scripts, SQL, settlement worker, reaper), in random order:

launch (and its retries: same terms, other terms, after POOL_SHORT), top-up (retried request ids), room
reserve (retried request ids), channel reserve, pay (owner / stranger), release, expire (the hold's pay-by
moved into the past: ``pay`` then expires it in confirm.lua, or the reaper does), end a sale, end the live of
a room, restock / adjust (retried request ids, POOL_SHORT), settle (burst), refund (merchant / host / buyer /
another merchant, restock or written off), and a reaper pass over this machine's sales (reap, give back,
retire with its archive, the journal written to SQL).

The model predicts every answer and every counter: the pool's received / restocked / available / channel
held / channel sold / at sales, each sale's allocated / available / held / sold and per-user units, the SQL
ledger's sums (journal pending included) and the units in settled orders. After every step
``Pools.audit`` must report no problem AND agree with the model, so wrong arithmetic is caught even where
the audit's own formulas would balance.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test,
)

from commerce.errors import CommerceError
from commerce.identity import Identity
from commerce.requests import (
    AddProduct, ChannelReserve, CreatePool, CreateRoom, CreateSale, RefundOrder, StockChange, TopUp,
)
from conftest import timeout
from inventory import keys as K
from inventory.domain import ConfirmCode, ReleaseCode, ReserveCode, ReserveResult, RetireCode, sale_of_hold
from inventory.pools import PoolStore, flush_journal
from inventory.reaper import Reaper
from inventory.settlement import SettlementWorker
from server.app import Core
from server.config import Settings

pytestmark = pytest.mark.timeout(600, method="thread")

T = TypeVar("T")
ENV: dict[str, Settings] = {}  # set by the module fixture: the machine cannot take fixtures
USERS = ("ann", "bob", "cat")
PRICE = 1500
CHANNEL = "web-shop"
RETAIN_MS = 1  # a retired sale's keys expire at once: the audit then reads its archive

PICK = st.integers(0, 10**6)
OFTEN = st.sampled_from([True, True, False])  # mostly True (a new request, not a retry; the usual choice)
HOLD = st.tuples(OFTEN, PICK)  # prefer a live hold?, which one
SALE = st.tuples(OFTEN, PICK)  # prefer a sale that has not ended?, which one
STRANGER = st.sampled_from([False, False, False, True])  # the hold's owner asks, or someone else
# user, qty, repeat an earlier request id?, which one, same payload?
REQUEST = st.tuples(st.sampled_from(USERS), st.integers(1, 3), st.booleans(), PICK, st.booleans())


@pytest.fixture(scope="module", autouse=True)
def _env(settings: Settings) -> None:
    ENV["settings"] = settings


@dataclass
class MSale:
    """The model of a sale drawn from the pool, or (room '') of the pool's own bucket (channel holds)."""

    sale_id: str
    room: str
    units: int                  # the launch's terms
    limit: int
    in_sql: bool = False        # launched (a refused launch leaves nothing)
    allocated: int = 0
    available: int = 0
    held: int = 0
    sold: int = 0
    ended: bool = False
    retired: bool = False       # archived and its keys gone
    buyers: Counter[str] = field(default_factory=Counter)
    requests: dict[tuple[str, str], tuple[int, ReserveCode, str | None]] = field(default_factory=dict)
    request_ids: list[tuple[str, str]] = field(default_factory=list)
    topups: list[str] = field(default_factory=list)  # request ids of top-ups that moved units


@dataclass
class MHold:
    hold_id: str
    sale: MSale
    user: str
    qty: int
    status: str = "held"        # held | overdue (past its pay-by, not reaped yet) | confirmed | released | expired
    settled: bool = False
    refunded: bool | None = None  # None: not refunded; else whether its units went back to the pool

    @property
    def live(self) -> bool:
        return self.status in ("held", "overdue")


def _code(exc: CommerceError) -> str:
    return str(exc.code)


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.settings = ENV["settings"]
        self.core = self.run(Core.open(self.settings))
        self.commerce = self.core.commerce
        self.redis = self.core.redis
        self.uid = "pm" + secrets.token_hex(5)
        self.pool_id = self.uid
        self.registry = f"{self.uid}:outboxes"  # a private registry: no other worker takes our entries
        self.merchant = Identity(user=f"m-{self.uid}", name="Merchant", role="merchant")
        self.other_merchant = Identity(user=f"o-{self.uid}", name="Other", role="merchant")
        self.host = Identity(user="h-model", name="Host", role="host", rooms=("*",))
        self.rooms = (f"a{self.uid}", f"b{self.uid}")
        self.reaper = Reaper(self.redis, self.core.inventory, 1000, store=self.core.store, retain_ms=RETAIN_MS)
        self.pool_sql = PoolStore(self.core.store)
        self.opened = False
        self.bucket = MSale(K.pool_bucket_id(self.pool_id), "", 0, 1, in_sql=True)
        self.received = self.restocked = self.out = 0
        self.sales: list[MSale] = []      # every sale id tried, launched or refused
        self.holds: dict[str, MHold] = {}
        self.hold_ids: list[str] = []
        self.stock_ids: list[tuple[str, str]] = []  # (kind, request id) that moved units
        self.next_id = 0
        self.retired_now: set[str] = set()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def fresh(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}{self.next_id}"

    def viewer(self, user: str) -> Identity:
        return Identity(user=user, name=user.title(), role="viewer")

    # -- setup -----------------------------------------------------------------------------------------------

    @initialize(units=st.integers(0, 40), limit=st.integers(1, 4), first=st.integers(0, 8),
                first_limit=st.integers(1, 3))
    def open_pool(self, units: int, limit: int, first: int, first_limit: int) -> None:
        """The merchant's pool, the rooms with the pool's product, and (first > 0) a first sale from it."""
        c = self.commerce
        wire = self.run(c.pools.create(self.merchant, CreatePool(
            sku=f"SKU-{self.uid}", title="Model goods", unit_price=PRICE, units=units, pool_id=self.pool_id,
            per_user_limit=limit, hold_ttl_s=900)))
        assert wire["available"] == units and wire["received"] == units and wire["at_sales"] == 0, wire
        self.opened = True
        self.bucket.limit = limit
        self.bucket.allocated = self.bucket.available = self.received = units
        self.private(self.bucket.sale_id)
        for room in self.rooms:
            self.run(c.catalogue.create_room(self.host, CreateRoom(title=f"Room {room}", room_id=room)))
            self.run(c.catalogue.add_product(room, AddProduct(sku=f"SKU-{self.uid}", title="Model goods",
                                                              unit_price=PRICE, product_id="p0")))
        now = self.run(self.core.inventory.now_ms())
        self.starts, self.ends = now - 1000, now + 600_000
        if first:
            self.launch(room=0, new=True, pick=0, units=first, same=True, limit=first_limit)

    def private(self, sale_id: str) -> None:
        """Move the sale's outbox from the shared registry to this machine's own."""
        outbox = K.sale_keys(sale_id).outbox
        self.run(self.redis.srem(K.OUTBOX_REGISTRY, outbox))
        self.run(self.redis.sadd(self.registry, outbox))

    # -- hosts: launch, top-up, end ----------------------------------------------------------------------------

    @rule(room=st.integers(0, 1), new=OFTEN, pick=PICK, units=st.integers(1, 8), same=st.booleans(),
          limit=st.integers(1, 3))
    def launch(self, room: int, new: bool, pick: int, units: int, same: bool, limit: int) -> None:
        """A new sale from the pool, or a retry of an earlier launch (same terms, or other units)."""
        if new or not self.sales:
            s = MSale(f"{self.pool_id}--{self.fresh('s')}", self.rooms[room], units, limit)
            self.sales.append(s)
        else:
            s = self.sales[pick % len(self.sales)]
            if same or not s.in_sql:
                units = s.units
        req = CreateSale(product_id="p0", units=units, sale_id=s.sale_id.partition("--")[2], per_user_limit=s.limit,
                         starts_at=self.starts, ends_at=self.ends, pool=self.pool_id)
        try:
            wire = self.run(self.commerce.sales.launch(s.room, req))
        except CommerceError as exc:
            got = _code(exc)
        else:
            got = "OK"
        if s.in_sql:
            expect = "OK" if units == s.units else "CONFLICT"  # a retry: nothing moves again
        elif self.bucket.available < units:
            expect = "POOL_SHORT"
        else:
            expect = "OK"
            s.units, s.in_sql = units, True
            s.allocated = s.available = units
            self.bucket.available -= units
            self.out += units
            self.private(s.sale_id)
        event(f"launch {'retry ' if not new else ''}-> {expect}")
        assert got == expect, (got, expect, s, self.bucket.available)
        if got == "OK":
            assert wire["sale_id"] == s.sale_id and wire["pool"] == self.pool_id, wire
            if not s.retired:
                assert wire["units_left"] == s.available, (wire, s)

    @precondition(lambda self: self.any_sale())
    @rule(pick=SALE, units=st.integers(1, 8), repeat=st.booleans(), rpick=PICK)
    def topup(self, pick: tuple[bool, int], units: int, repeat: bool, rpick: int) -> None:
        s = self.launched(pick)
        if s is None:
            return
        rid = s.topups[rpick % len(s.topups)] if repeat and s.topups else self.fresh("t")
        try:
            out = self.run(self.commerce.pools.topup(s.room, s.sale_id, TopUp(units=units, request_id=rid)))
        except CommerceError as exc:
            got = _code(exc)
        else:
            got = "REPLAYED" if out["replayed"] else "TOPPED_UP"
        if s.retired:
            expect = "NOT_FOUND"
        elif rid in s.topups:
            expect = "REPLAYED"
        elif s.ended:
            expect = "ENDED"
        elif self.bucket.available < units:
            expect = "POOL_SHORT"
        else:
            expect = "TOPPED_UP"
            s.topups.append(rid)
            s.allocated += units
            s.available += units
            self.bucket.available -= units
            self.out += units
        event(f"topup -> {expect}")
        assert got == expect, (got, expect, s, self.bucket.available)
        if got in ("TOPPED_UP", "REPLAYED"):
            assert (out["units_left"], out["pool_available"]) == (s.available, self.bucket.available), out

    @precondition(lambda self: self.any_sale())
    @rule(pick=SALE)
    def end(self, pick: tuple[bool, int]) -> None:
        """The host ends a sale: it closes and its unsold units go back to the pool at once."""
        s = self.launched(pick)
        if s is None:
            return
        try:
            self.run(self.commerce.sales.end(s.room, s.sale_id))
        except CommerceError as exc:
            got = _code(exc)
        else:
            got = "OK"
        expect = "NOT_FOUND" if s.retired else "OK"
        if expect == "OK":
            event(f"end {'again' if s.ended else 'open sale'} (gives back {'some' if s.available else 'none'})")
            s.ended = True
            self.give_back(s)
        assert got == expect, (got, s)

    @precondition(lambda self: any(s.in_sql and not s.ended for s in self.sales))
    @rule(room=st.integers(0, 1))
    def end_live(self, room: int) -> None:
        """Ending a room's live closes its sales that had not ended and gives their units back."""
        self.run(self.commerce.set_live(self.rooms[room], False))
        event("end live")
        for s in self.sales:
            if s.room == self.rooms[room] and s.in_sql and not s.ended and not s.retired:
                s.ended = True
                self.give_back(s)

    # -- buyers ----------------------------------------------------------------------------------------------

    @precondition(lambda self: self.any_sale())
    @rule(pick=SALE, req=REQUEST)
    def reserve(self, pick: tuple[bool, int], req: tuple[str, int, bool, int, bool]) -> None:
        s = self.launched(pick)
        if s is None:
            return
        user, qty, rid = self.request(s, req)
        res = self.run(self.commerce.checkout.buy(self.viewer(user), s.room, s.sale_id, qty, rid))
        self.apply_reserve(s, user, qty, rid, res)

    @rule(req=REQUEST)
    def channel_reserve(self, req: tuple[str, int, bool, int, bool]) -> None:
        user, qty, rid = self.request(self.bucket, req)
        res = self.run(self.commerce.pools.channel_reserve(self.viewer(user), CHANNEL,
                                                           ChannelReserve(pool=self.pool_id, request_id=rid, qty=qty)))
        self.apply_reserve(self.bucket, user, qty, rid, res)

    @precondition(lambda self: self.hold_ids)
    @rule(hold=HOLD, stranger=STRANGER)
    def pay(self, hold: tuple[bool, int], stranger: bool) -> None:
        h = self.pick_hold(hold)
        if h is None:
            return
        user = next(u for u in USERS if u != h.user) if stranger else h.user
        res = self.run(self.commerce.checkout.pay(self.viewer(user), h.hold_id))
        s = h.sale
        before = "stranger" if stranger else h.status
        fresh = False
        if s.retired:
            expect = ConfirmCode.NOT_FOUND
        elif stranger:
            expect = ConfirmCode.FORBIDDEN
        elif h.status == "held":
            expect, fresh = ConfirmCode.CONFIRMED, True
            h.status = "confirmed"
            s.held -= h.qty
            s.sold += h.qty
        elif h.status == "overdue":  # confirm.lua expires it and returns its units
            expect = ConfirmCode.EXPIRED
            self.expired(h)
        elif h.status == "confirmed":
            expect = ConfirmCode.CONFIRMED  # a retry with the same payment ref
        else:
            expect = ConfirmCode.EXPIRED
        event(f"pay {before} -> {expect.value}")
        assert (res.code, res.fresh) == (expect, fresh), (res, h)
        if expect is ConfirmCode.CONFIRMED:
            assert res.order_id == h.hold_id

    @precondition(lambda self: self.hold_ids)
    @rule(hold=HOLD, stranger=STRANGER)
    def release(self, hold: tuple[bool, int], stranger: bool) -> None:
        h = self.pick_hold(hold)
        if h is None:
            return
        user = next(u for u in USERS if u != h.user) if stranger else h.user
        res = self.run(self.commerce.checkout.release(self.viewer(user), h.hold_id))
        s = h.sale
        if s.retired:
            expect = ReleaseCode.NOT_FOUND
        elif stranger:
            expect = ReleaseCode.FORBIDDEN
        elif h.live:
            expect = ReleaseCode.RELEASED
            h.status = "released"
            self.give_up(h)
        else:
            expect = ReleaseCode.NOT_HELD
        event(f"release -> {expect.value}")
        assert res.code is expect, (res, h)
        if expect in (ReleaseCode.RELEASED, ReleaseCode.NOT_HELD):
            assert res.available == s.available, (res, s)

    @precondition(lambda self: any(h.status == "held" for h in self.holds.values()))
    @rule(pick=PICK)
    def expire(self, pick: int) -> None:
        """The hold's pay-by passes (moved into the past in Redis: Redis TIME cannot be faked); the next
        ``pay`` expires it in confirm.lua, or the next reaper pass does."""
        live = [h for h in (self.holds[i] for i in self.hold_ids) if h.status == "held"]
        if not live:
            return
        h = live[pick % len(live)]
        self.run(self.backdate(h.hold_id))
        h.status = "overdue"
        event("expire (pay-by passed)")

    # -- the merchant ----------------------------------------------------------------------------------------

    @rule(adjust=st.booleans(), units=st.integers(1, 10), negative=st.booleans(), new=OFTEN, rpick=PICK)
    def stock(self, adjust: bool, units: int, negative: bool, new: bool, rpick: int) -> None:
        kind = "adjust" if adjust else "restock"
        delta = -units if adjust and negative else units
        rid = self.fresh("k")
        if not new and self.stock_ids:
            kind, rid = self.stock_ids[rpick % len(self.stock_ids)]
            if kind == "restock":
                delta = abs(delta)
        try:
            change = StockChange(units=delta, request_id=rid, kind=kind, reason="model")
            out = self.run(self.commerce.pools.stock(self.merchant, self.pool_id, change))
        except CommerceError as exc:
            got = _code(exc)
        else:
            got = "REPLAYED" if out["replayed"] else "DONE"
        if (kind, rid) in self.stock_ids:
            expect = "REPLAYED"
        elif self.bucket.available + delta < 0 or self.received + delta < 0:  # never below zero: either
            expect = "POOL_SHORT"
        else:
            expect = "DONE"
            self.stock_ids.append((kind, rid))
            self.bucket.available += delta
            self.received += delta
        event(f"{kind} {'-' if delta < 0 else '+'} -> {expect}")
        assert got == expect, (got, expect, kind, delta, self.bucket.available)
        if got != "POOL_SHORT":
            assert out["pool"]["available"] == self.bucket.available and out["pool"]["received"] == self.received

    @precondition(lambda self: any(h.status == "confirmed" for h in self.holds.values()))
    @rule(pick=PICK, who=st.sampled_from(["merchant", "host", "buyer", "other merchant"]), restock=st.booleans())
    def refund(self, pick: int, who: str, restock: bool) -> None:
        paid = [self.holds[i] for i in self.hold_ids if self.holds[i].status == "confirmed"]
        if not paid:
            return
        h = paid[pick % len(paid)]
        identity = {"merchant": self.merchant, "host": self.host, "buyer": self.viewer(h.user),
                    "other merchant": self.other_merchant}[who]
        try:
            fresh, wire = self.run(self.commerce.order_refunds.refund(identity, h.hold_id,
                                                                      RefundOrder(restock=restock, reason="model")))
        except CommerceError as exc:
            got = _code(exc)
        else:
            got = "FRESH" if fresh else "AGAIN"
        channel = h.sale is self.bucket
        if not h.settled:
            expect = "NOT_SETTLED"
        elif who == "merchant" or (who == "host" and not channel):
            expect = "AGAIN" if h.refunded is not None else "FRESH"
        else:
            expect = "FORBIDDEN"
        event(f"refund by {who} -> {expect}")
        if expect == "FRESH":
            h.refunded = restock
            if restock:
                self.restocked += h.qty
                self.bucket.available += h.qty
        assert got == expect, (got, expect, h)
        if got in ("FRESH", "AGAIN"):
            assert wire["restock"] == h.refunded and wire["units"] == h.qty and wire["state"] == "done", wire
            assert wire["pool"] == self.pool_id, wire

    # -- background work, run on demand --------------------------------------------------------------------------

    @precondition(lambda self: any(h.status == "confirmed" and not h.settled for h in self.holds.values()))
    @rule()
    def settle(self) -> None:
        worker = SettlementWorker(self.redis, self.core.store, consumer="pool-model", registry=self.registry,
                                  block_ms=100, on_committed=self.commerce.notify_settled)
        self.run(asyncio.wait_for(worker.run(burst=True), timeout(30)))
        for h in self.holds.values():
            if h.status == "confirmed":
                h.settled = True
        settled = self.run(self.pool_sql.settled_units(self.pool_id, self.bucket.sale_id))
        assert settled == self.bucket.sold + sum(s.sold for s in self.sales), settled
        event(f"settle ({'some' if settled else 'no'} orders in SQL)")

    @precondition(lambda self: any(h.status == "overdue" for h in self.holds.values())
                  or any(s.ended and not s.retired for s in self.sales))
    @rule()
    def sweep(self) -> None:
        """One reaper pass over this machine's sales (``Reaper.sweep`` walks every sale in the shared registries;
        this is its loop body for ours: reap, give back, retire, then the pool's journal to SQL)."""
        self.run(self.reaper_pass())
        mine = [self.bucket, *(s for s in self.sales if s.in_sql and not s.retired)]
        retired = []
        for s in mine:
            for h in self.holds.values():
                if h.sale is s and h.status == "overdue":
                    self.expired(h)
            if s is not self.bucket and s.ended:
                self.give_back(s)
            # retire: ended, no live hold, nothing left to give back, every confirmed order settled
            if (s is not self.bucket and s.ended and s.available == 0 and s.held == 0
                    and all(h.settled for h in self.holds.values() if h.sale is s and h.status == "confirmed")):
                retired.append(s)
        for s in retired:
            s.retired = True
            event("sweep retired a sale")
        assert self.retired_now == {s.sale_id for s in retired}, (self.retired_now, [s.sale_id for s in retired])
        assert self.run(self.core.inventory.pools.journal(self.pool_id)) == []

    async def reaper_pass(self) -> None:
        armed = set(await self.redis.smembers(K.SALES_REGISTRY))
        private = {K.sale_id_of_outbox(o) for o in await self.redis.smembers(self.registry)}
        ours = {self.bucket.sale_id, *(s.sale_id for s in self.sales)}
        self.retired_now = set()
        for sale_id in sorted(ours & (armed | private)):
            nxt = 0
            while sale_id in armed:
                count, _units, _available, nxt = await self.core.inventory.reap(sale_id, 500)
                if count < 500:
                    break
            if sale_id in armed and sale_id != self.bucket.sale_id:
                await self.reaper.give_back(sale_id)
            if not nxt:
                code = await self.reaper.retire(sale_id)
                if code is RetireCode.RETIRED:
                    self.retired_now.add(sale_id)
                    await self.redis.srem(self.registry, K.sale_keys(sale_id).outbox)
        await flush_journal(self.core.inventory.pools, self.pool_sql, self.pool_id)
        if self.retired_now:
            await asyncio.sleep(0.02)  # past the retention (RETAIN_MS): the keys are gone
            for sale_id in self.retired_now:
                assert not await self.redis.exists(K.sale_keys(sale_id).sale)

    # -- invariants ------------------------------------------------------------------------------------------

    @invariant()
    def balanced(self) -> None:
        if not self.opened:
            return
        # the model's own books first (a wrong model would make the comparisons below meaningless)
        b = self.bucket
        assert self.received + self.restocked == b.available + b.held + b.sold + self.out
        assert self.out == sum(s.allocated for s in self.sales if s.in_sql)
        report = self.run(self.commerce.pools.audit(self.pool_id))
        assert report.ok, report.problems
        assert (report.received, report.restocked, report.available, report.channel_held, report.channel_sold,
                report.at_sales) == (self.received, self.restocked, b.available, b.held, b.sold, self.out), report
        rows = {r["sale_id"]: r for r in report.sales}
        assert set(rows) == {s.sale_id for s in self.sales if s.in_sql}, rows
        for s in self.sales:
            if s.in_sql:
                r = rows[s.sale_id]
                assert (r["allocated"], r["available"], r["held"], r["sold"], bool(r.get("retired"))) == (
                    s.allocated, s.available, s.held, s.sold, s.retired), (r, s)
        # SQL: the ledger (with the journal not written yet) and the settled orders, against the model
        sums = self.run(self.pool_sql.ledger_sums(self.pool_id))
        for e in self.run(self.core.inventory.pools.journal(self.pool_id)):
            sums[e.kind] = sums.get(e.kind, 0) + e.units
        assert sums.get("receive", 0) + sums.get("restock", 0) + sums.get("adjust", 0) == self.received, sums
        assert sums.get("refund_restock", 0) == self.restocked, sums
        assert -(sums.get("allocate", 0) + sums.get("topup", 0) + sums.get("return", 0)) == self.out, sums
        settled = self.run(self.pool_sql.settled_units(self.pool_id, self.bucket.sale_id))
        assert settled == sum(h.qty for h in self.holds.values() if h.settled), settled

    @invariant()
    def buyers(self) -> None:
        """Each user's units held or bought, per sale (and over the channel), as the model counts them."""
        for s in [self.bucket, *self.sales] if self.opened else []:
            if not s.in_sql or s.retired:
                continue
            real = {u: int(n) for u, n in self.run(self.redis.hgetall(K.sale_keys(s.sale_id).buyers)).items()}
            assert {u: n for u, n in real.items() if n} == {u: n for u, n in s.buyers.items() if n}, (s.sale_id, real)
            assert max(real.values(), default=0) <= s.limit
            assert sum(real.values()) == s.held + s.sold

    # -- model helpers ---------------------------------------------------------------------------------------

    def any_sale(self) -> bool:
        return any(s.in_sql for s in self.sales)

    def launched(self, pick: tuple[bool, int]) -> MSale | None:
        open_first, index = pick
        done = [s for s in self.sales if s.in_sql]
        candidates = [s for s in done if not s.ended] if open_first else []
        candidates = candidates or done
        return candidates[index % len(candidates)] if candidates else None

    def pick_hold(self, pick: tuple[bool, int]) -> MHold | None:
        live, index = pick
        candidates = [i for i in self.hold_ids if self.holds[i].live] if live else []
        candidates = candidates or self.hold_ids
        return self.holds[candidates[index % len(candidates)]] if candidates else None

    def give_up(self, h: MHold) -> None:
        s = h.sale
        s.held -= h.qty
        s.available += h.qty
        s.buyers[h.user] -= h.qty

    def expired(self, h: MHold) -> None:
        h.status = "expired"
        self.give_up(h)

    def give_back(self, s: MSale) -> None:
        """An ended sale's available units move back to the pool (pool_return.lua)."""
        if s.ended and not s.retired and s.available:
            self.bucket.available += s.available
            self.out -= s.available
            s.allocated -= s.available
            s.available = 0

    def request(self, s: MSale, draw: tuple[str, int, bool, int, bool]) -> tuple[str, int, str]:
        user, qty, repeat, pick, same = draw
        if repeat and s.request_ids:
            key = s.request_ids[pick % len(s.request_ids)]
            rid = key[1]
            if same:
                user, qty = key[0], s.requests[key][0]
        else:
            rid = self.fresh("r")
        return user, qty, rid

    def apply_reserve(self, s: MSale, user: str, qty: int, rid: str, res: ReserveResult) -> None:
        prior = s.requests.get((user, rid))
        if s.retired:
            assert res.code is ReserveCode.NOT_FOUND, res
            return
        if prior is not None:
            p_qty, p_code, p_hold = prior
            if p_qty == qty:
                assert (res.code, res.hold_id or None, res.replayed) == (p_code, p_hold, True), (res, prior)
                assert res.user_units == s.buyers[user]
            else:
                assert (res.code, res.replayed) == (ReserveCode.IDEM_MISMATCH, True), res
            assert res.available == s.available, (res, s)
            event("reserve retried")
            return
        if s.ended:
            code = ReserveCode.ENDED  # not remembered: clock answers are not
        elif s.buyers[user] + qty > s.limit:
            code = ReserveCode.LIMIT
        elif s.available < qty:
            code = ReserveCode.SOLD_OUT
        else:
            code = ReserveCode.RESERVED
        event(f"{'channel ' if s is self.bucket else ''}reserve -> {code.value}")
        assert (res.code, res.replayed) == (code, False), (res, code, s)
        if code is ReserveCode.ENDED:
            return
        if code is ReserveCode.RESERVED:
            assert res.hold_id is not None and res.hold_id not in self.holds
            assert sale_of_hold(res.hold_id) == s.sale_id
            self.holds[res.hold_id] = MHold(res.hold_id, s, user, qty)
            self.hold_ids.append(res.hold_id)
            s.available -= qty
            s.held += qty
            s.buyers[user] += qty
        assert res.available == s.available and res.user_units == s.buyers[user], (res, s)
        s.requests[(user, rid)] = (qty, code, res.hold_id if code is ReserveCode.RESERVED else None)
        s.request_ids.append((user, rid))

    async def backdate(self, hold_id: str) -> None:
        """Move a held hold's pay-by just into the past (its record and the reaper's deadlines zset)."""
        k = K.sale_keys(sale_of_hold(hold_id))
        h = orjson.loads(await self.redis.hget(k.holds, hold_id))
        assert h["s"] == "held", h
        h["p"] = await self.core.inventory.now_ms() - 1
        await self.redis.hset(k.holds, hold_id, orjson.dumps(h).decode())
        await self.redis.zadd(k.deadlines, {hold_id: h["p"]})

    def teardown(self) -> None:
        try:
            self.run(self.cleanup())
        finally:
            try:
                self.run(self.core.aclose())
            finally:
                self.loop.close()

    async def cleanup(self) -> None:
        """Only this machine's keys and registry entries (never FLUSHDB: the Redis may be shared)."""
        await self.redis.delete(self.registry)
        await self.redis.srem(K.POOLS_REGISTRY, self.pool_id)
        ids = [self.bucket.sale_id, *(s.sale_id for s in self.sales)]
        await self.redis.srem(K.SALES_REGISTRY, *ids)
        await self.redis.srem(K.OUTBOX_REGISTRY, *(K.sale_keys(i).outbox for i in ids))
        async for key in self.redis.scan_iter(match=f"{K.PREFIX}:{{pool:{self.pool_id}}}*", count=1000):
            await self.redis.delete(key)


def test_pool_model() -> None:
    run_state_machine_as_test(PoolMachine, settings=settings(
        max_examples=30, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))


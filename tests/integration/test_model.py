"""Model test: a Hypothesis state machine drives one sale through the real scripts and settlement.

Rules: arm (initial) and re-arm, reserve (random users, qty 1..3, repeated request ids),
reserve_many, confirm, release, advance time past a pay-by deadline, reap, settle (burst).
After every step the Redis counters must balance, no user may exceed the limit and Redis must
agree with the model wherever the outcome is deterministic; where it depends on the exact Redis
time (a hold at its deadline), either outcome is accepted and the model follows the real one.
At the end settlement is drained and the DB's sold units must equal Redis' sold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from redis.asyncio import Redis

from redis_helpers import redis_for

from conftest import timeout
from inventory import keys as K
from inventory.domain import (
    ConfirmCode, ReleaseCode, ReserveCode, ReserveRequest, ReserveResult, SaleSpec,
)
from inventory.scripts import Inventory
from inventory.settlement import SettlementWorker
from inventory.store import Store

T = TypeVar("T")
HOLD_TTL_MS = 150
USERS = ("ann", "bob", "cat", "dan")
ENGINES: dict[str, str] = {}  # set by the module fixture: the machine cannot take fixtures

# Every rule draws the same shape of data whatever the state (indexes are taken modulo the
# current lists), so a time-dependent outcome never changes what Hypothesis draws next.
Draw = tuple[str, int, bool, int, bool]  # user, qty, repeat an earlier request id?, which one, same payload?
PICK = st.tuples(st.booleans(), st.integers(0, 10**6))  # prefer a live hold?, which one
WHO = st.sampled_from(["owner", "operator", "stranger"])
REQUEST = st.tuples(st.sampled_from(USERS), st.integers(1, 3), st.booleans(), st.integers(0, 10**6), st.booleans())


@pytest.fixture(scope="module", autouse=True)
def _engines(redis_url: str, database_url: str) -> None:
    ENGINES["redis"] = redis_url
    ENGINES["database"] = database_url


@dataclass
class ModelHold:
    user: str
    qty: int
    pay_by: int
    status: str = "held"
    payment_ref: str | None = None


class SaleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = redis_for(ENGINES["redis"])
        self.inv = Inventory(self.redis, max_qty=100)
        self.store = self.run(Store.open(ENGINES["database"]))
        self.sale_id = "m" + secrets.token_hex(6)
        self.keys = K.sale_keys(self.sale_id)
        self.registry = f"{self.sale_id}:outboxes"
        self.spec: SaleSpec | None = None
        self.available = 0
        self.sold = 0
        self.holds: dict[str, ModelHold] = {}
        self.units: Counter[str] = Counter()
        # request ids are scoped per user: (user, rid) -> first outcome
        self.requests: dict[tuple[str, str], tuple[str, int, ReserveCode, str | None]] = {}
        self.request_ids: list[tuple[str, str]] = []  # creation order (draws index these: never random ids)
        self.hold_ids: list[str] = []
        self.next_request = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def now(self) -> int:
        return self.run(self.inv.now_ms())

    # -- rules -----------------------------------------------------------------------------------

    @initialize(allocated=st.integers(0, 20), limit=st.integers(1, 5))
    def arm(self, allocated: int, limit: int) -> None:
        now = self.now()
        self.spec = SaleSpec(sale_id=self.sale_id, room_id="model-room", sku="sku-m", unit_price=250,
                             currency="EUR", allocated=allocated, per_user_limit=limit, starts_at_ms=now - 1000,
                             ends_at_ms=now + 600_000, hold_ttl_ms=HOLD_TTL_MS)
        res = self.run(self.inv.arm(self.spec))
        assert res.code.value == "ARMED"
        self.available = allocated
        # a private registry: workers sharing this Redis never take the machine's entries
        self.run(self.redis.srem(K.OUTBOX_REGISTRY, self.keys.outbox))
        self.run(self.redis.sadd(self.registry, self.keys.outbox))

    @rule(same=st.booleans())
    def rearm(self, same: bool) -> None:
        assert self.spec is not None
        spec = self.spec if same else dataclasses.replace(self.spec, allocated=self.spec.allocated + 1)
        res = self.run(self.inv.arm(spec))
        assert res.code.value == ("EXISTS" if same else "CONFLICT")
        assert (res.available, res.held, res.sold) == (self.available, self.held(), self.sold)
        self.run(self.redis.srem(K.OUTBOX_REGISTRY, self.keys.outbox))

    @rule(req=REQUEST)
    def reserve(self, req: Draw) -> None:
        user, qty, rid = self.request(req)
        result = self.run(self.inv.reserve(self.sale_id, user, qty, rid))
        self.apply_reserve(user, qty, rid, result)

    @rule(reqs=st.lists(REQUEST, min_size=1, max_size=4))
    def reserve_many(self, reqs: list[Draw]) -> None:
        batch = [self.request(r) for r in reqs]
        results = self.run(self.inv.reserve_many(self.sale_id, [ReserveRequest(u, q, r) for u, q, r in batch]))
        assert len(results) == len(batch)
        for (user, qty, rid), result in zip(batch, results):
            self.apply_reserve(user, qty, rid, result)

    @rule(pick=PICK, who=WHO, other_ref=st.booleans())
    def confirm(self, pick: tuple[bool, int], who: str, other_ref: bool) -> None:
        hold_id = self.pick_hold(pick)
        if hold_id is None:
            return
        h = self.holds[hold_id]
        user = {"owner": h.user, "operator": "", "stranger": next(u for u in USERS if u != h.user)}[who]
        ref = f"pay-{hold_id[-6:]}" + ("-other" if other_ref else "")
        t0 = self.now()
        res = self.run(self.inv.confirm(hold_id, ref, user))
        t1 = self.now()
        if who == "stranger":
            assert res.code is ConfirmCode.FORBIDDEN
        elif h.status == "confirmed":
            assert res.code is (ConfirmCode.CONFIRMED if ref == h.payment_ref else ConfirmCode.ALREADY_CONFIRMED)
        elif h.status != "held":
            assert res.code is ConfirmCode.EXPIRED
        else:
            if t1 < h.pay_by:
                assert res.code is ConfirmCode.CONFIRMED
            elif t0 >= h.pay_by:
                assert res.code is ConfirmCode.EXPIRED
            assert res.code in (ConfirmCode.CONFIRMED, ConfirmCode.EXPIRED)
            event(f"confirm held -> {res.code.value}")
            if res.code is ConfirmCode.CONFIRMED:
                assert res.order_id == hold_id
                h.status, h.payment_ref = "confirmed", ref
                self.sold += h.qty
            else:
                self.expire(h)

    @rule(pick=PICK, who=WHO)
    def release(self, pick: tuple[bool, int], who: str) -> None:
        hold_id = self.pick_hold(pick)
        if hold_id is None:
            return
        h = self.holds[hold_id]
        user = {"owner": h.user, "operator": "", "stranger": next(u for u in USERS if u != h.user)}[who]
        res = self.run(self.inv.release(hold_id, user))
        if who == "stranger":
            assert res.code is ReleaseCode.FORBIDDEN
        elif h.status == "held":
            assert res.code is ReleaseCode.RELEASED
            h.status = "released"
            self.available += h.qty
            self.units[h.user] -= h.qty
            assert res.available == self.available
        else:
            assert res.code is ReleaseCode.NOT_HELD and res.status == h.status

    @rule()
    def advance_time(self) -> None:
        """Wait (polling Redis TIME, bounded) until the earliest live pay-by deadline has passed."""
        live = [h.pay_by for h in self.holds.values() if h.status == "held"]
        if not live:
            return
        target = min(live)
        deadline = time.monotonic() + timeout(5)
        while self.now() <= target:
            assert time.monotonic() < deadline, "Redis TIME did not pass the deadline"
            self.run(asyncio.sleep(0.005))

    @rule()
    def reap(self) -> None:
        t0 = self.now()
        count, units, available, nxt = self.run(self.inv.reap(self.sale_id))
        t1 = self.now()
        expired = []
        for hold_id, h in self.holds.items():
            if h.status != "held" or h.pay_by > t1:
                continue
            if h.pay_by > t0:  # at the deadline during the call: follow what Redis did
                real = self.run(self.inv.get_hold(hold_id))
                assert real is not None and real.status in ("held", "expired")
                if real.status == "held":
                    continue
            expired.append(h)
        for h in expired:
            self.expire(h)
        event(f"reap expired {'some' if expired else 'none'}")
        assert (count, units) == (len(expired), sum(h.qty for h in expired))
        assert available == self.available
        live = [h.pay_by for h in self.holds.values() if h.status == "held"]
        assert nxt == (min(live) if live else 0)

    @rule()
    def settle(self) -> None:
        self.drain()

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def balanced(self) -> None:
        report = self.run(self.inv.check_invariant(self.sale_id))
        assert report.ok, report.problems
        assert (report.available, report.held, report.sold) == (self.available, self.held(), self.sold)

    @invariant()
    def per_user_limit(self) -> None:
        assert self.spec is not None
        buyers = self.run(self.redis.hgetall(self.keys.buyers))
        for user, units in buyers.items():
            assert 0 <= int(units) <= self.spec.per_user_limit
            assert int(units) == self.units[user]

    # -- model helpers ---------------------------------------------------------------------------

    def held(self) -> int:
        return sum(h.qty for h in self.holds.values() if h.status == "held")

    def expire(self, h: ModelHold) -> None:
        h.status = "expired"
        self.available += h.qty
        self.units[h.user] -= h.qty

    def pick_hold(self, pick: tuple[bool, int]) -> str | None:
        live, index = pick
        candidates = [i for i in self.hold_ids if self.holds[i].status == "held"] if live else []
        candidates = candidates or self.hold_ids
        return candidates[index % len(candidates)] if candidates else None

    def request(self, draw: Draw) -> tuple[str, int, str]:
        """A drawn request; repeats an earlier request id (same or changed payload) when asked to."""
        user, qty, repeat, pick, same = draw
        if repeat and self.request_ids:
            key = self.request_ids[pick % len(self.request_ids)]
            rid = key[1]
            if same:
                user, qty = self.requests[key][0], self.requests[key][1]
        else:
            rid = f"r{self.next_request}"
            self.next_request += 1
        return user, qty, rid

    def apply_reserve(self, user: str, qty: int, rid: str, res: ReserveResult) -> None:
        assert self.spec is not None
        prior = self.requests.get((user, rid))
        if prior is not None:
            p_user, p_qty, p_code, p_hold = prior
            if (p_user, p_qty) == (user, qty):
                assert (res.code, res.hold_id) == (p_code, p_hold)  # replayed, nothing changes
                assert res.replayed
                assert res.user_units == self.units[user]
            else:
                assert res.code is ReserveCode.IDEM_MISMATCH
            assert res.available == self.available
            return
        if self.units[user] + qty > self.spec.per_user_limit:  # the limit is answered before stock
            code = ReserveCode.LIMIT
        elif self.available < qty:
            code = ReserveCode.SOLD_OUT
        else:
            code = ReserveCode.RESERVED
        assert res.code is code, (res, self.available, self.units[user])
        event(f"reserve {code.value}")
        if code is ReserveCode.RESERVED:
            assert res.hold_id is not None and res.at_ms is not None
            assert res.hold_id not in self.holds
            self.holds[res.hold_id] = ModelHold(user, qty, res.at_ms)
            self.available -= qty
            self.units[user] += qty
        assert res.available == self.available and res.user_units == self.units[user]
        assert not res.replayed
        self.requests[(user, rid)] = (user, qty, code, res.hold_id)
        self.request_ids.append((user, rid))
        if res.hold_id is not None:
            self.hold_ids.append(res.hold_id)

    def drain(self) -> None:
        worker = SettlementWorker(self.redis, self.store, consumer="model", group=f"settle-{self.sale_id}",
                                  registry=self.registry, block_ms=100)
        self.run(asyncio.wait_for(worker.run(burst=True), timeout(30)))
        redis_sold = int(self.run(self.redis.hget(self.keys.sale, "sold")))
        assert redis_sold == self.sold
        assert self.run(self.store.sold_units(self.sale_id)) == redis_sold

    def teardown(self) -> None:
        try:
            if self.spec is not None:
                self.drain()
        finally:
            try:
                self.run(self.redis.delete(self.registry))
                self.run(self.redis.srem(K.SALES_REGISTRY, self.sale_id))
                self.run(self.store.close())
                self.run(self.redis.aclose())
            finally:
                self.loop.close()


def test_sale_model() -> None:
    run_state_machine_as_test(SaleMachine, settings=settings(
        max_examples=25, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))

"""Hot-SKU buckets over Redis (the ids and the routing rule: ``inventory/buckets.py``).

A bucketed sale is K ordinary armed sales (its buckets), each script touching the keys of ONE bucket, so
everything runs unchanged on Redis Cluster; the work across buckets is done here, from Python:

- **arm**: the units split evenly; bucket 0's sale hash lists the bucket ids (``buckets``) and keeps the
  sale's total (``buckets_total``), so any process can learn them (cached: they never change);
- **reserve**: each request goes to its user's home bucket (one script call per bucket). A home bucket
  that answers SOLD_OUT borrows: donors in order (home+1, home+2, ...) lend a chunk (``bucket_lend.lua``),
  the home takes it (``bucket_take.lua``), and the request is retried in the home bucket under a request id
  derived from its own (``buckets.retry_request_id``). The answer is SOLD_OUT only when the units not held
  or sold anywhere (``remaining``: the total minus every bucket's held + sold, which only grows while
  nothing is released) are fewer than the request's quantity; when units are left but none reached the home
  bucket within the rounds (on their way: a move left half done, completed by recovery), the batch fails
  retryable (``StockMoving``: UNAVAILABLE; the retries with the same request ids get the decided answers);
- **recover**: a move a crash left half done (lent, never taken) is completed by the reaper after
  ``TRANSIT_GRACE_MS``; the take is idempotent by transfer id, so a unit arrives exactly once;
- **sums**: counters, units left, the invariant audit and retirement see the sale as one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from . import buckets as B
from . import keys as K
from .acked import run_acked
from .domain import (
    ArmCode, ArmResult, InvariantReport, ReserveCode, ReserveRequest, ReserveResult, RetireCode, RetireResult,
    SaleCounters, SaleSpec, StockMoving,
)

if TYPE_CHECKING:
    from .scripts import Inventory

__all__ = ["BucketStock", "TRANSIT_GRACE_MS"]

log = logging.getLogger(__name__)

TRANSIT_GRACE_MS = 5_000      # a lent transfer older than this is completed by the reaper's recovery
_NEGATIVE_AFTER_MS = 5_000    # a sale armed this long ago without a bucket list is remembered as unbucketed
_MAX_ROUNDS = 12              # borrow-and-retry rounds of one batch in its home bucket (plus K)
_CACHE_MAX = 100_000


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _int(v: Any) -> int:
    return int(_s(v)) if v is not None else 0


def counters_from(sale_id: str, h: dict[str, str]) -> SaleCounters:
    return SaleCounters(
        sale_id=sale_id, room_id=h["room"], sku=h["sku"], unit_price=int(h["price"]), currency=h["currency"],
        allocated=int(h["allocated"]), available=int(h["available"]), held=int(h["held"]), sold=int(h["sold"]),
        per_user_limit=int(h["limit"]), starts_at_ms=int(h["starts_at"]), ends_at_ms=int(h["ends_at"]),
        hold_ttl_ms=int(h["hold_ttl"]),
    )


class BucketStock:
    """The bucketed sales of one process (its ``Inventory``'s redis client and registered scripts)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inv = inventory
        self.redis = inventory.redis
        self._ids: dict[str, tuple[str, ...]] = {}  # sale id -> its bucket ids; () = not bucketed
        self._seen: dict[str, int] = {}             # bucket id -> units available when last seen
        self.transit_grace_ms = TRANSIT_GRACE_MS    # ``recover`` completes moves lent at least this long ago

    # -- which sales are bucketed --------------------------------------------------------------------

    def _remember(self, sale_id: str, ids: tuple[str, ...]) -> None:
        if len(self._ids) >= _CACHE_MAX:
            self._ids.clear()
        self._ids[sale_id] = ids

    async def of(self, sale_id: str) -> tuple[str, ...]:
        """The bucket ids of a bucketed sale (bucket 0 first); () for any other sale or id (a bucket itself
        included). Cached per process: a sale's buckets never change once it is armed; a sale without
        a list is remembered as unbucketed only once it has been armed a while (the list is written right
        after bucket 0 is armed)."""
        got = self._ids.get(sale_id)
        if got is not None:
            return got
        if B.is_bucket_id(sale_id):
            self._remember(sale_id, ())
            return ()
        try:
            raw, armed = await self.redis.hmget(K.sale_keys(sale_id).sale, ["buckets", "armed_at"])
        except ResponseError:  # not a hash: the scripts answer for such a key (INVALID / NOT_FOUND)
            return ()
        ids = B.decode_ids(_s(raw)) if raw is not None else ()
        if len(ids) > 1:
            self._remember(sale_id, ids)
            return ids
        if armed is not None and time.time() * 1000 - _int(armed) > _NEGATIVE_AFTER_MS:
            self._remember(sale_id, ())
        return ()

    def note_unbucketed(self, sale_id: str) -> None:
        """This process armed the sale whole (``arm.lua`` created it): it has no buckets."""
        self._remember(sale_id, ())

    def batch_key(self, sale_id: str, user_id: str) -> str:
        """The reserve batch a buy joins: its home bucket's id for a bucketed sale the process knows (one
        script call per bucket, so per hash slot), else the sale id."""
        ids = self._ids.get(sale_id)
        if not ids:
            return sale_id
        return ids[B.home_bucket(user_id, len(ids))]

    async def discover(self, sale_id: str) -> tuple[str, ...]:
        """``of`` read fresh, for reconcile: also when bucket 0's hash is gone (Redis lost it) while other
        buckets of the sale remain, found by probing the bucket ids of every K."""
        try:
            raw = await self.redis.hget(K.sale_keys(sale_id).sale, "buckets")
        except ResponseError:
            return ()
        if raw is not None:
            ids = B.decode_ids(_s(raw))
            return ids if len(ids) > 1 else ()
        if B.is_bucket_id(sale_id) or len(sale_id) > B.MAX_PARENT_LEN or K.POOL_SEP in sale_id:
            return ()
        if await self.redis.exists(K.sale_keys(sale_id).sale):
            return ()  # bucket 0 is there without a list: not bucketed
        candidates = [B.bucket_ids(sale_id, k) for k in range(2, B.MAX_BUCKETS + 1)]
        async with self.redis.pipeline(transaction=False) as p:
            for ids in candidates:
                for b in ids[1:]:
                    p.exists(K.sale_keys(b).sale)
            found = iter(await p.execute())
        best: tuple[int, tuple[str, ...]] = (0, ())
        for ids in candidates:
            n = sum(int(next(found)) for _ in ids[1:])
            if n > best[0]:
                best = (n, ids)
        return best[1]

    # -- arming --------------------------------------------------------------------------------------

    async def arm(self, spec: SaleSpec, k: int) -> ArmResult:
        """Arm a sale as k buckets (the units split evenly, remainder to the lowest buckets); idempotent
        like ``arm.lua``: the same sale again is EXISTS, another one under this id CONFLICT."""
        if (k < 2 or k > B.MAX_BUCKETS or spec.allocated < k or len(spec.sale_id) > B.MAX_PARENT_LEN
                or B.looks_like_bucket_id(spec.sale_id) or K.POOL_SEP in spec.sale_id):
            return ArmResult(ArmCode.INVALID, 0, 0, 0)
        ids = B.bucket_ids(spec.sale_id, k)
        specs = [replace(spec, sale_id=b, allocated=n) for b, n in zip(ids, B.split_units(spec.allocated, k),
                                                                       strict=True)]
        head = K.sale_keys(spec.sale_id).sale
        if await self.redis.exists(head):
            try:
                listed = await self.redis.hget(head, "buckets")
            except ResponseError:
                return ArmResult(ArmCode.INVALID, 0, 0, 0)
            if listed is None or _s(listed) != B.encode_ids(ids):
                return ArmResult(ArmCode.CONFLICT, 0, 0, 0)
        # registered first, like Inventory.arm: a crash in between leaves a harmless registry entry
        await self.redis.sadd(K.OUTBOX_REGISTRY, *(K.sale_keys(b).outbox for b in ids))
        await self.redis.sadd(K.SALES_REGISTRY, *ids)
        results: list[ArmResult] = []
        for s in specs[1:] + specs[:1]:  # bucket 0 last: once it exists, its list follows at once
            code, available, held, sold = await self.inv._scripts["arm"](keys=[K.sale_keys(s.sale_id).sale],
                                                                         args=s.to_argv())
            r = ArmResult(ArmCode(_s(code)), int(available), int(held), int(sold))
            if not r.ok:
                return r
            results.append(r)
        await self.redis.hset(head, mapping={"buckets": B.encode_ids(ids), "buckets_total": spec.allocated})
        self._remember(spec.sale_id, ids)
        for s, r in zip(specs[1:] + specs[:1], results, strict=True):
            self._seen[s.sale_id] = r.available
        return ArmResult(results[-1].code, sum(r.available for r in results), sum(r.held for r in results),
                         sum(r.sold for r in results))

    # -- reserving -----------------------------------------------------------------------------------

    async def reserve_many(self, ids: tuple[str, ...], requests: Sequence[ReserveRequest],
                           channel: str = "") -> list[ReserveResult]:
        """Each request in its user's home bucket, one script call per bucket (concurrently); results in
        the order of ``requests``."""
        k = len(ids)
        groups: dict[int, list[int]] = {}
        for pos, r in enumerate(requests):
            home = B.home_bucket(r.user_id, k) if isinstance(r.user_id, str) else 0
            groups.setdefault(home, []).append(pos)
        out: list[ReserveResult | None] = [None] * len(requests)

        async def one(home: int, positions: list[int]) -> None:
            got = await self._reserve_home(ids, home, [requests[p] for p in positions], channel)
            for p, res in zip(positions, got, strict=True):
                out[p] = res

        if len(groups) == 1:
            (home, positions), = groups.items()
            await one(home, positions)
        else:  # every bucket's call runs to its end (none left running unowned), then the first failure
            done = await asyncio.gather(*(one(h, ps) for h, ps in groups.items()), return_exceptions=True)
            failed = [x for x in done if isinstance(x, BaseException)]
            if failed:
                raise failed[0]
        return [r for r in out if r is not None]

    async def _reserve_home(self, ids: tuple[str, ...], home: int, reqs: list[ReserveRequest],
                            channel: str) -> list[ReserveResult]:
        results = await self.inv.reserve_many(ids[home], reqs, channel, route=False)
        if any(r.code is ReserveCode.NOT_FOUND for r in results):
            self._ids.pop(ids[0], None)  # a bucket is gone (lost with Redis data): learn the buckets again
        if any(r.code is ReserveCode.SOLD_OUT for r in results):
            results = await self._borrow_and_retry(ids, home, reqs, channel, results)
        return await self._with_totals(ids, home, results)

    async def _borrow_and_retry(self, ids: tuple[str, ...], home: int, reqs: list[ReserveRequest], channel: str,
                                results: list[ReserveResult]) -> list[ReserveResult]:
        """The SOLD_OUT answers of the home bucket: move units in from the other buckets and retry, until
        each request is answered otherwise or fewer units than it asks for are left anywhere."""
        results = list(results)
        pending = [i for i, r in enumerate(results) if r.code is ReserveCode.SOLD_OUT]
        attempts = dict.fromkeys(pending, 0)
        rounds = _MAX_ROUNDS + len(ids)  # rounds that may move units; a replayed chain's walk costs none of them
        recovered = False
        for round_no in range(4 * rounds):
            # a replayed SOLD_OUT (a client's retry) first walks its chain of remembered retries: no move
            fresh = [i for i in pending if not results[i].replayed]
            if fresh:
                rounds -= 1
                if rounds < 0:
                    break
                moved = await self._refill(ids, home, sum(reqs[i].qty for i in fresh))
                if not moved:
                    remaining = await self.remaining(ids)
                    done = [i for i in fresh if reqs[i].qty > remaining]  # sold out: fewer units than asked anywhere
                    for i in done:
                        results[i] = results[i]._replace(available=remaining)
                    pending = [i for i in pending if i not in done]  # a replayed one walks its chain to the end
                    if not pending:
                        break
                    if not recovered and [i for i in fresh if i not in done]:
                        # units left, none movable: some may be stuck between buckets (a move whose take failed,
                        # e.g. over a failover, left for the reaper's recovery): complete every open move now
                        # (a take is idempotent by transfer id), then borrow again
                        recovered = True
                        if await self.recover_all(ids):
                            continue
                    if round_no:  # units on their way between buckets, or lent to this one by another batch
                        await asyncio.sleep(min(0.05, 0.002 * round_no))
            retry = []
            for i in pending:
                attempts[i] += 1
                retry.append(ReserveRequest(reqs[i].user_id, reqs[i].qty,
                                            B.retry_request_id(reqs[i].request_id, attempts[i])))
            again = await self.inv.reserve_many(ids[home], retry, channel, route=False)
            for i, r in zip(pending, again, strict=True):
                results[i] = r._replace(replayed=results[i].replayed and r.replayed)
            pending = [i for i in pending if results[i].code is ReserveCode.SOLD_OUT]
            if not pending:
                break
        if pending:
            remaining = await self.remaining(ids)
            short = [i for i in pending if reqs[i].qty <= remaining]
            if short:  # units left, but not reachable from here yet: not SOLD_OUT (the whole batch is retried)
                log.warning("buckets: %d request(s) of %s still SOLD_OUT after %d rounds with %d unit(s) left: "
                            "answered retryable", len(short), ids[0], _MAX_ROUNDS + len(ids), remaining)
                raise StockMoving(f"{remaining} unit(s) of {ids[0]} are moving between its buckets")
            for i in pending:
                results[i] = results[i]._replace(available=remaining)
        return results

    async def _refill(self, ids: tuple[str, ...], home: int, need: int) -> int:
        """Move up to ``need`` units (or more: a donor lends up to half of what it has) into bucket ``home``
        from the others, in order home+1, home+2, ...; returns the units moved in."""
        moved = 0
        k = len(ids)
        for step in range(1, k):
            donor = (home + step) % k
            if need - moved <= 0:
                break
            transfer = f"t{home}-{secrets.token_hex(8)}"
            code, units, _left = await self.lend(ids[donor], transfer, ids[home], need - moved)
            self._seen[ids[donor]] = _left
            if units <= 0 or code != "LENT":
                continue
            taken, _available = await self.take(ids[home], transfer, units, ids[donor])
            if taken not in ("TAKEN", "REPLAYED"):  # the receiver is gone: recovery keeps trying
                log.warning("buckets: bucket %s could not take transfer %s (%s)", ids[home], transfer, taken)
                continue
            await self.redis.hdel(K.bucket_transfer_keys(ids[donor])[0], transfer)
            moved += units
        return moved

    async def lend(self, donor: str, transfer: str, to: str, wanted: int,
                   replay_only: bool = False) -> tuple[str, int, int]:
        """``bucket_lend.lua`` on the donor: (code, units lent, donor's available after). ``replay_only``: confirm
        a lend already recorded (REPLAYED), never make one (GONE when its record was deleted meanwhile)."""
        code, units, available = await run_acked(
            self.redis, self.inv._scripts["bucket_lend"], [K.sale_keys(donor).sale, K.bucket_transfer_keys(donor)[0]],
            [transfer, to, wanted, "1" if replay_only else "0"], self.inv.wait_replicas, self.inv.wait_ms)
        return _s(code), int(units), int(available)

    async def take(self, receiver: str, transfer: str, units: int, donor: str) -> tuple[str, int]:
        """``bucket_take.lua`` on the receiver: (code, receiver's available after)."""
        code, available = await run_acked(
            self.redis, self.inv._scripts["bucket_take"],
            [K.sale_keys(receiver).sale, K.bucket_transfer_keys(receiver)[1]], [transfer, units, donor],
            self.inv.wait_replicas, self.inv.wait_ms)
        return _s(code), int(available)

    async def recover(self, bucket: str, grace_ms: int | None = None) -> int:
        """Complete the moves out of ``bucket`` lent at least ``grace_ms`` ago and never known taken (the
        mover crashed between the two scripts): take them (a no-op for one taken already), then drop the
        record. Returns the units that arrived now."""
        lent = K.bucket_transfer_keys(bucket)[0]
        entries = await self.redis.hgetall(lent)
        if not entries:
            return 0
        now = await self.inv.now_ms()
        grace = self.transit_grace_ms if grace_ms is None else grace_ms
        arrived = 0
        for tid_raw, raw in entries.items():
            tid = _s(tid_raw)
            try:
                to, units_s, at = _s(raw).split("|")
                units, at_ms = int(units_s), int(at)
            except ValueError:
                log.warning("buckets: malformed transfer %s in %s: %r", tid, lent, raw)
                continue
            if now - at_ms < grace:
                continue
            # the lend once more (REPLAYED: nothing moves; with replica acks on, its record is replicated); GONE:
            # its mover finished meanwhile (took it and deleted the record): nothing to do
            code, _units, _left = await self.lend(bucket, tid, to, units, replay_only=True)
            if code != "REPLAYED":
                continue
            taken, _available = await self.take(to, tid, units, bucket)
            if taken not in ("TAKEN", "REPLAYED"):
                log.warning("buckets: transfer %s from %s to %s not taken: %s", tid, bucket, to, taken)
                continue
            await self.redis.hdel(lent, tid)
            if taken == "TAKEN":
                arrived += units
                log.info("buckets: recovered transfer %s: %d unit(s) from %s to %s", tid, units, bucket, to)
        return arrived

    async def recover_all(self, ids: Sequence[str]) -> int:
        """``recover`` every bucket's open moves, whatever their age (for a batch that finds units left and none
        movable); returns the units that arrived."""
        return sum([await self.recover(b, grace_ms=0) for b in ids])

    async def in_transit(self, ids: Sequence[str]) -> int:
        """Units lent by one bucket and not (yet) taken by another."""
        units = 0
        for b in ids:
            for tid, raw in (await self.redis.hgetall(K.bucket_transfer_keys(b)[0])).items():
                to, n, _at = _s(raw).split("|")
                if not await self.redis.hexists(K.bucket_transfer_keys(to)[1], _s(tid)):
                    units += int(n)
        return units

    # -- what the rest of the system sees: one sale --------------------------------------------------

    async def remaining(self, ids: Sequence[str]) -> int:
        """Units neither held nor sold in any bucket: available somewhere or on their way between buckets.
        Read bucket after bucket; while nothing is released, held + sold only grow, so 0 here means the
        sale really was sold out when the last bucket was read."""
        async with self.redis.pipeline(transaction=False) as p:
            p.hget(K.sale_keys(ids[0]).sale, "buckets_total")
            for b in ids:
                p.hmget(K.sale_keys(b).sale, ["held", "sold", "available", "allocated"])
            replies = await p.execute()
        used = allocated = 0
        for b, (held, sold, available, alloc) in zip(ids, replies[1:], strict=True):
            used += _int(held) + _int(sold)
            allocated += _int(alloc)
            if available is not None:
                self._seen[b] = _int(available)
        # without the sale's total (bucket 0 rebuilt as a whole sale): what the buckets have, transit aside
        total = _int(replies[0]) if replies[0] is not None else allocated
        return max(0, total - used)

    async def depletion_mark(self, sale_id: str) -> str:
        """For a bucketed sale this process knows: the number of holds its buckets have had ('' otherwise),
        which names one sold-out moment (no hold is created while it is sold out)."""
        ids = self._ids.get(sale_id)
        if not ids:
            return ""
        async with self.redis.pipeline(transaction=False) as p:
            for b in ids:
                p.hlen(K.sale_keys(b).holds)
            counts = await p.execute()
        return str(sum(int(c) for c in counts))

    async def _with_totals(self, ids: tuple[str, ...], home: int, results: list[ReserveResult]) -> list[ReserveResult]:
        """Each answer's ``available`` as the sale's units left: the home bucket's own count plus the other
        buckets' as last seen (no extra round trip), except for a fresh reservation that emptied its bucket:
        that one reads every bucket, and says 0 only when nothing is left anywhere (the sale's sold-out)."""
        if not results:
            return results
        bucket = ids[home]
        self._seen[bucket] = results[-1].available
        others = sum(self._seen.get(b, 0) for b in ids if b != bucket)
        exact: int | None = None
        if any(r.ok and r.available == 0 and not r.replayed for r in results):
            exact = await self.remaining(ids)
        out = []
        for r in results:
            if r.code is ReserveCode.SOLD_OUT:
                out.append(r)
            elif exact is not None and r.ok and r.available == 0 and not r.replayed:
                out.append(r._replace(available=exact))
            else:
                out.append(r._replace(available=r.available + others))
        return out

    async def _hashes(self, ids: Sequence[str]) -> list[dict[str, str]]:
        async with self.redis.pipeline(transaction=False) as p:
            for b in ids:
                p.hgetall(K.sale_keys(b).sale)
            replies = await p.execute()
        return [{_s(a): _s(v) for a, v in h.items()} for h in replies]

    async def counters(self, sale_id: str, ids: tuple[str, ...]) -> SaleCounters | None:
        """The sale's counters summed over its buckets (terms from bucket 0); None when bucket 0 is gone."""
        hs = await self._hashes(ids)
        if not hs[0]:
            return None
        for b, h in zip(ids, hs, strict=True):
            if h:
                self._seen[b] = int(h["available"])
        c = counters_from(sale_id, hs[0])
        present = [h for h in hs if h]
        return replace(c, allocated=sum(int(h["allocated"]) for h in present),
                       available=sum(int(h["available"]) for h in present),
                       held=sum(int(h["held"]) for h in present), sold=sum(int(h["sold"]) for h in present))

    async def available_many(self, sale_ids: Sequence[str]) -> dict[str, int | None]:
        """``Inventory.available_many`` with every bucketed sale's buckets summed (one pipelined round trip)."""
        groups = [(sid, await self.of(sid) or (sid,)) for sid in sale_ids]
        async with self.redis.pipeline(transaction=False) as p:
            for _sid, ids in groups:
                for b in ids:
                    p.hget(K.sale_keys(b).sale, "available")
            values = iter(await p.execute())
        out: dict[str, int | None] = {}
        for sid, ids in groups:
            got = [next(values) for _ in ids]
            if got[0] is None:
                out[sid] = None
                continue
            for b, v in zip(ids, got, strict=True):
                if v is not None and len(ids) > 1:
                    self._seen[b] = _int(v)
            out[sid] = sum(_int(v) for v in got)
        return out

    async def close(self, ids: tuple[str, ...]) -> int | None:
        """End every bucket now; bucket 0's ends_at (None when bucket 0 is unknown)."""
        ends: int | None = None
        for b in ids[1:] + ids[:1]:
            code, at = await self.inv._scripts["close"](keys=[K.sale_keys(b).sale], args=[])
            ends = int(at) if _s(code) == "CLOSED" else None
        return ends

    async def check_invariant(self, sale_id: str, ids: tuple[str, ...]) -> InvariantReport:
        """Each bucket's audit (``audit.lua``: available + held + sold == allocated, holds and buyers agree,
        nobody over the limit), then the sale's: its buckets' allocated plus the units in transit add up to
        the sale's total."""
        problems: list[str] = []
        totals = [0, 0, 0, 0]
        for b in ids:
            r = await self.inv.check_invariant(b, route=False)
            problems += [f"bucket {b}: {p}" for p in r.problems]
            for n, v in enumerate((r.allocated, r.available, r.held, r.sold)):
                totals[n] += v
        total = _int(await self.redis.hget(K.sale_keys(sale_id).sale, "buckets_total"))
        transit = await self.in_transit(ids)
        if total and totals[0] + transit != total:
            problems.append(f"buckets' allocated {totals[0]} + in transit {transit} != the sale's units {total}")
        return InvariantReport(sale_id, totals[0], totals[1], totals[2], totals[3], tuple(problems))

    async def retire(self, ids: tuple[str, ...], retention_ms: int, *, expire: bool) -> RetireResult:
        """``retire.lua`` over every bucket, as one sale: OPEN / HOLDS / PENDING while any bucket is (or units
        are still on their way between buckets); then SETTLED (check) or RETIRED (expire: every bucket's
        keys, and their transfer records, get the retention TTL). The counters are the buckets' sums."""
        reports = [await self._retire_one(b, retention_ms, "check") for b in ids]
        code = self._combined([r.code for r in reports])
        if code is RetireCode.SETTLED and any([await self.redis.hlen(K.bucket_transfer_keys(b)[0]) for b in ids]):
            code = RetireCode.HOLDS
        if code is RetireCode.SETTLED and expire:
            reports = [await self._retire_one(b, retention_ms, "expire") for b in ids]
            code = self._combined([r.code for r in reports])
            if code is RetireCode.SETTLED:  # every bucket said RETIRED or GONE
                code = RetireCode.RETIRED
            if code is RetireCode.RETIRED:
                for b in ids:
                    for key in K.bucket_transfer_keys(b):
                        await self.redis.pexpire(key, retention_ms)
        present = [r for r in reports if r.code is not RetireCode.GONE]
        if code is RetireCode.SETTLED and not present:
            code = RetireCode.GONE
        return RetireResult(code, sum(r.allocated for r in present), sum(r.available for r in present),
                            sum(r.held for r in present), sum(r.sold for r in present),
                            max((r.ends_at_ms for r in present), default=0), reports[0].ttl_ms)

    @staticmethod
    def _combined(codes: list[RetireCode]) -> RetireCode:
        for worst in (RetireCode.INVALID, RetireCode.OPEN, RetireCode.HOLDS, RetireCode.PENDING):
            if worst in codes:
                return worst
        if all(c is RetireCode.RETIRED for c in codes):
            return RetireCode.RETIRED
        return RetireCode.SETTLED  # SETTLED, RETIRED or GONE each

    async def _retire_one(self, bucket: str, retention_ms: int, mode: str) -> RetireResult:
        k = K.sale_keys(bucket)
        r = await self.inv._scripts["retire"](keys=k.all, args=[K.SETTLE_GROUP, int(retention_ms), mode])
        code, allocated, available, held, sold, ends, ttl = r
        return RetireResult(RetireCode(_s(code)), int(allocated), int(available), int(held), int(sold), int(ends),
                            int(ttl))

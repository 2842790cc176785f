"""Each viewer their own shelf (docs/PROTOCOL.md, Each viewer their own shelf): a show's products ordered
per viewer by their own interest signals, then their fan team's, then the host's order.

Scores come from the signal sink (inventory/signal_sink.py), which hands every batch of signals it has
written to SQL to ``absorb``, in its own process (the settlement component): gateways spend nothing on
scores. ``on_signal`` adds a weight to an in-memory total; one pipeline then writes the totals:

- ``ls:shelf:{user:<id>}`` HASH ``<room>/<product>`` -> score (the viewer's own), kept 30 days after
  the viewer's last scored signal;
- ``ls:shelf-team:{room:<room>}`` HASH ``<team>|<product>`` -> score (the sum of its members'), kept as
  long as the room's other keys (``RoomBus.retain_room_ms``) after the last write.

Signals naming a sale (tap, held, sold_out, released, paid) count for the sale's product, read once per
process from SQL (``sales``); a channel's pool bucket (``<pool>--pool``) and a draw's prize sale have no
room product and count for nothing. Products that are not the room's (a ``view`` names any product id)
are dropped at the flush, so a viewer cannot grow their hash with made-up ids.

The order itself is the pure ``shelf_order``; ``Shelf.order`` / ``Shelf.message`` read the two hashes
with one pipeline. The host still controls what is pinned: the page shows the pinned product on top,
whatever the shelf's order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from inventory.draws import PRIZE_SALE_MARK
from inventory.keys import POOL_BUCKET_SUFFIX, PREFIX, team_keys
from inventory.signal_log import Signal, SignalKind
from inventory.store import Store

from .catalogue import check_slug
from .errors import NotFound, Unauthorized
from .identity import Identity
from .tasks import Every

__all__ = ["Shelf", "WEIGHTS", "shelf_order", "is_personal", "shelf_key", "team_shelf_key", "USER_TTL_S"]

log = logging.getLogger(__name__)

# what one signal adds to the score of its product (kinds not listed: 0)
WEIGHTS: dict[str, int] = {
    SignalKind.VIEWED.value: 1,
    SignalKind.WATCHED.value: 2,
    SignalKind.TAP.value: 3,
    SignalKind.SOLD_OUT.value: 3,
    SignalKind.HELD.value: 4,
    SignalKind.SAVED.value: 5,
    SignalKind.RELEASED.value: 1,
    SignalKind.PAID.value: -8,  # bought already: it goes down
}
_BY_SALE = frozenset({SignalKind.TAP.value, SignalKind.HELD.value, SignalKind.SOLD_OUT.value,
                      SignalKind.RELEASED.value, SignalKind.PAID.value})
_ANONYMOUS = ("b:", "s:")  # viewer ids of anonymous pages (commerce.signals.viewer_key)

USER_TTL_S = 30 * 86400          # a viewer's scores, after their last scored signal
MAX_PENDING = 100_000            # (viewer, room, product-or-sale) totals kept between two flushes
MAX_SALE_LOOKUPS = 200           # sales read from SQL per flush (the rest wait for the next one)
_PRODUCTS_FRESH_S = 60.0         # a room's product list is read again after this long
_PRODUCTS_RETRY_S = 2.0          # ... or after this long when a signal names a product not in it
_MISS_FRESH_S = 30.0             # an unknown sale id is looked up again after this long
_MAX_CACHED = 50_000             # entries per cache before it is cleared


def shelf_key(user: str) -> str:
    return f"{PREFIX}:shelf:{{user:{user}}}"


def team_shelf_key(room_id: str) -> str:
    return f"{PREFIX}:shelf-team:{{room:{room_id}}}"


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def shelf_order(product_ids: Sequence[str], own: Mapping[str, int], team: Mapping[str, int]) -> list[str]:
    """The rule. Each product has the viewer's own score and their team's (absent: 0). Products are
    sorted by own score (highest first), then team score (highest first), then the host's order (the
    order of ``product_ids``). So products with a positive score come first, then those without any
    score (or 0) in the host's order, then those whose score went below 0 (bought already). Pure."""
    ids = _unique(product_ids)
    host = {p: i for i, p in enumerate(ids)}
    return sorted(ids, key=lambda p: (-own.get(p, 0), -team.get(p, 0), host[p]))


def is_personal(product_ids: Sequence[str], own: Mapping[str, int], team: Mapping[str, int]) -> bool:
    """True when some product of the list has a score (own or team) other than 0: the order is personal."""
    return any(own.get(p, 0) or team.get(p, 0) for p in product_ids)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _ints(ids: Sequence[str], raw: Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p, v in zip(ids, raw, strict=True):
        if v is not None:
            try:
                out[p] = int(v)
            except ValueError:
                continue
    return out


class Shelf:
    def __init__(self, redis: Redis, store: Store, *, enabled: bool = True, flush_s: float = 1.0,
                 team_ttl_ms: int = 7 * 86400 * 1000) -> None:
        self.redis = redis
        self.store = store
        self.enabled = enabled
        self.team_ttl_ms = team_ttl_ms
        self.dropped = 0  # totals left out because the buffer was full
        # (user, room, "p"|"s", product or sale) -> weight not written yet
        self._pending: dict[tuple[str, str, str, str], int] = {}
        self._sales: dict[str, tuple[str, str] | float] = {}  # sale -> (room, product) | when it was not found
        self._products: dict[str, tuple[float, frozenset[str]]] = {}  # room -> (read at, its product ids)
        self._every = Every(flush_s, self._flush_round, log, "shelf flush")

    # -- recording (the sink's batches, through absorb) -------------------------------------------------------------

    def on_signal(self, s: Signal) -> None:
        """Add the signal's weight to its (viewer, room, product) total. Cheap: no I/O."""
        if not self.enabled:
            return
        w = WEIGHTS.get(s.kind, 0)
        user = s.user_id
        if not w or not user or user.startswith(_ANONYMOUS):
            return
        if s.kind in _BY_SALE:
            if not s.sale_id or s.sale_id.endswith(POOL_BUCKET_SUFFIX) or PRIZE_SALE_MARK in s.sale_id:
                return
            key = (user, s.room_id, "s", s.sale_id)
        else:
            if not s.product_id or not s.room_id:
                return
            key = (user, s.room_id, "p", s.product_id)
        if key not in self._pending and len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending[key] = self._pending.get(key, 0) + w

    @property
    def pending(self) -> int:
        """(viewer, product) totals gathered and not written yet."""
        return len(self._pending)

    async def absorb(self, batch: Sequence[Signal]) -> None:
        """A batch of signals the signal sink just wrote to SQL (``SignalSink(on_batch=...)``): their weights
        are added and written now, in the sink's process, so gateways never spend a Redis call on scores."""
        if not self.enabled:
            return
        for s in batch:
            self.on_signal(s)
        await self.flush()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.enabled:
            self._every.start()

    async def aclose(self) -> None:
        await self._every.aclose()
        try:
            await self.flush()
        except Exception as exc:
            log.warning("shelf: %d scores not written at shutdown: %s", len(self._pending), exc)

    async def _flush_round(self) -> None:
        await self.flush()

    # -- the flush -----------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write the totals gathered since the last flush; returns how many (viewer, product) fields
        were incremented. On a Redis or SQL error the totals are kept for the next round."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            return await self._write(batch)
        except Exception:
            for key, w in batch.items():  # back in front of what arrived meanwhile (bounded like on_signal)
                if key in self._pending or len(self._pending) < MAX_PENDING:
                    self._pending[key] = self._pending.get(key, 0) + w
            raise

    async def _write(self, batch: dict[tuple[str, str, str, str], int]) -> int:
        await self._resolve_sales([k[3] for k in batch if k[2] == "s"])
        scores: dict[tuple[str, str, str], int] = {}  # (user, room, product) -> weight
        for (user, room, kind, ident), w in batch.items():
            if kind == "s":
                hit = self._sales.get(ident)
                if not isinstance(hit, tuple):
                    continue  # not a room sale (or not found)
                room, product = hit
            else:
                product = ident
            if room:
                scores[(user, room, product)] = scores.get((user, room, product), 0) + w
        rooms = {room for _, room, _ in scores}
        products = {room: await self._room_products(room, {p for _, r, p in scores if r == room}) for room in rooms}
        scores = {k: w for k, w in scores.items() if w and k[2] in products[k[1]]}
        if not scores:
            return 0
        teams = await self._teams_of(scores)
        team_scores: dict[tuple[str, str], int] = {}  # (room, "<team>|<product>") -> weight
        for (user, room, product), w in scores.items():
            team = teams.get((room, user))
            if team:
                f = (room, f"{team}|{product}")
                team_scores[f] = team_scores.get(f, 0) + w
        async with self.redis.pipeline(transaction=False) as p:
            users = set()
            for (user, room, product), w in scores.items():
                p.hincrby(shelf_key(user), f"{room}/{product}", w)
                users.add(user)
            for user in users:
                p.expire(shelf_key(user), USER_TTL_S)
            team_rooms = set()
            for (room, field), w in team_scores.items():
                if w:
                    p.hincrby(team_shelf_key(room), field, w)
                    team_rooms.add(room)
            for room in team_rooms:
                p.pexpire(team_shelf_key(room), self.team_ttl_ms)
            await p.execute()
        return len(scores)

    async def _resolve_sales(self, sale_ids: Iterable[str]) -> None:
        """Fill the sale -> (room, product) cache from SQL for the sales it does not know."""
        now = time.monotonic()
        todo = []
        for sale in _unique(sale_ids):
            hit = self._sales.get(sale)
            if hit is None or (isinstance(hit, float) and now - hit > _MISS_FRESH_S):
                todo.append(sale)
        if len(self._sales) + len(todo) > _MAX_CACHED:
            self._sales.clear()
        for sale in todo[:MAX_SALE_LOOKUPS]:
            rec = await self.store.get_sale(sale)
            self._sales[sale] = (rec.room_id, rec.product_id) if rec is not None and rec.room_id else now

    async def _room_products(self, room: str, named: set[str]) -> frozenset[str]:
        """The room's product ids, read again when stale, or a little later when a signal names one not in it."""
        now = time.monotonic()
        hit = self._products.get(room)
        if hit is not None:
            at, known = hit
            fresh = now - at < _PRODUCTS_FRESH_S
            if fresh and (named <= known or now - at < _PRODUCTS_RETRY_S):
                return known
        if len(self._products) >= _MAX_CACHED:
            self._products.clear()
        known = frozenset(p.product_id for p in await self.store.list_products(room))
        self._products[room] = (now, known)
        return known

    async def _teams_of(self, scores: Mapping[tuple[str, str, str], int]) -> dict[tuple[str, str], str]:
        """(room, user) -> the user's fan team in that room: one HMGET per room of the users involved."""
        by_room: dict[str, list[str]] = {}
        for user, room, _ in scores:
            users = by_room.setdefault(room, [])
            if user not in users:
                users.append(user)
        rooms = list(by_room)
        async with self.redis.pipeline(transaction=False) as p:
            for room in rooms:
                p.hmget(team_keys(room).members, by_room[room])
            got = await p.execute()
        out: dict[tuple[str, str], str] = {}
        for room, values in zip(rooms, got, strict=True):
            for user, raw in zip(by_room[room], values, strict=True):
                if raw:
                    out[(room, user)] = _text(raw).split("|", 1)[0]
        return out

    # -- reading -------------------------------------------------------------------------------------

    async def _scored(self, user: str, room_id: str, team: str | None,
                      product_ids: Sequence[str]) -> tuple[list[str], bool]:
        ids = _unique(product_ids)
        if not self.enabled or not user or user.startswith(_ANONYMOUS) or len(ids) < 2:
            return ids, False
        async with self.redis.pipeline(transaction=False) as p:
            p.hmget(shelf_key(user), [f"{room_id}/{pid}" for pid in ids])
            if team:
                p.hmget(team_shelf_key(room_id), [f"{team}|{pid}" for pid in ids])
            got = await p.execute()
        own = _ints(ids, got[0])
        team_scores = _ints(ids, got[1]) if team else {}
        if not is_personal(ids, own, team_scores):
            return ids, False
        return shelf_order(ids, own, team_scores), True

    async def order(self, user: str, room_id: str, team: str | None, product_ids: list[str]) -> list[str]:
        """``product_ids`` (the host's order) ordered for this viewer: ``shelf_order`` over their own and
        their team's scores; the host's order when the shelf is off, the viewer anonymous or nothing scored."""
        return (await self._scored(user, room_id, team, product_ids))[0]

    async def message(self, user: str, room_id: str, team: str | None, product_ids: list[str]) -> dict[str, Any]:
        """The ``shelf`` message: ``{type: "shelf", room, order, personal}``."""
        order, personal = await self._scored(user, room_id, team, product_ids)
        return {"type": "shelf", "room": room_id, "order": order, "personal": personal}

    async def view(self, viewer: Identity, room_id: str) -> dict[str, Any]:
        """``GET /api/rooms/{room}/shelf``: ``{room, order, personal}`` for a viewer token."""
        if not viewer.is_viewer:
            raise Unauthorized("the shelf needs a viewer token")
        check_slug("room", room_id)
        if await self.store.get_room(room_id) is None:
            raise NotFound(f"no room {room_id}")
        ids = [p.product_id for p in await self.store.list_products(room_id)]  # by product_id: the snapshot's order
        team = None
        if self.enabled:
            raw = await self.redis.hget(team_keys(room_id).members, viewer.user)
            team = _text(raw).split("|", 1)[0] if raw else None
        order, personal = await self._scored(viewer.user, room_id, team, ids)
        return {"room": room_id, "order": order, "personal": personal}

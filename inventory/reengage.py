"""Re-engagement in SQL (docs/WEBHOOKS.md, docs/GROWTH-reengage.md): viewers' reminders, the notices sent
to viewers (a reminder firing, or a host or merchant notifying an audience) and the webhook deliveries of a
notice to the platform for the viewers who were offline.

- ``reminders``: one row per (user, room, sale), ``sale_id`` '' for the show. ``fired_at_ms`` is 0 until it
  fires; it fires once: the firing is a conditional UPDATE (``fired_at_ms = 0``) whose updated rows are the
  users to tell, committed in one transaction with the notice and its deliveries, so several processes
  reaching the same trigger tell each viewer once.
- ``notices``: what was sent and to how many (in-app to the online viewers, by webhook to the offline).
- ``deliveries``: one signed POST to the platform per notice per batch of up to 500 offline users. ``body``
  is fixed at creation (a retry sends the same bytes with the same ``delivery_id``); a sender claims a due
  one with a conditional UPDATE (``state`` pending, ``next_at_ms`` <= now -> now + lease), so two processes
  never send the same attempt at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger, Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text, delete, func, select, update,
)
from sqlalchemy.dialects import postgresql, sqlite

from .store import Store, metadata, rooms, sales

__all__ = ["reminders", "notices", "deliveries", "Reminder", "Notice", "Delivery", "ReengageStore",
           "MAX_REMINDERS", "SHOW", "PENDING", "SENT", "FAILED"]

MAX_REMINDERS = 200   # pending reminders per viewer
SHOW = ""             # the sale_id of a show's reminder
PENDING, SENT, FAILED = "pending", "sent", "failed"

reminders = Table(
    "reminders", metadata,
    Column("user_id", String(128), nullable=False),
    Column("room_id", String(64), nullable=False),
    Column("sale_id", String(64), nullable=False, default=""),  # '' = the show (its go-live)
    Column("created_at_ms", BigInteger, nullable=False),
    Column("fired_at_ms", BigInteger, nullable=False, default=0),  # 0 until sent
    PrimaryKeyConstraint("user_id", "room_id", "sale_id", name="pk_reminders"),
    Index("ix_reminders_target", "room_id", "sale_id", "fired_at_ms", "user_id"),
    Index("ix_reminders_fired", "fired_at_ms"),
)

notices = Table(
    "notices", metadata,
    Column("notice_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),            # reminder | audience
    Column("room_id", String(64), nullable=False),
    Column("sale_id", String(64), nullable=False),         # '' for a show's reminder
    Column("audience_id", String(128), nullable=False),    # '' for a reminder
    Column("actor", String(128), nullable=False),          # who notified ('' for a reminder)
    Column("request_id", String(128), nullable=False),
    Column("title", String(256), nullable=False),
    Column("starts_at_ms", BigInteger, nullable=False),
    Column("url", String(512), nullable=False),
    Column("online", Integer, nullable=False),             # told in the app
    Column("offline", Integer, nullable=False),            # left to the platform (webhook)
    Column("deliveries", Integer, nullable=False),         # webhook deliveries queued
    Column("created_at_ms", BigInteger, nullable=False),
    Index("ix_notices_created", "created_at_ms"),
)

deliveries = Table(
    "deliveries", metadata,
    Column("delivery_id", String(64), primary_key=True),
    Column("notice_id", String(64), nullable=False),
    Column("body", Text, nullable=False),                  # the exact JSON sent on every attempt
    Column("state", String(16), nullable=False),           # pending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at_ms", BigInteger, nullable=False),      # due time, or a sender's lease while it sends
    Column("last_status", Integer, nullable=False, default=0),  # HTTP status of the last attempt (0: none)
    Column("last_error", String(300), nullable=False, default=""),  # never a secret
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    Index("ix_deliveries_due", "state", "next_at_ms"),
    Index("ix_deliveries_notice", "notice_id"),
)


@dataclass(frozen=True, slots=True)
class Reminder:
    user_id: str
    room_id: str
    sale_id: str  # '' = the show
    created_at_ms: int
    fired_at_ms: int


@dataclass(frozen=True, slots=True)
class Notice:
    notice_id: str
    kind: str
    room_id: str
    sale_id: str
    title: str
    starts_at_ms: int
    url: str
    created_at_ms: int
    audience_id: str = ""
    actor: str = ""
    request_id: str = ""
    online: int = 0
    offline: int = 0
    deliveries: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    notice_id: str
    body: str
    state: str = PENDING
    attempts: int = 0
    next_at_ms: int = 0
    last_status: int = 0
    last_error: str = ""
    created_at_ms: int = 0
    updated_at_ms: int = 0


def _delivery(r: Any) -> Delivery:
    return Delivery(r.delivery_id, r.notice_id, r.body, r.state, r.attempts, r.next_at_ms, r.last_status,
                    r.last_error, r.created_at_ms, r.updated_at_ms)


def _notice(r: Any) -> Notice:
    return Notice(r.notice_id, r.kind, r.room_id, r.sale_id, r.title, r.starts_at_ms, r.url, r.created_at_ms,
                  r.audience_id, r.actor, r.request_id, r.online, r.offline, r.deliveries)


def _notice_row(n: Notice) -> dict[str, object]:
    return {"notice_id": n.notice_id, "kind": n.kind, "room_id": n.room_id, "sale_id": n.sale_id,
            "audience_id": n.audience_id, "actor": n.actor, "request_id": n.request_id, "title": n.title[:256],
            "starts_at_ms": n.starts_at_ms, "url": n.url[:512], "online": n.online, "offline": n.offline,
            "deliveries": n.deliveries, "created_at_ms": n.created_at_ms}


def _delivery_row(d: Delivery) -> dict[str, object]:
    return {"delivery_id": d.delivery_id, "notice_id": d.notice_id, "body": d.body, "state": d.state,
            "attempts": d.attempts, "next_at_ms": d.next_at_ms, "last_status": d.last_status,
            "last_error": d.last_error, "created_at_ms": d.created_at_ms, "updated_at_ms": d.updated_at_ms}


# (the notice, the offline users among those fired) -> the notice with its counts, and its deliveries
NoticeBuilder = Callable[[Sequence[str], Sequence[str]], tuple[Notice, list[Delivery]]]


class ReengageStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert

    # -- reminders -------------------------------------------------------------------------------

    async def remind(self, user_id: str, room_id: str, sale_id: str, now_ms: int) -> tuple[bool, int]:
        """(True, now) when asked now, or again after it fired (it waits for the next trigger);
        (False, created_at) when it is already waiting."""
        key = (reminders.c.user_id == user_id, reminders.c.room_id == room_id, reminders.c.sale_id == sale_id)
        async with self.engine.begin() as conn:
            got = (await conn.execute(self._insert(reminders).values(
                user_id=user_id, room_id=room_id, sale_id=sale_id, created_at_ms=now_ms, fired_at_ms=0)
                .on_conflict_do_nothing().returning(reminders.c.user_id))).first()
            if got is not None:
                return True, now_ms
            rearmed = await conn.execute(update(reminders).where(*key, reminders.c.fired_at_ms != 0)
                                         .values(created_at_ms=now_ms, fired_at_ms=0))
            if rearmed.rowcount:
                return True, now_ms
            row = (await conn.execute(select(reminders.c.created_at_ms).where(*key))).first()
        return False, int(row[0]) if row is not None else now_ms

    async def forget(self, user_id: str, room_id: str, sale_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(delete(reminders).where(
                reminders.c.user_id == user_id, reminders.c.room_id == room_id, reminders.c.sale_id == sale_id,
                reminders.c.fired_at_ms == 0))
        return bool(done.rowcount)

    async def waiting_since(self, user_id: str, room_id: str, sale_id: str) -> int | None:
        """When this reminder was asked for, if it is waiting (None: none, or it fired)."""
        q = select(reminders.c.created_at_ms).where(
            reminders.c.user_id == user_id, reminders.c.room_id == room_id, reminders.c.sale_id == sale_id,
            reminders.c.fired_at_ms == 0)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return int(row[0]) if row is not None else None

    async def pending_count(self, user_id: str) -> int:
        q = (select(func.count()).select_from(reminders)
             .where(reminders.c.user_id == user_id, reminders.c.fired_at_ms == 0))
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def of_user(self, user_id: str, limit: int = MAX_REMINDERS) -> list[Reminder]:
        """The viewer's waiting reminders, newest first."""
        q = (select(reminders).where(reminders.c.user_id == user_id, reminders.c.fired_at_ms == 0)
             .order_by(reminders.c.created_at_ms.desc(), reminders.c.room_id, reminders.c.sale_id).limit(limit))
        async with self.engine.connect() as conn:
            return [Reminder(r.user_id, r.room_id, r.sale_id, r.created_at_ms, r.fired_at_ms)
                    for r in await conn.execute(q)]

    async def waiting(self, room_id: str, sale_id: str, after_user: str, limit: int) -> list[str]:
        """Users whose reminder for (room, sale) has not fired, by user id after ``after_user``."""
        q = (select(reminders.c.user_id)
             .where(reminders.c.room_id == room_id, reminders.c.sale_id == sale_id, reminders.c.fired_at_ms == 0,
                    reminders.c.user_id > after_user)
             .order_by(reminders.c.user_id).limit(limit))
        async with self.engine.connect() as conn:
            return [str(u) for (u,) in await conn.execute(q)]

    async def fire(self, room_id: str, sale_id: str, users: Sequence[str], now_ms: int, offline: set[str],
                   build: NoticeBuilder) -> tuple[list[str], Notice | None]:
        """Mark these users' reminders fired, only those still waiting (the rows this UPDATE changed), and
        in the same transaction store the notice ``build`` makes for them and its deliveries. Returns the
        users fired here (others were fired by another process) and the notice (None: none fired)."""
        if not users:
            return [], None
        stmt = (update(reminders)
                .where(reminders.c.room_id == room_id, reminders.c.sale_id == sale_id,
                       reminders.c.user_id.in_(list(users)), reminders.c.fired_at_ms == 0)
                .values(fired_at_ms=now_ms).returning(reminders.c.user_id))
        async with self.engine.begin() as conn:
            fired = sorted(str(u) for (u,) in await conn.execute(stmt))
            if not fired:
                return [], None
            notice, queued = build(fired, [u for u in fired if u in offline])
            await conn.execute(notices.insert().values(**_notice_row(notice)))
            if queued:
                await conn.execute(deliveries.insert(), [_delivery_row(d) for d in queued])
        return fired, notice

    async def expire(self, room_id: str, sale_id: str, now_ms: int) -> int:
        """Reminders of a sale that ended before they could fire: marked fired, nobody told."""
        async with self.engine.begin() as conn:
            done = await conn.execute(update(reminders).where(
                reminders.c.room_id == room_id, reminders.c.sale_id == sale_id, reminders.c.fired_at_ms == 0)
                .values(fired_at_ms=now_ms))
        return int(done.rowcount or 0)

    async def overdue(self, now_ms: int, limit: int = 50) -> list[tuple[str, str, int]]:
        """(room, sale, sale's ends_at) of waiting sale reminders whose sale has started, and (room, '', 0)
        of waiting show reminders whose room is live: triggers no hook caught (no gateway had the room)."""
        q_sales = (select(reminders.c.room_id, reminders.c.sale_id, sales.c.ends_at_ms)
                   .join(sales, sales.c.sale_id == reminders.c.sale_id)
                   .where(reminders.c.fired_at_ms == 0, reminders.c.sale_id != SHOW,
                          sales.c.room_id == reminders.c.room_id, sales.c.starts_at_ms <= now_ms)
                   .distinct().limit(limit))
        q_shows = (select(reminders.c.room_id)
                   .join(rooms, rooms.c.room_id == reminders.c.room_id)
                   .where(reminders.c.fired_at_ms == 0, reminders.c.sale_id == SHOW, rooms.c.status == "live")
                   .distinct().limit(limit))
        async with self.engine.connect() as conn:
            out = [(str(r), str(s), int(e)) for r, s, e in await conn.execute(q_sales)]
            out += [(str(r), SHOW, 0) for (r,) in await conn.execute(q_shows)]
        return out

    # -- notices ---------------------------------------------------------------------------------

    async def notice(self, notice_id: str) -> Notice | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(notices).where(notices.c.notice_id == notice_id))).first()
        return _notice(row) if row is not None else None

    async def add_notice(self, notice: Notice, queued: Sequence[Delivery]) -> tuple[bool, Notice]:
        """Store a notice and its deliveries in one transaction; (False, the stored one) when a notice
        with this id exists (the request was made before: nothing is written)."""
        async with self.engine.begin() as conn:
            got = (await conn.execute(self._insert(notices).values(**_notice_row(notice))
                                      .on_conflict_do_nothing().returning(notices.c.notice_id))).first()
            if got is None:
                row = (await conn.execute(select(notices).where(notices.c.notice_id == notice.notice_id))).one()
                return False, _notice(row)
            if queued:
                await conn.execute(deliveries.insert(), [_delivery_row(d) for d in queued])
        return True, notice

    # -- deliveries ------------------------------------------------------------------------------

    async def claim_due(self, now_ms: int, lease_ms: int, limit: int) -> list[Delivery]:
        """Pending deliveries due now, each claimed for ``lease_ms`` by a conditional UPDATE (a row another
        sender claimed meanwhile is skipped): the caller sends them and then ``record``s the outcome."""
        q = (select(deliveries.c.delivery_id).where(deliveries.c.state == PENDING, deliveries.c.next_at_ms <= now_ms)
             .order_by(deliveries.c.next_at_ms).limit(limit))
        async with self.engine.connect() as conn:
            due = [str(d) for (d,) in await conn.execute(q)]
        out = []
        for delivery_id in due:
            stmt = (update(deliveries)
                    .where(deliveries.c.delivery_id == delivery_id, deliveries.c.state == PENDING,
                           deliveries.c.next_at_ms <= now_ms)
                    .values(next_at_ms=now_ms + lease_ms, updated_at_ms=now_ms).returning(*deliveries.c))
            async with self.engine.begin() as conn:
                row = (await conn.execute(stmt)).first()
            if row is not None:
                out.append(_delivery(row))
        return out

    async def record(self, claimed: Delivery, state: str, next_at_ms: int, status: int, error: str,
                     now_ms: int) -> bool:
        """The outcome of the attempt made on ``claimed``: one more attempt, the new state. Written only if
        the row is still as claimed (False: its lease lapsed and another sender recorded first)."""
        stmt = (update(deliveries)
                .where(deliveries.c.delivery_id == claimed.delivery_id, deliveries.c.state == PENDING,
                       deliveries.c.attempts == claimed.attempts)
                .values(state=state, attempts=claimed.attempts + 1, next_at_ms=next_at_ms, last_status=status,
                        last_error=error[:300], updated_at_ms=now_ms))
        async with self.engine.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def delivery(self, delivery_id: str) -> Delivery | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(deliveries).where(deliveries.c.delivery_id == delivery_id))).first()
        return _delivery(row) if row is not None else None

    async def of_notice(self, notice_id: str) -> list[Delivery]:
        q = select(deliveries).where(deliveries.c.notice_id == notice_id).order_by(deliveries.c.delivery_id)
        async with self.engine.connect() as conn:
            return [_delivery(r) for r in await conn.execute(q)]

    async def notices_of(self, room_id: str, sale_id: str) -> list[Notice]:
        q = (select(notices).where(notices.c.room_id == room_id, notices.c.sale_id == sale_id)
             .order_by(notices.c.created_at_ms))
        async with self.engine.connect() as conn:
            return [_notice(r) for r in await conn.execute(q)]

    async def prune(self, before_ms: int) -> int:
        """Forget fired reminders, finished deliveries and notices older than ``before_ms``."""
        async with self.engine.begin() as conn:
            n = (await conn.execute(delete(reminders).where(reminders.c.fired_at_ms > 0,
                                                            reminders.c.fired_at_ms < before_ms))).rowcount or 0
            n += (await conn.execute(delete(deliveries).where(deliveries.c.state != PENDING,
                                                              deliveries.c.updated_at_ms < before_ms))).rowcount or 0
            n += (await conn.execute(delete(notices).where(notices.c.created_at_ms < before_ms))).rowcount or 0
        return int(n)

"""Re-engagement (docs/GROWTH-reengage.md, docs/WEBHOOKS.md): "remind me" on a scheduled show or sale, and
the notices that bring viewers back: in the app for those online (a ``notice`` message on their socket),
by a signed webhook to the platform for those offline (``commerce/webhooks.py``).

Triggers: the show goes live (``Commerce.set_live``) -> its show reminders; a sale opens
(``Sales.fire_open``) -> that sale's reminders; a host or an audience's merchant notifies an audience about
a sale (``notify``). A reminder fires once whichever process gets there (``ReengageStore.fire``). The
``ReengageLoop`` (every process's ``Upkeep``) fires what no hook caught (a sale that opened while no gateway
had its room loaded) and sends the webhook deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import orjson
from redis.asyncio import Redis

from inventory.draws import PRIZE_SALE_MARK
from inventory.reengage import MAX_REMINDERS, SHOW, Delivery, Notice, ReengageStore
from inventory.store import SaleRecord, Store

from .audiences import AudienceId, Audiences
from .catalogue import Catalogue, check_slug
from .errors import Conflict, ErrorCode, Forbidden, NotFound, Refused, Unauthorized
from .identity import Identity
from .online import Online
from .room_bus import RoomBus
from .sales import Sales
from .tasks import Every, OwnedTasks
from .validation import ID_RE, Id
from .webhooks import Deliverer

__all__ = ["Reengage", "ReengageLoop", "NotifyBody", "notice_wire", "notice_message",
           "delivery_body", "viewer_url", "BATCH"]

log = logging.getLogger(__name__)

BATCH = 500             # users per reminder firing transaction, and per webhook delivery
SWEEP_S = 5.0           # how often a process looks for reminders no hook fired
PRUNE_S = 3600.0        # how often it forgets old fired reminders, finished deliveries and notices
KEEP_MS = 30 * 86_400_000
_TELL_CHUNK = 200       # in-app notices published concurrently


@dataclass(frozen=True, slots=True)
class NotifyBody:
    """``POST /api/rooms/{room}/sales/{sale}/notify``."""
    audience_id: AudienceId
    request_id: Id


def viewer_url(room_id: str, sale_id: str) -> str:
    """The viewers' page of the show (relative to the server's public origin), at the sale when there is one."""
    return f"/rooms/{room_id}" + (f"?sale={sale_id}" if sale_id else "")


def notice_wire(n: Notice) -> dict[str, Any]:
    return {"notice_id": n.notice_id, "kind": n.kind, "room_id": n.room_id, "sale_id": n.sale_id or None,
            "title": n.title, "starts_at": n.starts_at_ms, "url": n.url}


def notice_message(n: Notice) -> dict[str, Any]:
    """The WebSocket message an online viewer gets (docs/GROWTH-reengage.md ``notice``)."""
    return {"type": "notice", "notice": notice_wire(n)}


def delivery_body(n: Notice, delivery_id: str, users: Sequence[str]) -> str:
    """The JSON a webhook delivery POSTs (docs/WEBHOOKS.md), fixed for all its attempts."""
    return orjson.dumps({"delivery_id": delivery_id, "type": n.kind, "created_at": n.created_at_ms,
                         "users": list(users), "room_id": n.room_id, "sale_id": n.sale_id or None,
                         "title": n.title, "starts_at": n.starts_at_ms, "url": n.url}).decode()


def _deliveries(n: Notice, offline: Sequence[str]) -> list[Delivery]:
    out = []
    for i in range(0, len(offline), BATCH):
        delivery_id = "d-" + secrets.token_hex(12)
        out.append(Delivery(delivery_id, n.notice_id, delivery_body(n, delivery_id, offline[i:i + BATCH]),
                            next_at_ms=n.created_at_ms, created_at_ms=n.created_at_ms, updated_at_ms=n.created_at_ms))
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


class Reengage:
    def __init__(self, store: Store, bus: RoomBus, catalogue: Catalogue, sales: Sales, redis: Redis) -> None:
        self.sql = ReengageStore(store)
        self.store = store
        self.online = Online(redis)
        self.bus = bus
        self.catalogue = catalogue
        self.sales = sales
        self.audiences: Audiences | None = None  # commerce/audiences.py, set by Commerce
        self.webhooks_on = False    # LIVESALE_WEBHOOK_URL is set: offline viewers get deliveries
        self.deliverer: Deliverer | None = None
        self._tasks = OwnedTasks(log, "reminder firing")
        self._firing: set[tuple[str, str]] = set()
        self._swept_at = 0.0
        self._pruned_at = time.monotonic()

    # -- a viewer's reminders --------------------------------------------------------------------------

    async def remind(self, viewer: Identity, room_id: str, sale_id: str | None) -> tuple[bool, dict[str, Any]]:
        """Remind this viewer when the show goes live (``sale_id`` None) or the sale opens. (True, ...) when
        asked now, (False, ...) when it was waiting already."""
        if not viewer.is_viewer:
            raise Unauthorized("a reminder needs a viewer token")
        await self.catalogue.room(room_id)  # INVALID / NOT_FOUND
        if sale_id is not None:
            await self._sale_in(room_id, sale_id)
            _, wire = await self.sales.get(sale_id)
            if wire["state"] != "scheduled":
                raise Conflict(f"sale {sale_id} has started: reminders are for scheduled sales")
        sale = sale_id or SHOW
        since = await self.sql.waiting_since(viewer.user, room_id, sale)
        if since is None and await self.sql.pending_count(viewer.user) >= MAX_REMINDERS:
            raise Conflict(f"at most {MAX_REMINDERS} reminders: remove some first")
        fresh, created = (False, since) if since is not None else await self.sql.remind(viewer.user, room_id, sale,
                                                                                        _now_ms())
        return fresh, {"room_id": room_id, "sale_id": sale_id, "created_at": created}

    async def forget(self, viewer: Identity, room_id: str, sale_id: str | None) -> bool:
        if not viewer.is_viewer:
            raise Unauthorized("this needs a viewer token")
        check_slug("room", room_id)
        if sale_id is not None:
            check_slug("sale", sale_id)
        return await self.sql.forget(viewer.user, room_id, sale_id or SHOW)

    async def of(self, viewer: Identity) -> list[dict[str, Any]]:
        if not viewer.is_viewer:
            raise Unauthorized("this needs a viewer token")
        return [{"room_id": r.room_id, "sale_id": r.sale_id or None, "created_at": r.created_at_ms}
                for r in await self.sql.of_user(viewer.user)]

    async def _sale_in(self, room_id: str, sale_id: str) -> SaleRecord:
        rec = await self.store.get_sale(check_slug("sale", sale_id))
        if rec is None or rec.room_id != room_id or PRIZE_SALE_MARK in rec.sale_id:
            raise NotFound(f"no sale {sale_id} in room {room_id}")
        return rec

    # -- triggers ----------------------------------------------------------------------------------------

    def show_live(self, room_id: str) -> None:
        """The show went live (``go_live``): its show reminders fire, in the background."""
        self._spawn(room_id, SHOW)

    def sale_opened(self, room_id: str, sale_id: str) -> None:
        """A sale opened (``sale_open``, on every gateway that had the room): its reminders fire."""
        self._spawn(room_id, sale_id)

    def _spawn(self, room_id: str, sale_id: str) -> None:
        key = (room_id, sale_id)
        if key in self._firing:  # this process is at it already
            return
        self._firing.add(key)

        async def run() -> None:
            try:
                await self.fire(room_id, sale_id)
            finally:
                self._firing.discard(key)
        self._tasks.spawn(run())

    async def fire(self, room_id: str, sale_id: str) -> int:
        """Fire the waiting reminders of the show (``sale_id`` '') or of a sale, a batch at a time; returns
        how many this process fired (each reminder fires once over all processes)."""
        title, starts_at = await self._about(room_id, sale_id)
        fired_here, after = 0, ""
        while True:
            users = await self.sql.waiting(room_id, sale_id, after, BATCH)
            if not users:
                return fired_here
            after = users[-1]
            where = await self.online.where(users)
            offline = {u for u in users if u not in where}
            now = _now_ms()
            base = Notice("r-" + secrets.token_hex(10), "reminder", room_id, sale_id, title, starts_at or now,
                          viewer_url(room_id, sale_id), now)
            fired, notice = await self.sql.fire(room_id, sale_id, users, now, offline, partial(self._counted, base))
            if notice is not None:
                fired_here += len(fired)
                await self._tell([(u, where[u]) for u in fired if u in where], notice)
                if notice.deliveries:
                    self._wake()

    def _counted(self, n: Notice, fired: Sequence[str], gone: Sequence[str]) -> tuple[Notice, list[Delivery]]:
        """A reminder notice for the users fired (``gone``: those offline among them) and its deliveries."""
        queued = _deliveries(n, gone) if self.webhooks_on else []
        return replace(n, online=len(fired) - len(gone), offline=len(gone), deliveries=len(queued)), queued

    async def _about(self, room_id: str, sale_id: str) -> tuple[str, int]:
        """The notice's title and start: the sale's, or the show's (its start: now)."""
        if sale_id:
            rec = await self.store.get_sale(sale_id)
            if rec is not None:
                return rec.title, rec.starts_at_ms
        room = await self.store.get_room(room_id)
        return (room.title if room is not None else room_id), 0

    # -- an audience ------------------------------------------------------------------------------------

    async def notify(self, actor: Identity, room_id: str, sale_id: str, body: NotifyBody) -> dict[str, Any]:
        """A host of the room, or the merchant who owns the audience, tells the audience about a sale:
        in the app for the members online, by webhook for the others. Idempotent by ``request_id``."""
        merchant = actor.is_merchant
        if not actor.hosts(room_id) and not merchant:
            raise Forbidden("notifying an audience needs a host token for this room or the audience's merchant")
        await self.catalogue.room(room_id)
        rec = await self._sale_in(room_id, sale_id)
        if self.audiences is None:
            raise NotFound("audiences are not available on this server")
        audience = await self.audiences.get(body.audience_id)  # NOT_FOUND
        if not actor.hosts(room_id) and (audience.owner, audience.owner_role) != (actor.user, actor.role):
            raise Forbidden(f"audience {body.audience_id} belongs to someone else")
        digest = hashlib.sha256(f"{actor.user}|{room_id}|{sale_id}|{body.audience_id}|{body.request_id}".encode())
        notice_id = "a-" + digest.hexdigest()[:24]
        known = await self.sql.notice(notice_id)
        if known is not None:
            return _summary(known)
        _, wire = await self.sales.get(sale_id)
        if wire["state"] == "closed":
            raise Refused(ErrorCode.ENDED, f"sale {sale_id} has ended")
        members = list(dict.fromkeys(m for m in await self.audiences.members(body.audience_id)
                                     if isinstance(m, str) and ID_RE.match(m)))
        where = await self.online.where(members)
        offline = [m for m in members if m not in where]
        now = _now_ms()
        n = Notice(notice_id, "audience", room_id, sale_id, rec.title, int(wire["starts_at"]),
                   viewer_url(room_id, sale_id), now, body.audience_id, actor.user, body.request_id,
                   online=len(where), offline=len(offline))
        queued = _deliveries(n, offline) if self.webhooks_on else []
        fresh, stored = await self.sql.add_notice(replace(n, deliveries=len(queued)), queued)
        if fresh:
            await self._tell(list(where.items()), stored)
            if queued:
                self._wake()
        return _summary(stored)

    # -- telling -----------------------------------------------------------------------------------------

    async def _tell(self, targets: Sequence[tuple[str, str]], notice: Notice) -> None:
        """The in-app ``notice`` to each online viewer, in the room they are in (best effort: the notice is
        stored; a viewer who just left misses it)."""
        msg = notice_message(notice)
        for i in range(0, len(targets), _TELL_CHUNK):
            chunk = targets[i:i + _TELL_CHUNK]
            got = await asyncio.gather(*(self.bus.to_user(room, user, msg) for user, room in chunk),
                                       return_exceptions=True)
            failed = [g for g in got if isinstance(g, BaseException)]
            if failed:
                log.warning("notice %s: %d in-app message(s) not published: %s", notice.notice_id, len(failed),
                            failed[0])

    def _wake(self) -> None:
        if self.deliverer is not None:
            self.deliverer.kick()

    # -- upkeep ------------------------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Every ``SWEEP_S``: fire the reminders whose trigger passed without a hook (a sale that opened while
        no gateway had its room, a process stopped mid-firing); reminders of a sale that ended before that
        are dropped. Every hour: forget what is older than 30 days."""
        mono = time.monotonic()
        if mono - self._swept_at >= SWEEP_S:
            self._swept_at = mono
            now = _now_ms()
            for room_id, sale_id, ends_at in await self.sql.overdue(now):
                if sale_id and ends_at <= now:
                    await self.sql.expire(room_id, sale_id, now)
                else:
                    self._spawn(room_id, sale_id)
        if mono - self._pruned_at >= PRUNE_S:
            self._pruned_at = mono
            await self.sql.prune(_now_ms() - KEEP_MS)

    def upkeep(self, url: str, secret: Callable[[], str], attempts: int, *, backoff_s: float = 1.0) -> ReengageLoop:
        """The loop ``server/app.py``'s ``Upkeep`` runs: the sweep, and with ``url`` the webhook deliveries."""
        self.webhooks_on = bool(url)
        return ReengageLoop(self, url, secret, attempts, backoff_s)

    async def aclose(self) -> None:
        await self._tasks.drain(5.0)
        await self._tasks.cancel(1.0)


class ReengageLoop:
    """Run by every process (``Upkeep``): the reminder sweep each second, and the ``Deliverer``."""

    def __init__(self, reengage: Reengage, url: str, secret: Callable[[], str], attempts: int,
                 backoff_s: float) -> None:
        self.reengage = reengage
        self.url = url
        self._secret = secret
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sweep = Every(1.0, reengage.sweep, log, "reminder sweep")

    def start(self) -> None:
        if self.url:
            d = Deliverer(self.reengage.sql, self.url, self._secret(), self.attempts, backoff_s=self.backoff_s)
            self.reengage.deliverer = d
            d.start()
        self.sweep.start()

    async def aclose(self) -> None:
        await self.sweep.aclose()
        await self.reengage.aclose()  # firings in flight queue their deliveries first
        if self.reengage.deliverer is not None:
            await self.reengage.deliverer.aclose()
            self.reengage.deliverer = None


def _summary(n: Notice) -> dict[str, Any]:
    return {"notice_id": n.notice_id, "online": n.online, "offline": n.offline, "deliveries": n.deliveries}

"""``Commerce``: the application layer, the one entry point of both transports.

It composes one part per job (catalogue, sales, checkout, chat, funnel) over the shared resources
the composition root opens (SQL store, inventory scripts, room bus). The WebSocket gateway and the
HTTP API call these parts and map their results and ``CommerceError``s to the wire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from inventory import archive
from inventory.scripts import Inventory
from inventory.store import OrderRecord, Store

from .catalogue import Catalogue
from .chat import Chat
from .checkout import Checkout
from .deadline import AnswerDeadline
from .funnel import Funnel
from .payments.provider import PaymentMode, PaymentProvider
from .payments.service import Payments
from .room_bus import RoomBus
from .room_state import RoomState
from .sale_terms import MembersOnly
from .order_refunds import OrderRefunds
from .pools import Pools
from .presales import Presales
from .reports import Reports
from .saved import Saved
from .reminders import Reengage
from .shelf import Shelf
from .audiences import Audiences
from .offers import Offers
from .growth import Growth
from .signals import Signals
from .sales import Sales
from .coupons import Coupons
from .draws import Draws
from .due import DueTimers
from .live_counts import LiveCounts
from .polls import Polls
from .teams import Teams
from .wire import order_event_wire

__all__ = ["Commerce", "order_confirmed_message", "settled_notifier"]

log = logging.getLogger(__name__)


def order_confirmed_message(o: OrderRecord) -> dict[str, Any]:
    return {"type": "order_confirmed", "order": order_event_wire(o)}


def settled_notifier(bus: RoomBus) -> Callable[[Sequence[OrderRecord]], Awaitable[None]]:
    """The settlement worker's ``on_committed``: "order_confirmed" to the buyer's sockets in the
    sale's room, only after the DB commit. Any publish error propagates: the worker then leaves the
    batch unacked and repeats it (at least once; clients de-duplicate by ``order.order_id``)."""
    async def on_committed(orders: Sequence[OrderRecord]) -> None:
        for o in orders:
            if o.room_id:  # a channel's order (room_id '') has no room: its buyer reads GET /api/me/orders
                await bus.to_user(o.room_id, o.user_id, order_confirmed_message(o))
    return on_committed


class Commerce:
    def __init__(self, store: Store, inventory: Inventory, bus: RoomBus, *, default_hold_ttl_s: int,
                 max_qty: int, payment_mode: PaymentMode = PaymentMode.INSTANT,
                 payment_provider: PaymentProvider | None = None, signals_on: bool = True,
                 signal_flush_s: float = 0.2, growth: dict[str, Any] | None = None,
                 personal_shelf: bool = True, answer_deadline_s: float = 0.0) -> None:
        self.store = store
        self.inventory = inventory
        self.bus = bus
        # interest signals (commerce/signals.py): every part that sees a viewer act records into it
        self.signals = Signals(inventory.redis, flush_s=signal_flush_s, enabled=signals_on)
        # each viewer their own shelf (commerce/shelf.py): its scores are kept by the signal sink's process from
        # every batch of signals it writes (server/app.py Settlement), off the gateways' hot path
        self.shelf = Shelf(inventory.redis, store, enabled=personal_shelf, team_ttl_ms=bus.retain_room_ms)
        self.funnel = Funnel(bus)
        self.catalogue = Catalogue(store, bus)
        self.members_only = MembersOnly(store)  # per-sale flag, shared by sales (launch) and checkout (buy)
        self.sales = Sales(store, inventory, bus, self.catalogue, default_hold_ttl_s, self.members_only)
        self.checkout = Checkout(store, inventory, bus, self.funnel, max_qty, self.members_only)
        self.chat = Chat(bus)
        self.payments = Payments(store, inventory, bus, self.funnel, payment_mode, payment_provider)
        # stock pools shared by rooms and channels
        self.pools = Pools(store, inventory, self.sales, self.checkout.my_holds)
        self.order_refunds = OrderRefunds(store, inventory, bus, self.payments)  # refunds of settled orders
        self.presales = Presales(store, bus, self.payments)  # deposits whose balance went unpaid
        self.saved = Saved(store, self.catalogue)  # products viewers saved for later
        self.audiences = Audiences(store)  # interest audiences: rules over signals (commerce/audiences.py)
        self.offers = Offers(store, self.audiences)  # online-to-offline offers at stores' tills
        self.reports = Reports(store)  # show reports for brands, from SQL only
        self.checkout.instant_pay = self.payments.instant
        # interaction (docs/PROTOCOL.md Interaction): live counts on the ambient lane, deadlines in Redis
        self.live = LiveCounts(bus)
        self.due = DueTimers(inventory.redis, inventory)
        self.teams = Teams(store, bus, inventory, self.live, self.due)
        self.polls = Polls(store, bus, inventory, self.live, self.due)
        self.coupons = Coupons(store, bus, inventory, self.live, self.due, self.teams)
        self.draws = Draws(store, bus, inventory, self.live, self.due, self.teams, self.coupons, self.sales,
                           self.checkout)
        self.checkout.coupons = self.coupons
        # every click answered within the deadline (LIVESALE_ANSWER_DEADLINE_MS; commerce/batcher.py)
        for batcher in (self.checkout.batcher, self.polls.votes, self.coupons.claims):
            batcher.deadline_s = answer_deadline_s
        # and every pay, checkout and release, over WebSocket and HTTP (commerce/deadline.py)
        self.deadline = AnswerDeadline(answer_deadline_s)
        self.checkout.on_paid = self.teams.on_paid
        self.payments.coupons = self.coupons
        self.payments.on_paid = self.teams.on_paid
        self.checkout.signals = self.saved.signals = self.payments.signals = self.signals
        # share-to-earn (commerce/growth.py): attribution read at every confirm, mini-shop channels checked
        self.growth = Growth(store, inventory, self.catalogue, **(growth or {}))
        self.checkout.attribution = self.payments.attribution = self.growth.attribution
        self.pools.channel_guard = self.growth.check_channel
        self.pools.signals = self.signals
        for part in (self.teams, self.polls, self.coupons, self.draws):
            part.signals = self.signals
        # re-engagement (commerce/reminders.py): reminders, notices to audiences, webhooks to the platform
        self.reengage = Reengage(store, bus, self.catalogue, self.sales, inventory.redis)
        self.reengage.audiences = self.audiences
        self.sales.on_opened = self.reengage.sale_opened

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.funnel.start()
        self.signals.start()
        self.shelf.start()

    async def aclose(self) -> None:
        await self.deadline.aclose()  # requests answered at their deadline and still running
        await self.checkout.aclose()  # answers the buys in flight, then the funnel counts them
        await self.funnel.aclose()
        await self.coupons.aclose()
        await self.polls.aclose()
        await self.live.aclose()
        await self.teams.aclose()  # likes the last round did not write
        await self.payments.aclose()
        await self.signals.aclose()  # after every part that records
        await self.shelf.aclose()

    # -- actions that span parts -----------------------------------------------------------------------

    async def set_live(self, room_id: str, live: bool) -> None:
        """go_live / end_live; ending the live also closes the room's open and scheduled sales."""
        await self.catalogue.set_status(room_id, "live" if live else "ended")
        if live:
            self.reengage.show_live(room_id)  # its show reminders fire (commerce/reminders.py)
        if not live:
            await self.sales.close_room(room_id)
            await self.archive_room(room_id)

    async def archive_room(self, room_id: str) -> None:
        """Copy what only Redis knows of an ended room to SQL (``room_archive``) before its keys expire:
        at ``end_live`` and again when one of its sales retires (late payments still count)."""
        await self.funnel.flush(room_id)  # its unique-viewer keys get the ended window too
        snap = await self.bus.snapshot(room_id)
        if snap is None:
            return
        funnel = snap["funnel"]
        await archive.save_room(self.store, archive.RoomArchive(
            room_id=room_id, likes=snap["likes"], tapped=funnel.get("tapped", 0), reserved=funnel.get("reserved", 0),
            paid=funnel.get("paid", 0), events=snap["events"], comments=orjson.dumps(snap["comments"]).decode(),
            archived_at_ms=int(time.time() * 1000)))

    async def sale_retired(self, room_id: str, sale_id: str) -> None:
        """The reaper gave a settled sale's keys their TTL: refresh the archive of its room if it ended."""
        room = await self.store.get_room(room_id)
        if room is not None and room.status == "ended":
            await self.archive_room(room_id)

    async def notify_settled(self, orders: Sequence[OrderRecord]) -> None:
        await settled_notifier(self.bus)(orders)

    async def interaction_upkeep(self) -> None:
        """A few times a second in every process: the deadlines that are due, and coupons whose
        application to a hold a stopped process left half done."""
        await self.due.run_due()
        await self.coupons.recover()

    async def room_loaded(self, room_id: str, state: RoomState) -> None:
        """A gateway (re)loaded the room: publish the live counts of its open polls and drops and its team
        board, so its snapshots and ticks show them now, not only after the next vote or claim."""
        now = int(time.time() * 1000)
        for poll_id, poll in state.polls.items():
            if poll.get("state") == "open":
                self.live.mark(room_id, "polls", poll_id)
        for drop_id, drop in state.drops.items():
            if now < int(drop.get("expires_at", 0)):
                self.live.mark(room_id, "drops", drop_id)
        for draw in state.open_draws():
            self.live.mark(room_id, "draws", draw["draw_id"])
        if state.teams:
            self.live.mark(room_id, "teams")

    async def presence(self, room_id: str, gateway_id: str, teams: dict[str, int], users: list[str],
                       draws: list[str], now_ms: int) -> None:
        """Who is in the room on one gateway (its ticker, every second): the team leaderboard's
        ``present`` counts, and the entrants of open draws who are present (docs/PROTOCOL.md Interaction)."""
        if teams or not draws:
            await self.teams.report_present(room_id, gateway_id, teams, now_ms)
        if draws and users:
            await self.draws.seen(room_id, draws, users, now_ms)

    async def ping(self) -> None:
        await self.inventory.redis.ping()

"""What the router cannot say about each HTTP route: its summary, who may call it, its typed request body (the
same dataclass the handler parses), its query parameters, its success statuses and body shapes, and the
error codes it may answer. Keyed by (method, path template) exactly as the handlers register them; pure
data, read by server/openapi.py. A route the router has and this table lacks is still documented, marked
``x-undescribed`` (tests/integration/test_openapi.py fails on it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from commerce.audiences import DefineAudience
from commerce.errors import ErrorCode as E
from commerce.growth_requests import CreateLink, CreateShop, OpenPool, SetRate, ShopItems
from commerce.interaction_requests import ClaimBody, VoteBody
from commerce.offers import CreateOffer, RedeemOffer
from commerce.reminders import NotifyBody
from commerce.requests import (
    AddProduct, ChannelReserve, CheckoutBody, CreatePool, CreateRoom, CreateSale, GuestToken, PayHold, RefundOrder,
    Reserve, StockChange, TopUp,
)

from .openapi_shapes import arr, obj, ref

__all__ = ["Op", "Query", "ROUTES", "ACTION_BODY"]

Json = dict[str, Any]

ACTION_BODY = "host-action"  # the body of POST /api/rooms/{room}/actions/{action}: per action (HOST_ACTIONS)


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    schema: Json
    description: str


@dataclass(frozen=True, slots=True)
class Op:
    """One operation. ``auth``: who may call it -- a tuple of roles among viewer, host, merchant; empty:
    anyone; ``optional`` in it: a token is read when sent."""

    tag: str
    summary: str
    auth: tuple[str, ...] = ()
    body: type | str | None = None
    replies: Mapping[int, Json] | None = None   # success status -> body schema
    errors: tuple[E, ...] = ()
    query: tuple[Query, ...] = ()
    content: str = "application/json"           # the success bodies' media type
    alt_content: Mapping[str, Json] | None = None  # other media types of the success body (a query chooses)
    description: str = ""


_INT = {"type": "integer", "minimum": 0}
_SINCE = Query("since", {"type": "integer", "minimum": 0, "maximum": 10**14, "default": 0},
               "server time in ms (inclusive)")
_CSV = {"type": "string", "description": "CSV (a header row, then one row per record)"}

V, H, M = "viewer", "host", "merchant"
_NOT_FOUND = (E.NOT_FOUND,)
_BUY = (E.SOLD_OUT, E.LIMIT, E.NOT_STARTED, E.ENDED, E.IDEM_MISMATCH, E.MEMBERS_ONLY, E.NOT_FOUND, E.HOLD_LOST,
        E.FORBIDDEN)
_HOLD = (E.NOT_FOUND, E.FORBIDDEN, E.HOLD_LOST, E.EXPIRED, E.NOT_HELD)
_PAY = (*_HOLD, E.ALREADY_CONFIRMED, E.PAYMENT_REQUIRED, E.NOT_OPEN, E.COUPON_NOT_APPLICABLE, E.COUPON_USED,
        E.COUPON_EXPIRED, E.IDEM_MISMATCH)

ROUTES: Mapping[tuple[str, str], Op] = {
    # -- service -------------------------------------------------------------------------------------------------
    ("get", "/healthz"): Op("service", "Liveness: this process answers; its gateway's counters",
                            replies={200: ref("Health")}),
    ("get", "/readyz"): Op("service", "Readiness: whether this process takes traffic now",
                           replies={200: ref("Readiness"), 503: ref("Readiness")}),
    ("get", "/metrics"): Op("service", "Prometheus metrics of this process", replies={200: {"type": "string"}},
                            content="text/plain"),
    ("get", "/api/openapi.json"): Op("service", "This contract: the OpenAPI 3.1 document of the HTTP API",
                                     replies={200: {"type": "object", "required": ["openapi", "paths"]}}),
    ("get", "/api/docs"): Op("service", "This contract as a page (HTML, no scripts)",
                             replies={200: {"type": "string"}}, content="text/html"),
    ("get", "/api/time"): Op("service", "Server time (ms) for countdowns, and whether guest tokens are issued",
                             replies={200: obj({"server_time": {"type": "number"}, "guests": {"type": "boolean"}},
                                               "server_time", "guests")}),
    ("post", "/api/viewer-token"): Op(
        "identity", "A guest viewer token (only with LIVESALE_GUEST_TOKENS on)", body=GuestToken,
        replies={201: obj({"token": {"type": "string"}, "user": {"type": "string", "pattern": "^v-"},
                           "name": {"type": "string"}, "guest": {"const": True}}, "token", "user", "name", "guest")},
        errors=(E.GUESTS_OFF, E.RATE_LIMITED)),
    # -- rooms, products, sales ------------------------------------------------------------------------------------
    ("get", "/api/rooms"): Op("rooms", "Every room", replies={200: obj({"rooms": arr(ref("RoomSummary"))}, "rooms")}),
    ("post", "/api/rooms"): Op("rooms", "Create a room", auth=(H,), body=CreateRoom, replies={201: ref("Room")},
                               errors=(E.CONFLICT,)),
    ("get", "/api/rooms/{room}"): Op("rooms", "A room with its products and sales",
                                     replies={200: ref("RoomDetail")}, errors=_NOT_FOUND),
    ("post", "/api/rooms/{room}/products"): Op("rooms", "Add a product to a room", auth=(H,), body=AddProduct,
                                               replies={201: ref("Product")}, errors=(E.NOT_FOUND, E.CONFLICT)),
    ("post", "/api/rooms/{room}/sales"): Op(
        "sales", "Launch a flash sale (idempotent by sale_id and content)", auth=(H,), body=CreateSale,
        replies={201: {"anyOf": [ref("Sale"), ref("VariantSales")]}, 200: ref("Sale")},
        errors=(E.NOT_FOUND, E.CONFLICT, E.POOL_SHORT)),
    ("post", "/api/rooms/{room}/actions/{action}"): Op(
        "rooms", "A host's action in the room (the WebSocket action's fields)", auth=(H,), body=ACTION_BODY,
        replies={200: ref("ActionResult")},
        errors=(E.NOT_FOUND, E.CONFLICT, E.POOL_SHORT, E.ENDED, E.CLOSED)),
    ("get", "/api/rooms/{room}/dashboard"): Op("rooms", "The host's live dashboard: viewers, GMV, funnel, sales",
                                               auth=(H,), replies={200: ref("Dashboard")}, errors=_NOT_FOUND),
    ("get", "/api/rooms/{room}/report"): Op(
        "reports", "The show report (JSON, or CSV with format=csv)", auth=(H, M),
        replies={200: ref("Report")}, alt_content={"text/csv": _CSV},
        query=(Query("format", {"type": "string", "enum": ["json", "csv"], "default": "json"}, "json or csv"),),
        errors=_NOT_FOUND),
    ("get", "/api/rooms/{room}/shelf"): Op("rooms", "This viewer's shelf: the room's products in their order",
                                           auth=(V,), replies={200: ref("Shelf")}, errors=_NOT_FOUND),
    ("get", "/api/sales/{sale}"): Op("sales", "A sale", replies={200: ref("Sale")}, errors=_NOT_FOUND),
    # -- buying ------------------------------------------------------------------------------------------------
    ("post", "/api/sales/{sale}/reserve"): Op("buying", "Reserve units: a hold to pay before pay_by", auth=(V,),
                                              body=Reserve, replies={201: ref("Reserved")}, errors=_BUY),
    ("get", "/api/holds/{hold}"): Op("buying", "One of your holds", auth=(V,), replies={200: ref("Hold")},
                                     errors=_HOLD),
    ("post", "/api/holds/{hold}/pay"): Op(
        "buying", "Pay a hold (instant mode; a coupon may apply)", auth=(V,), body=PayHold,
        replies={201: ref("Paid"), 200: ref("Paid")}, errors=_PAY),
    ("delete", "/api/holds/{hold}"): Op(
        "buying", "Release a hold", auth=(V,),
        replies={200: obj({"hold_id": {"type": "string"}, "status": {"const": "released"}, "units_left": _INT},
                          "hold_id", "status")}, errors=_HOLD),
    ("post", "/api/holds/{hold}/checkout"): Op(
        "buying", "Start paying a hold through the payment provider", auth=(V,), body=CheckoutBody,
        replies={201: ref("PaymentStarted")},
        errors=(*_PAY, E.NO_PROVIDER, E.PAYMENT_UNAVAILABLE)),
    ("post", "/api/payments/webhook/{provider}"): Op(
        "buying", "The payment provider's signed webhook",
        replies={200: obj({"received": {"const": True}, "outcome": {"type": "string"},
                           "payment_id": {"type": ["string", "null"]}}, "received", "outcome")},
        errors=(E.BAD_SIGNATURE, E.STALE_WEBHOOK, E.BAD_WEBHOOK, E.REPLAYED, E.AMOUNT_MISMATCH,
                E.CURRENCY_MISMATCH, E.NO_PROVIDER, E.NOT_FOUND, E.BAD_JSON),
        description="Authenticated by the provider's signature header, not a bearer token."),
    ("get", "/api/orders/{order}"): Op("orders", "A settled order (yours, or of a room you host)", auth=(V, H),
                                       replies={200: ref("Order")}, errors=(E.NOT_FOUND, E.NOT_SETTLED, E.FORBIDDEN)),
    ("get", "/api/me/orders"): Op(
        "orders", "Your settled orders, a page at a time, with your open holds and totals", auth=(V, H),
        replies={200: ref("MyOrders")},
        query=(_SINCE, Query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                             "orders per page"),
               Query("cursor", {"type": "string"}, "the `next` of the previous page"))),
    # -- stock pools, channels, refunds -----------------------------------------------------------------------
    ("post", "/api/pools"): Op("pools", "Open a stock pool (idempotent)", auth=(M,), body=CreatePool,
                               replies={201: ref("Pool"), 200: ref("Pool")}, errors=(E.CONFLICT, E.FORBIDDEN)),
    ("get", "/api/pools"): Op("pools", "Your pools (a host: all)", auth=(M, H),
                              replies={200: obj({"pools": arr(ref("Pool"))}, "pools")}),
    ("get", "/api/pools/{pool}"): Op("pools", "A pool with its sales and channels", auth=(M, H),
                                     replies={200: ref("PoolDetail")}, errors=_NOT_FOUND),
    ("post", "/api/pools/{pool}/stock"): Op(
        "pools", "Restock or adjust a pool (idempotent by request_id)", auth=(M,), body=StockChange,
        replies={201: ref("StockMoved"), 200: ref("StockMoved")}, errors=(E.NOT_FOUND, E.POOL_SHORT, E.CONFLICT)),
    ("get", "/api/pools/{pool}/ledger"): Op(
        "pools", "A pool's stock movements", auth=(M, H),
        replies={200: obj({"entries": arr(ref("LedgerEntry"))}, "entries")},
        query=(Query("limit", {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 1000},
                     "most entries"),), errors=_NOT_FOUND),
    ("get", "/api/pools/{pool}/audit"): Op(
        "pools", "A pool's invariants checked in Redis and against SQL", auth=(M, H),
        replies={200: ref("PoolAudit")},
        errors=_NOT_FOUND),
    ("post", "/api/rooms/{room}/sales/{sale}/topup"): Op(
        "pools", "Move more units from the pool to a sale (idempotent by request_id)", auth=(H,), body=TopUp,
        replies={201: ref("TopUpResult"), 200: ref("TopUpResult")},
        errors=(E.NOT_FOUND, E.POOL_SHORT, E.ENDED, E.CONFLICT)),
    ("post", "/api/channels/{channel}/holds"): Op(
        "pools", "Reserve straight from a pool for a channel (web shop, store)", auth=(V,), body=ChannelReserve,
        replies={201: ref("ChannelReserved")}, errors=_BUY),
    ("post", "/api/orders/{order}/refund"): Op(
        "orders", "Refund a settled order (the room's host or the pool's merchant)", auth=(H, M), body=RefundOrder,
        replies={201: ref("Refund"), 200: ref("Refund")}, errors=(E.NOT_FOUND, E.NOT_SETTLED, E.FORBIDDEN)),
    ("get", "/api/skus/{sku}/history"): Op(
        "pools", "A SKU's lifecycle and sales over time", auth=(M, H), replies={200: ref("SkuHistory")},
        query=(Query("bucket_s", {"type": "integer", "minimum": 60, "maximum": 2_678_400, "default": 3600},
                     "the timeline's bucket in seconds"),), errors=_NOT_FOUND),
    ("get", "/api/me/saved"): Op("saved", "Your saved products, newest first", auth=(V,),
                                 replies={200: obj({"saved": arr(ref("SavedItem"))}, "saved")}),
    ("put", "/api/me/saved/{room}/{product}"): Op(
        "saved", "Save a product of a show for later (no stock taken)", auth=(V,),
        replies={201: ref("SavedItem"), 200: ref("SavedItem")}, errors=(E.NOT_FOUND, E.CONFLICT)),
    ("delete", "/api/me/saved/{room}/{product}"): Op(
        "saved", "Forget a saved product", auth=(V,), replies={200: obj({"removed": {"type": "boolean"}}, "removed")}),
    # -- interaction -------------------------------------------------------------------------------------------
    ("get", "/api/rooms/{room}/teams"): Op("interaction", "The room's fan teams and leaderboard",
                                           replies={200: ref("Teams")}, errors=_NOT_FOUND),
    ("post", "/api/rooms/{room}/teams/{team}/join"): Op(
        "interaction", "Join a fan team", auth=(V,),
        replies={200: obj({"team": {"type": "string"}, "joined_at": _INT, "switch_at": _INT}, "team", "joined_at")},
        errors=(E.NOT_FOUND, E.TEAM_LOCKED, E.TEAM_COOLDOWN)),
    ("get", "/api/polls/{poll}"): Op("interaction", "A poll (with a viewer token: how you voted)", auth=("optional",),
                                     replies={200: ref("Poll")}, errors=_NOT_FOUND),
    ("post", "/api/polls/{poll}/vote"): Op(
        "interaction", "Vote in a poll", auth=(V,), body=VoteBody, replies={200: ref("Voted")},
        errors=(E.NOT_FOUND, E.ALREADY_VOTED, E.CLOSED, E.TEAM_ONLY),
        description="409 ALREADY_VOTED also carries the poll's counts next to `error`."),
    ("get", "/api/drops/{drop}"): Op("interaction", "A coupon drop", replies={200: ref("Drop")}, errors=_NOT_FOUND),
    ("post", "/api/drops/{drop}/claim"): Op(
        "interaction", "Claim a coupon of a drop", auth=(V,), body=ClaimBody, replies={201: ref("Claimed")},
        errors=(E.NOT_FOUND, E.ALL_CLAIMED, E.ALREADY_CLAIMED, E.TEAM_ONLY, E.NOT_STARTED, E.CLOSED, E.ENDED),
        description="409 ALREADY_CLAIMED also carries your coupon next to `error`."),
    ("get", "/api/me/coupons"): Op("interaction", "Your coupon wallet, newest first", auth=(V,),
                                   replies={200: obj({"coupons": arr(ref("Coupon"))}, "coupons")}),
    ("get", "/api/draws/{draw}"): Op("interaction", "A lucky draw", replies={200: ref("Draw")}, errors=_NOT_FOUND),
    ("get", "/api/draws/{draw}/entrants"): Op(
        "interaction", "A drawn draw's published entrant list and proof", replies={200: ref("DrawEntrants")},
        errors=(E.NOT_FOUND, E.NOT_STARTED)),
    # -- re-engagement -----------------------------------------------------------------------------------------
    ("get", "/api/me/reminders"): Op("reengage", "Your reminders", auth=(V,),
                                     replies={200: obj({"reminders": arr(ref("Reminder"))}, "reminders")}),
    ("put", "/api/me/reminders/{room}"): Op("reengage", "Remind me when the show goes live", auth=(V,),
                                            replies={201: ref("Reminder"), 200: ref("Reminder")},
                                            errors=(E.NOT_FOUND, E.CONFLICT)),
    ("delete", "/api/me/reminders/{room}"): Op("reengage", "Forget a show's reminder", auth=(V,),
                                               replies={200: ref("ReminderRemoved")}),
    ("put", "/api/me/reminders/{room}/{sale}"): Op("reengage", "Remind me when the sale opens", auth=(V,),
                                                   replies={201: ref("Reminder"), 200: ref("Reminder")},
                                                   errors=(E.NOT_FOUND, E.CONFLICT, E.ENDED)),
    ("delete", "/api/me/reminders/{room}/{sale}"): Op("reengage", "Forget a sale's reminder", auth=(V,),
                                                      replies={200: ref("ReminderRemoved")}),
    ("post", "/api/rooms/{room}/sales/{sale}/notify"): Op(
        "reengage", "Notify an audience about a sale (queued webhook deliveries)", auth=(H, M), body=NotifyBody,
        replies={202: ref("Notice")}, errors=(E.NOT_FOUND, E.CONFLICT, E.RATE_LIMITED, E.FORBIDDEN)),
    # -- audiences and offers ----------------------------------------------------------------------------------
    ("post", "/api/audiences"): Op("audiences", "Define an interest audience (idempotent by audience_id)",
                                   auth=(M, H), body=DefineAudience,
                                   replies={201: ref("Audience"), 200: ref("Audience")}, errors=(E.CONFLICT,)),
    ("get", "/api/audiences"): Op("audiences", "Your audiences", auth=(M, H),
                                  replies={200: obj({"audiences": arr(ref("Audience"))}, "audiences")}),
    ("get", "/api/audiences/{audience}"): Op("audiences", "An audience with its member count", auth=(M, H),
                                             replies={200: ref("Audience")}, errors=_NOT_FOUND),
    ("delete", "/api/audiences/{audience}"): Op("audiences", "Remove an audience", auth=(M, H),
                                                replies={200: obj({"removed": {"type": "boolean"}}, "removed")},
                                                errors=_NOT_FOUND),
    ("get", "/api/audiences/{audience}/export"): Op(
        "audiences", "Export an audience's members (CSV or JSON Lines, streamed)", auth=(M, H),
        replies={200: _CSV}, content="text/csv",
        alt_content={"application/x-ndjson": {"type": "string", "description": "one JSON object per line"}},
        query=(Query("format", {"type": "string", "enum": ["csv", "jsonl"], "default": "csv"}, "csv or jsonl"),),
        errors=_NOT_FOUND),
    ("post", "/api/offers"): Op("offers", "Offer a price to an audience (idempotent by offer_id)", auth=(M,),
                                body=CreateOffer, replies={201: ref("Offer"), 200: ref("Offer")},
                                errors=(E.NOT_FOUND, E.CONFLICT)),
    ("get", "/api/offers"): Op("offers", "Your offers", auth=(M, H),
                               replies={200: obj({"offers": arr(ref("Offer"))}, "offers")}),
    ("post", "/api/offers/{offer}/redeem"): Op(
        "offers", "Redeem an offer at a store's till (idempotent by request_id)", auth=(M,), body=RedeemOffer,
        replies={201: ref("Redemption"), 200: ref("Redemption")},
        errors=(E.NOT_FOUND, E.EXPIRED, E.NOT_ELIGIBLE, E.LIMIT, E.SOLD_OUT, E.CONFLICT, E.FORBIDDEN, E.POOL_SHORT)),
    ("get", "/api/stores/{channel}/offers"): Op(
        "offers", "The offers a viewer may redeem at a store", auth=(M,),
        replies={200: obj({"offers": arr(ref("Offer"))}, "offers")},
        query=(Query("user", {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,128}$"}, "the viewer's user id"),)),
    # -- share-to-earn -----------------------------------------------------------------------------------------
    ("post", "/api/share-links"): Op("growth", "Create a share link", auth=(V,), body=CreateLink,
                                     replies={201: ref("ShareLink")}, errors=(E.NOT_FOUND, E.RATE_LIMITED)),
    ("get", "/api/share-links/{code}"): Op("growth", "A share link", replies={200: ref("ShareLink")},
                                           errors=_NOT_FOUND),
    ("get", "/api/me/share-links"): Op("growth", "Your share links", auth=(V,),
                                       replies={200: obj({"links": arr(ref("ShareLink"))}, "links")}),
    ("get", "/api/me/earnings"): Op("growth", "Your commissions: pending, payable, paid", auth=(V,),
                                    replies={200: ref("Earnings")}),
    ("get", "/api/payouts.csv"): Op(
        "growth", "Commissions to pay out (CSV)", auth=(H, M), replies={200: _CSV}, content="text/csv",
        query=(Query("room", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "only this room"), _SINCE,
               Query("until", {"type": "integer", "minimum": 0}, "server time in ms (exclusive)"))),
    ("put", "/api/rooms/{room}/products/{product}/commission"): Op(
        "growth", "Set a product's commission rate", auth=(H,), body=SetRate,
        replies={200: obj({"room_id": {"type": "string"}, "product_id": {"type": "string"}, "commission_bps": _INT},
                          "room_id", "product_id", "commission_bps")},
        errors=_NOT_FOUND),
    ("get", "/api/rooms/{room}/sharing"): Op("growth", "A room's share links and their sales", auth=(H,),
                                             replies={200: ref("Sharing")}, errors=_NOT_FOUND),
    ("put", "/api/pools/{pool}/shopkeepers"): Op("growth", "Open a pool to shopkeepers' mini-shops", auth=(M,),
                                                 body=OpenPool, errors=_NOT_FOUND,
                                                 replies={200: obj({"pool_id": {"type": "string"},
                                                                    "open": {"type": "boolean"},
                                                                    "commission_bps": {"type": ["integer", "null"]}},
                                                                   "pool_id", "open")}),
    ("get", "/api/shop-pools"): Op("growth", "The pools open to mini-shops",
                                   replies={200: obj({"pools": arr(ref("ShopPool"))}, "pools")}),
    ("post", "/api/shops"): Op("growth", "Open a mini-shop", auth=(V,), body=CreateShop, replies={201: ref("Shop")},
                               errors=(E.NOT_FOUND, E.CONFLICT)),
    ("get", "/api/shops/{shop}"): Op("growth", "A mini-shop", replies={200: ref("Shop")}, errors=_NOT_FOUND),
    ("put", "/api/shops/{shop}/items"): Op("growth", "Set a mini-shop's pools", auth=(V,), body=ShopItems,
                                           replies={200: ref("Shop")}, errors=(E.NOT_FOUND,)),
    ("get", "/api/me/shops"): Op("growth", "Your mini-shops", auth=(V,),
                                 replies={200: obj({"shops": arr(ref("Shop"))}, "shops")}),
}

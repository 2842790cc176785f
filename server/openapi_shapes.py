"""JSON Schemas of the HTTP API's answers: the shapes commerce/wire.py and the services build, named once
as ``components/schemas`` of the OpenAPI document (server/openapi.py). Pure data.

Objects stay open (``additionalProperties`` allowed): a field added to an answer is not a breaking change;
``required`` lists what every answer of that shape carries.
"""

from __future__ import annotations

from typing import Any

from commerce.errors import ErrorCode

__all__ = ["SHAPES", "obj", "arr", "ref"]

Json = dict[str, Any]


def obj(props: Json, *required: str, **extra: Any) -> Json:
    out: Json = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    out.update(extra)
    return out


def arr(items: Json) -> Json:
    return {"type": "array", "items": items}


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


_S: Json = {"type": "string"}
_S_OR_NULL: Json = {"type": ["string", "null"]}
_INT: Json = {"type": "integer"}
_INT_OR_NULL: Json = {"type": ["integer", "null"]}
_NUM: Json = {"type": "number"}
_BOOL: Json = {"type": "boolean"}
_MS: Json = {"type": "integer", "description": "server time in ms since the epoch"}
_MS_OR_NULL: Json = {"type": ["integer", "null"], "description": "server time in ms since the epoch"}
_MONEY: Json = {"type": "integer", "description": "minor units (cents)"}
_CURRENCY: Json = {"type": "string", "pattern": "^[A-Z]{3}$"}
_OBJ: Json = {"type": "object"}

_PER_CURRENCY: Json = {"type": "object", "additionalProperties": _INT, "description": "per currency code"}
_ROOM = {"room_id": _S, "title": _S, "status": {"type": "string", "enum": ["scheduled", "live", "ended"]},
         "player_url": _S, "host_id": _S}
_SALE_STATES = ["scheduled", "open", "sold_out", "ended"]

SHAPES: dict[str, Json] = {
    "ErrorCode": {"type": "string", "enum": [c.value for c in ErrorCode] + ["HTTP_ERROR"],
                  "description": "stable error codes (commerce/errors.py); HTTP_ERROR: an HTTP status without one"},
    "Error": obj({"error": obj({"code": ref("ErrorCode"), "message": {"type": "string", "minLength": 1}},
                               "code", "message")}, "error",
                 description="every refusal: nothing was changed unless the message says otherwise"),
    "Health": obj({"status": {"const": "ok"}, "ok": {"const": True}, "pid": _INT, "uptime_s": _NUM, "gateway": _S,
                   "connections": _INT, "rooms": _INT, "stats": _OBJ}, "ok", "gateway", "connections", "rooms",
                  description="liveness: local facts only, nothing asked of Redis or SQL"),
    "Readiness": obj({"status": {"enum": ["ready", "unready"]},
                      "checks": {"type": "object", "additionalProperties": obj(
                          {"ok": _BOOL, "ms": _NUM, "error": _S}, "ok", "ms")},
                      "error": obj({"code": {"const": "UNAVAILABLE"}, "message": _S}, "code", "message")},
                     "status", "checks", description="each dependency's check; `error` when unready (503)"),
    "Room": obj(_ROOM, "room_id", "title", "status", "player_url", "host_id"),
    "RoomSummary": obj(_ROOM, "room_id", "title", "status"),
    "Product": obj({"product_id": _S, "sku": _S, "title": _S, "description": _S, "image_url": _S,
                    "unit_price": _MONEY, "currency": _CURRENCY,
                    "variants": arr(obj({"variant_id": _S, "sku": _S, "label": _S}, "variant_id", "sku"))},
                   "product_id", "sku", "title", "description", "image_url", "unit_price", "currency"),
    "Sale": obj({"sale_id": _S, "room_id": _S, "product_id": _S, "sku": _S, "title": _S, "unit_price": _MONEY,
                 "currency": _CURRENCY, "allocated": _INT, "units_left": _INT, "per_user_limit": _INT,
                 "starts_at": _MS, "ends_at": _MS, "hold_ttl_ms": _INT,
                 "state": {"type": "string", "enum": _SALE_STATES}, "members_only": _BOOL, "pool": _S,
                 "presale": obj({"deposit": _MONEY, "balance_from": _MS, "balance_by": _MS,
                                 "deposit_rule": {"enum": ["refund", "keep"]}}),
                 "group": _S, "variant": _S},
                "sale_id", "room_id", "product_id", "sku", "title", "unit_price", "currency", "allocated",
                "units_left", "per_user_limit", "starts_at", "ends_at", "hold_ttl_ms", "state", "members_only"),
    "VariantSales": obj({"group": _S, "sales": arr(ref("Sale"))}, "group", "sales",
                        description="a sale of several variants: one sale per variant"),
    "RoomDetail": obj({**_ROOM, "products": arr(ref("Product")), "sales": arr(ref("Sale"))},
                      "room_id", "title", "status", "host_id", "products", "sales"),
    "ActionResult": obj({"ok": {"const": True}, "action": _S, "sale": ref("Sale"), "group": _S,
                         "sales": arr(ref("Sale")), "topup": ref("TopUpResult"), "poll": ref("Poll"),
                         "drop": ref("Drop"), "draw": ref("Draw"), "teams": arr(ref("Team")), "allow_switch": _BOOL,
                         "switch_cooldown_s": _INT},
                        "ok", "action", description="`ok`, the action's name, and what it made (per action)"),
    "Dashboard": obj({"room": ref("RoomSummary"), "server_time": _MS, "viewers": _INT, "likes": _INT, "orders": _INT,
                      "units": _INT, "gmv": _PER_CURRENCY, "orders_per_minute": arr(obj(
                          {"minute": _MS, "orders": _INT, "gmv": _MONEY}, "minute", "orders")),
                      "funnel": ref("Funnel"), "requests": obj({"tapped": _INT, "reserved": _INT, "paid": _INT}),
                      "sales": arr(ref("Sale")), "saved": {"type": "object", "additionalProperties": _INT},
                      "latest_orders": arr(_OBJ)},
                     "room", "server_time", "viewers", "likes", "orders", "gmv", "funnel", "sales"),
    "Funnel": obj({"viewers": _INT, "tapped": _INT, "reserved": _INT, "paid": _INT},
                  description="unique viewers per step (estimates within ~1% for large numbers)"),
    "Report": obj({"room": ref("RoomSummary"), "generated_at": _MS, "unique_viewers": _INT, "peak_concurrent": _INT,
                   "sessions": _OBJ, "watch_time": _OBJ, "funnel": _OBJ, "orders": _OBJ},
                  "room", "generated_at", "unique_viewers", "peak_concurrent", "funnel", "orders",
                  description="docs/GROWTH-reports.md"),
    "Shelf": obj({"room": _S, "order": arr(_S), "personal": _BOOL}, "room", "order", "personal",
                 description="the room's product ids in this viewer's order"),
    "Reserved": obj({"hold_id": _S, "sale_id": _S, "qty": _INT, "pay_by": _MS, "units_left": _INT,
                     "user_units": _INT, "status": {"const": "held"}},
                    "hold_id", "sale_id", "qty", "pay_by", "units_left", "status"),
    "ChannelReserved": obj({"hold_id": _S, "pool": _S, "channel": _S, "qty": _INT, "pay_by": _MS,
                            "units_left": _INT, "user_units": _INT, "status": {"const": "held"}},
                           "hold_id", "pool", "channel", "qty", "pay_by", "units_left", "status"),
    "Hold": obj({"hold_id": _S, "sale_id": _S, "user_id": _S, "qty": _INT, "status": _S, "pay_by": _MS,
                 "created_at": _MS, "order_id": _S_OR_NULL},
                "hold_id", "sale_id", "user_id", "qty", "status", "pay_by", "created_at", "order_id"),
    "Paid": {"oneOf": [
        obj({"order_id": _S, "hold_id": _S, "status": {"const": "confirmed"}, "settled": _BOOL,
             "coupon": _S, "discount": _MONEY, "total": _MONEY, "order": ref("Order")},
            "order_id", "hold_id", "status", "settled"),
        obj({"hold_id": _S, "status": {"const": "deposit"}, "deposit_paid": {"const": True}},
            "hold_id", "status", "deposit_paid", description="a pre-sale's deposit: the unit stays held")]},
    "PaymentStarted": obj({"hold": _S, "payment_id": _S, "amount": _MONEY, "currency": _CURRENCY, "provider": _S,
                           "redirect_url": _S, "client_secret": _S}, "hold", "payment_id", "amount", "currency",
                          "provider"),
    "Order": obj({"order_id": _S, "sale_id": _S, "room_id": _S, "sku": _S, "user_id": _S, "qty": _INT,
                  "unit_price": _MONEY, "total": _MONEY, "currency": _CURRENCY, "payment_ref": _S_OR_NULL,
                  "reserved_at": _MS_OR_NULL, "confirmed_at": _MS_OR_NULL, "settled_at": _MS_OR_NULL,
                  "status": {"type": "string", "enum": ["settled", "refunded"]}, "channel": _S,
                  "source": _S_OR_NULL, "sharer": _S_OR_NULL, "ref_code": _S_OR_NULL,
                  "list_total": _MONEY, "discount": _MONEY, "coupon": _S},
                 "order_id", "sale_id", "room_id", "sku", "user_id", "qty", "unit_price", "total", "currency",
                 "status", "channel"),
    "MyOrders": obj({"orders": arr(ref("Order")), "next": _S_OR_NULL,
                     "holds": arr(obj({"hold_id": _S, "sale_id": _S, "qty": _INT,
                                       "status": {"enum": ["reserved", "paid", "expired", "released"]},
                                       "pay_by": _MS, "created_at": _MS, "amount": _MONEY, "currency": _CURRENCY,
                                       "channel": _S, "order_id": _S_OR_NULL}, "hold_id", "qty", "status")),
                     "totals": {"type": "object", "description": "per currency", "additionalProperties": obj(
                         {"orders": _INT, "units": _INT, "spent": _MONEY, "refunded": _MONEY, "net": _MONEY},
                         "orders", "units", "spent", "refunded", "net")}},
                    "orders", "next", "holds", "totals"),
    "Pool": obj({"pool_id": _S, "sku": _S, "merchant_id": _S, "title": _S, "unit_price": _MONEY,
                 "currency": _CURRENCY, "per_user_limit": _INT, "hold_ttl_ms": _INT, "created_at": _MS,
                 "available": _INT, "channel_held": _INT, "channel_sold": _INT, "received": _INT,
                 "restocked": _INT, "at_sales": _INT, "sold": _INT, "on_hand": _INT},
                "pool_id", "sku", "merchant_id", "title", "unit_price", "currency", "available"),
    "PoolDetail": {"allOf": [ref("Pool"), obj({"sales": arr(_OBJ), "channels": arr(obj(
        {"channel": _S, "orders": _INT, "units": _INT}, "channel"))}, "sales", "channels")]},
    "PoolAudit": obj({"pool_id": _S, "ok": _BOOL, "problems": arr({}), "received": _INT, "restocked": _INT,
                      "available": _INT, "channel_held": _INT, "channel_sold": _INT, "at_sales": _INT,
                      "sales": arr(_OBJ), "sql": _OBJ}, "ok", "problems", "available"),
    "LedgerEntry": obj({"entry_id": {"type": ["string", "integer"]}, "kind": _S, "units": _INT, "sale_id": _S_OR_NULL,
                        "ref": _S_OR_NULL, "reason": _S_OR_NULL, "at": _MS}, "kind", "units"),
    "StockMoved": obj({"pool": ref("Pool"), "replayed": _BOOL}, "pool", "replayed"),
    "TopUpResult": obj({"sale_id": _S, "pool": _S, "units_left": _INT, "pool_available": _INT, "replayed": _BOOL},
                 "sale_id", "replayed"),
    "Refund": obj({"order_id": _S, "sale_id": _S, "pool": _S_OR_NULL, "units": _INT, "amount": _MONEY,
                   "currency": _CURRENCY, "restock": _BOOL, "reason": _S, "refunded_by": _S, "state": _S,
                   "refunded_at": _MS_OR_NULL, "status": {"const": "refunded"}},
                  "order_id", "amount", "currency", "status"),
    "SkuHistory": obj({"sku": _S, "pool": _S_OR_NULL, "bucket_s": _INT,
                       "state": {"enum": ["scheduled", "live", "sold_out", "ended"]}, "restocked_at": _MS_OR_NULL,
                       "pool_available": _INT_OR_NULL, "sales": arr(_OBJ),
                       "shows": arr(obj({"sale_id": _S, "room_id": _S, "channel": _S, "orders": _INT, "units": _INT,
                                         "first_at": _MS, "last_at": _MS}, "sale_id", "units")),
                       "channels": arr(obj({"channel": _S, "units": _INT}, "channel", "units")),
                       "timeline": arr(obj({"t": _MS, "channel": _S, "units": _INT}, "t", "channel", "units"))},
                      "sku", "bucket_s", "state", "shows", "channels", "timeline"),
    "SavedItem": obj({"room_id": _S, "product": ref("Product"), "saved": _BOOL, "saved_at": _MS}, "room_id", "product"),
    "Team": obj({"team_id": _S, "name": _S, "colour": _S, "badge": _S}, "team_id", "name", "colour", "badge"),
    "Teams": obj({"teams": arr(ref("Team")), "allow_switch": _BOOL, "switch_cooldown_s": _INT,
                  "leaderboard": arr(obj({"team_id": _S, "members": _INT, "present": _INT, "likes": _INT,
                                          "orders": _INT, "gmv": _PER_CURRENCY}, "team_id"))},
                 "teams", "allow_switch", "switch_cooldown_s"),
    "Poll": obj({"poll_id": _S, "room_id": _S, "question": _S, "options": arr(_S), "opened_at": _MS, "ends_at": _MS,
                 "state": {"enum": ["open", "closed"]}, "counts": arr(_INT), "total": _INT, "closed_at": _MS,
                 "winners": arr(_INT), "you": _INT_OR_NULL},
                "poll_id", "room_id", "question", "options", "ends_at", "state", "counts", "total"),
    "Voted": obj({"code": {"const": "VOTED"}, "poll": _S, "option": _INT, "counts": arr(_INT), "total": _INT},
                 "code", "poll", "option", "counts", "total"),
    "Drop": obj({"drop_id": _S, "room_id": _S, "kind": {"enum": ["amount", "percent"]}, "value": _INT,
                 "currency": _CURRENCY, "min_spend": _MONEY, "sales": arr(_S), "products": arr(_S), "team": _S_OR_NULL,
                 "count": _INT, "claimed": _INT, "redeemed": _INT, "left": _INT, "starts_at": _MS,
                 "claim_until": _MS, "expires_at": _MS, "state": _S},
                "drop_id", "room_id", "kind", "value", "currency", "count", "left", "state"),
    "Claimed": obj({"code": {"const": "CLAIMED"}, "drop": _S, "left": _INT, "coupon": ref("Coupon")},
                   "code", "drop", "left", "coupon"),
    "Coupon": obj({"drop_id": _S, "room_id": _S, "kind": {"enum": ["amount", "percent"]}, "value": _INT,
                   "currency": _CURRENCY, "min_spend": _MONEY, "sales": arr(_S), "products": arr(_S),
                   "claimed_at": _MS, "expires_at": _MS, "state": _S},
                  "drop_id", "kind", "value", "currency", "expires_at", "state"),
    "Draw": obj({"draw_id": _S, "room_id": _S, "title": _S, "prize": _OBJ, "winners": _INT, "rule": _OBJ,
                 "opened_at": _MS, "entry_until": _MS, "pay_within_s": _INT, "commitment": _S, "state": _S,
                 "entrants": _INT},
                "draw_id", "room_id", "title", "prize", "winners", "entry_until", "commitment", "state"),
    "DrawEntrants": obj({"draw_id": _S, "commitment": _S, "list_hash": _S, "seed": _S, "k": _INT,
                         "entrants": arr(_S), "winner_ids": arr(_S), "redraws": arr(_OBJ)}, "draw_id"),
    "Reminder": obj({"room_id": _S, "sale_id": _S_OR_NULL, "created_at": _MS}, "room_id", "sale_id", "created_at"),
    "Notice": obj({"notice_id": _S, "online": _INT, "offline": _INT, "deliveries": _INT}, "notice_id",
                  description="queued: viewers online are told at once, the others through the platform's webhook"),
    "Redemption": obj({"redemption_id": _S, "offer_id": _S, "user_id": _S, "channel": _S, "sku": _S, "qty": _INT,
                       "price": _MONEY, "total": _MONEY, "currency": _CURRENCY, "audience_id": _S, "room_id": _S,
                       "sharer": _S, "request_id": _S, "redeemed_at": _MS},
                      "redemption_id", "offer_id", "user_id", "channel", "sku", "qty", "total", "currency"),
    "Earnings": obj({"sharer": _S, "totals": _OBJ, "commissions": arr(_OBJ), "pending_days": _NUM},
                    "sharer", "totals", "commissions"),
    "Sharing": obj({"room_id": _S, "by_source": arr(_OBJ), "top_sharers": arr(_OBJ),
                    "rates": {"type": "object", "additionalProperties": _INT}, "default_bps": _INT},
                   "room_id", "by_source", "top_sharers", "rates", "default_bps"),
    "ShopPool": obj({"pool_id": _S, "sku": _S, "title": _S, "unit_price": _MONEY, "currency": _CURRENCY,
                     "merchant_id": _S, "commission_bps": _INT}, "pool_id", "sku", "commission_bps"),
    "ReminderRemoved": obj({"room_id": _S, "sale_id": _S_OR_NULL, "removed": _BOOL}, "room_id", "removed"),
    "Audience": obj({"audience_id": _S, "name": _S, "rules": arr(_OBJ), "owner": _S, "created_at": _MS,
                     "count": _INT}, "audience_id", "name", "rules", "owner", "created_at"),
    "Offer": obj({"offer_id": _S, "merchant_id": _S, "audience_id": _S, "sku": _S, "price": _MONEY,
                  "currency": _CURRENCY, "valid_until": _MS, "per_user": _INT, "created_at": _MS},
                 "offer_id", "merchant_id", "audience_id", "sku", "price", "currency", "valid_until", "per_user"),
    "ShareLink": obj({"code": _S, "room_id": _S, "product_id": _S_OR_NULL, "sharer": _S, "url": _S,
                      "created_at": _MS}, "code", "room_id", "sharer", "url"),
    "Shop": obj({"shop_id": _S, "owner": _S, "title": _S, "created_at": _MS, "channel": _S, "url": _S,
                 "products": arr(obj({"pool_id": _S, "sku": _S, "title": _S, "unit_price": _MONEY,
                                      "currency": _CURRENCY, "open": _BOOL}, "pool_id", "sku"))},
                "shop_id", "owner", "title", "channel", "url", "products"),
}


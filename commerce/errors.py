"""The one error tree: stable codes, the exceptions that carry them, and their HTTP statuses. Pure.

Both transports catch ``CommerceError`` once: the WebSocket endpoint answers ``error {code,
message, rid}``, the HTTP API ``{"error": {"code", "message"}}`` with ``HTTP_STATUS[code]``.
``inventory`` sits below this package and raises its own ``InvalidInput``; ``as_error`` maps it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from redis.exceptions import ClusterDownError, ConnectionError as RedisConnectionError, TimeoutError as RedisTimeout
from redis.exceptions import TryAgainError

from inventory.acked import NotReplicated
from inventory.domain import InvalidInput as InventoryInvalidInput
from inventory.domain import StockMoving

__all__ = [
    "ErrorCode", "HTTP_STATUS", "CommerceError", "BadJson", "BadMessage", "InvalidInput", "NotFound",
    "NotJoined", "Unauthorized", "Forbidden", "Muted", "RateLimited", "Conflict", "NotSettled", "Internal",
    "Refused", "HoldLost", "Unavailable", "as_error", "status_of",
]


class ErrorCode(StrEnum):
    BAD_JSON = "BAD_JSON"                  # not JSON / not msgpack / not an object
    BAD_MESSAGE = "BAD_MESSAGE"            # unknown type, a field missing or of the wrong type
    INVALID = "INVALID"                    # a field's value out of range
    NOT_JOINED = "NOT_JOINED"
    NOT_FOUND = "NOT_FOUND"
    NOT_SETTLED = "NOT_SETTLED"            # the order is paid but not in SQL yet
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    MUTED = "MUTED"
    RATE_LIMITED = "RATE_LIMITED"
    CONFLICT = "CONFLICT"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    TOO_LARGE = "TOO_LARGE"
    URI_TOO_LONG = "URI_TOO_LONG"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"            # Redis (a shard) unreachable or failing over, or an answer not yet
                                           # replicated: nothing acknowledged; retry with the same rid
    # answers of the stock scripts, errors when they answer an HTTP request
    SOLD_OUT = "SOLD_OUT"
    LIMIT = "LIMIT"
    NOT_STARTED = "NOT_STARTED"
    ENDED = "ENDED"
    IDEM_MISMATCH = "IDEM_MISMATCH"
    ALREADY_CONFIRMED = "ALREADY_CONFIRMED"
    NOT_HELD = "NOT_HELD"
    EXPIRED = "EXPIRED"
    # payments through a provider (docs/PROTOCOL.md Payments)
    PAYMENT_REQUIRED = "PAYMENT_REQUIRED"  # `pay` outside LIVESALE_PAYMENT_MODE=instant: send `checkout`
    NO_PROVIDER = "NO_PROVIDER"            # `checkout` in instant mode (or a webhook for another provider)
    PAYMENT_UNAVAILABLE = "PAYMENT_UNAVAILABLE"  # the provider could not be reached; retry
    BAD_SIGNATURE = "BAD_SIGNATURE"        # webhook: signature missing, malformed or wrong
    STALE_WEBHOOK = "STALE_WEBHOOK"        # webhook: timestamp outside the tolerance window
    BAD_WEBHOOK = "BAD_WEBHOOK"            # webhook: the body is not a payment event
    REPLAYED = "REPLAYED"                  # webhook: an event id already processed, with another body
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"    # webhook: amount differs from the hold's price x qty
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"  # webhook: currency differs from the sale's
    # identity policy (docs/PROTOCOL.md Identity)
    GUESTS_OFF = "GUESTS_OFF"              # POST /api/viewer-token while LIVESALE_GUEST_TOKENS is off
    MEMBERS_ONLY = "MEMBERS_ONLY"          # a guest token's buy of a members-only sale
    # recovery after Redis data loss (docs/PROTOCOL.md Errors)
    HOLD_LOST = "HOLD_LOST"                # the hold was lost with Redis data; the sale was rebuilt from SQL
    # stock pools (docs/PROTOCOL.md Stock pools)
    POOL_SHORT = "POOL_SHORT"              # the pool has fewer units available than the move asks for
    NOT_OPEN = "NOT_OPEN"                  # a pre-sale's balance before its window opens
    # interaction (docs/PROTOCOL.md Interaction)
    TEAM_LOCKED = "TEAM_LOCKED"            # already in another team and the host turned switching off
    TEAM_COOLDOWN = "TEAM_COOLDOWN"        # switched teams too recently
    ALREADY_VOTED = "ALREADY_VOTED"        # one vote per viewer per poll
    CLOSED = "CLOSED"                      # the poll has closed
    ALL_CLAIMED = "ALL_CLAIMED"            # the drop has no coupon left
    ALREADY_CLAIMED = "ALREADY_CLAIMED"    # one coupon per viewer per drop
    TEAM_ONLY = "TEAM_ONLY"                # the drop or draw is for another team's members
    COUPON_NOT_APPLICABLE = "COUPON_NOT_APPLICABLE"  # not for this sale/product, under min spend, other currency
    COUPON_USED = "COUPON_USED"            # redeemed, or locked to another payment
    COUPON_EXPIRED = "COUPON_EXPIRED"
    NOT_ELIGIBLE = "NOT_ELIGIBLE"          # a draw's entry rule is not met
    ALREADY_ENTERED = "ALREADY_ENTERED"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_JSON: 400, ErrorCode.BAD_MESSAGE: 400, ErrorCode.INVALID: 400, ErrorCode.NOT_JOINED: 400,
    ErrorCode.UNAUTHORIZED: 401, ErrorCode.FORBIDDEN: 403, ErrorCode.MUTED: 403,
    ErrorCode.NOT_FOUND: 404, ErrorCode.NOT_SETTLED: 404, ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.SOLD_OUT: 409, ErrorCode.LIMIT: 409, ErrorCode.NOT_STARTED: 409, ErrorCode.IDEM_MISMATCH: 409,
    ErrorCode.CONFLICT: 409, ErrorCode.ALREADY_CONFIRMED: 409, ErrorCode.NOT_HELD: 409,
    ErrorCode.ENDED: 410, ErrorCode.EXPIRED: 410, ErrorCode.TOO_LARGE: 413, ErrorCode.URI_TOO_LONG: 414,
    ErrorCode.RATE_LIMITED: 429, ErrorCode.INTERNAL: 500, ErrorCode.UNAVAILABLE: 503,
    ErrorCode.PAYMENT_REQUIRED: 402, ErrorCode.NO_PROVIDER: 409, ErrorCode.PAYMENT_UNAVAILABLE: 503,
    ErrorCode.BAD_SIGNATURE: 400, ErrorCode.STALE_WEBHOOK: 400, ErrorCode.BAD_WEBHOOK: 400,
    ErrorCode.REPLAYED: 409, ErrorCode.AMOUNT_MISMATCH: 422, ErrorCode.CURRENCY_MISMATCH: 422,
    ErrorCode.GUESTS_OFF: 403, ErrorCode.MEMBERS_ONLY: 403, ErrorCode.HOLD_LOST: 410,
    ErrorCode.POOL_SHORT: 409, ErrorCode.NOT_OPEN: 409,
    ErrorCode.TEAM_LOCKED: 409, ErrorCode.TEAM_COOLDOWN: 409, ErrorCode.ALREADY_VOTED: 409, ErrorCode.CLOSED: 409,
    ErrorCode.ALL_CLAIMED: 409, ErrorCode.ALREADY_CLAIMED: 409, ErrorCode.TEAM_ONLY: 403,
    ErrorCode.COUPON_NOT_APPLICABLE: 409, ErrorCode.COUPON_USED: 409, ErrorCode.COUPON_EXPIRED: 410,
    ErrorCode.NOT_ELIGIBLE: 403, ErrorCode.ALREADY_ENTERED: 409,
}


class CommerceError(Exception):
    """A refused request: a stable ``code`` and a human ``message``; nothing was changed."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadJson(CommerceError):
    code = ErrorCode.BAD_JSON


class BadMessage(CommerceError):
    code = ErrorCode.BAD_MESSAGE


class InvalidInput(CommerceError):
    code = ErrorCode.INVALID


class NotFound(CommerceError):
    code = ErrorCode.NOT_FOUND


class NotJoined(CommerceError):
    code = ErrorCode.NOT_JOINED


class Unauthorized(CommerceError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(CommerceError):
    code = ErrorCode.FORBIDDEN


class Muted(CommerceError):
    code = ErrorCode.MUTED


class RateLimited(CommerceError):
    code = ErrorCode.RATE_LIMITED


class Conflict(CommerceError):
    code = ErrorCode.CONFLICT


class NotSettled(CommerceError):
    code = ErrorCode.NOT_SETTLED


class Internal(CommerceError):
    code = ErrorCode.INTERNAL


class Unavailable(CommerceError):
    """The stock service could not answer now (a Redis shard down or failing over, or the answer not on
    enough replicas in time): retry the same request id."""

    code = ErrorCode.UNAVAILABLE


class HoldLost(CommerceError):
    """A hold Redis lost with its data (the sale was rebuilt from SQL): buy again."""

    code = ErrorCode.HOLD_LOST


class Refused(CommerceError):
    """A request answered by a code chosen at run time (the stock scripts' answers over HTTP)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]  # per instance here


# Redis errors that mean "not now" rather than "never": connection lost, timeout, a cluster mid-failover
_REDIS_DOWN = (RedisConnectionError, RedisTimeout, ClusterDownError, TryAgainError)


def as_error(exc: BaseException) -> CommerceError | None:
    """The tree's view of an exception from below (inventory), or None when it is not a refusal."""
    if isinstance(exc, CommerceError):
        return exc
    if isinstance(exc, InventoryInvalidInput):
        return InvalidInput(exc.message)
    if isinstance(exc, StockMoving):
        return Unavailable(f"{exc}; retry the same request id")
    if isinstance(exc, NotReplicated):
        return Unavailable(f"the answer is not on enough replicas yet ({exc}); retry the same request id")
    if isinstance(exc, _REDIS_DOWN) or _torn_in_redis(exc):
        return Unavailable("the stock service is unreachable or failing over; retry the same request id")
    return None


def _torn_in_redis(exc: BaseException) -> bool:
    """A RuntimeError / AttributeError raised inside redis-py's connection code: a connection the cluster
    client closed under a command (it does on a topology change) -- a connection failure, not a bug of ours."""
    if not isinstance(exc, (RuntimeError, AttributeError)) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_code.co_filename.replace("\\", "/")
    return "/redis/" in name or "/asyncio/selector_events.py" in name or "uvloop" in name


def status_of(code: ErrorCode | str) -> int:
    return HTTP_STATUS.get(ErrorCode(code), 400) if code in ErrorCode.__members__ else 400

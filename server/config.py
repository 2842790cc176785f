"""The one settings object, read once from the environment.

Every server knob lives here; nothing else in the server reads settings from ``os.environ``. (The
one exception is ``LIVESALE_REUSE_PORT`` in ``server/cli.py``: an internal signal from
``livesale serve --workers N`` to its own gateway children, not a user setting.)
``Settings.from_env(env)`` validates every value and raises ``SettingsError``
with a message that names the variable, what it got and what it expects.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Settings", "SettingsError", "ENV_DOCS", "ENV_ALLOWED"]


class SettingsError(ValueError):
    """A setting in the environment is missing, malformed or out of range."""


def _n(value: float) -> str:
    """A bound as the README writes it: 86,400 / 0.1."""
    return f"{int(value):,}" if float(value).is_integer() else str(value)


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected an integer") from None
        if not lo <= value <= hi:
            raise SettingsError(f"{name}={value}: expected a value between {lo} and {hi}")
        return value

    parse.allowed = f"{_n(lo)} to {_n(hi)}"  # type: ignore[attr-defined]
    return parse


def _float(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a number") from None
        if not lo <= value <= hi:
            raise SettingsError(f"{name}={value}: expected a value between {lo} and {hi}")
        return value

    parse.allowed = f"{_n(lo)} to {_n(hi)}"  # type: ignore[attr-defined]
    return parse


def _str(name: str, raw: str) -> str:
    return raw.strip()


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true/false")


_bool.allowed = "true/false (also 1/0, yes/no, on/off)"  # type: ignore[attr-defined]


def _secret_list(name: str, raw: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    if any(len(v) < 32 for v in values):
        raise SettingsError(f"{name}: every secret must be at least 32 characters (HS256 keys need 256 bits)")
    return values


_secret_list.allowed = "empty, or comma-separated secrets of at least 32 characters each"  # type: ignore[attr-defined]


def _jwks(name: str, raw: str) -> str:
    value = raw.strip()
    if "://" in value and not value.startswith(("https://", "http://")):
        raise SettingsError(f"{name}: expected a file path or a URL starting with https:// or http://")
    return value


_jwks.allowed = "empty, a file path, or an https:// or http:// URL"  # type: ignore[attr-defined]


def _url(schemes: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip()
        if value and not value.startswith(tuple(s + "://" for s in schemes)):
            raise SettingsError(
                f"{name}: expected a URL starting with one of {', '.join(s + '://' for s in schemes)}"
            )
        return value

    *rest, last = [s + "://" for s in schemes]
    kinds = f"{', '.join(rest)} or {last}" if rest else last
    parse.allowed = f"empty, or a {kinds} URL"  # type: ignore[attr-defined]
    return parse


def _level(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"{name}={raw!r}: expected DEBUG, INFO, WARNING or ERROR")
    return value


_level.allowed = "DEBUG, INFO, WARNING or ERROR"  # type: ignore[attr-defined]


def _proxies(name: str, raw: str) -> str:
    from commerce.addresses import parse_proxies  # the one parser, shared with the transports

    try:
        parse_proxies(raw)
    except ValueError as e:
        raise SettingsError(f"{name}: {e}") from None
    return raw.strip()


_proxies.allowed = "empty, or a comma-separated list of IP addresses or networks (10.0.0.0/8)"  # type: ignore[attr-defined]


def _choice(values: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in values:
            raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(values)}")
        return value

    parse.allowed = f"{', '.join(values[:-1])} or {values[-1]}" if len(values) > 1 else values[0]  # type: ignore[attr-defined]
    return parse


def _env(var: str, parse: Callable[[str, str], Any], doc: str, allowed: str | None = None) -> Any:
    """``allowed``: what the README states as the accepted values (default: the parser's own bounds);
    ``validate`` enforces the rules that span fields or are not the parser's."""
    return {"env": var, "parse": parse, "doc": doc,
            "allowed": getattr(parse, "allowed", "") if allowed is None else allowed}


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration. Build it with ``Settings.from_env()``."""

    host: str = field(default="127.0.0.1", metadata=_env("LIVESALE_HOST", _str, "Address the HTTP/WebSocket server binds."))
    port: int = field(default=8080, metadata=_env("LIVESALE_PORT", _int(0, 65535), "TCP port of the HTTP/WebSocket server (0 picks a free one)."))
    workers: int = field(default=1, metadata=_env("LIVESALE_WORKERS", _int(1, 64), "Gateway processes sharing the port with SO_REUSEPORT."))
    data_dir: str = field(default=".livesale", metadata=_env("LIVESALE_DATA_DIR", _str, "Directory for the embedded Valkey (AOF, socket), the SQLite file and the generated secret."))
    redis_url: str = field(default="", metadata=_env("REDIS_URL", _url(("redis", "rediss", "unix")), "Redis/Valkey to use. Empty: start a private embedded Valkey in the data directory."))
    embedded_cluster: int = field(default=0, metadata=_env("LIVESALE_EMBEDDED_CLUSTER", _int(0, 16), "With REDIS_URL empty: N > 0 starts a private Valkey Cluster of N masters (each with LIVESALE_EMBEDDED_REPLICAS replicas) on free loopback ports, under <data dir>/cluster, instead of the single embedded Valkey, and uses it as with LIVESALE_REDIS_CLUSTER; for development and tests: its data is deleted when the server stops (SQL keeps the records). 0: off. Ignored when REDIS_URL is set."))
    embedded_replicas: int = field(default=1, metadata=_env("LIVESALE_EMBEDDED_REPLICAS", _int(0, 2), "Replicas per master of the embedded cluster (LIVESALE_EMBEDDED_CLUSTER)."))
    database_url: str = field(default="", metadata=_env("DATABASE_URL", _url(("sqlite", "sqlite+aiosqlite", "postgresql", "postgres", "postgresql+asyncpg")), "SQL system of record. Empty: SQLite file in the data directory. postgresql://... uses asyncpg."))
    secret: str = field(default="", repr=False, metadata=_env("LIVESALE_SECRET", _str, "HMAC secret that signs host and viewer tokens. Empty: a random one kept in <data dir>/secret.key (mode 0600).", "at least 32 characters"))
    secrets_previous: tuple[str, ...] = field(default=(), repr=False, metadata=_env("LIVESALE_SECRETS_PREVIOUS", _secret_list, "Earlier HMAC secrets, still accepted when verifying HS256 tokens (never used to sign): rotate LIVESALE_SECRET without refusing the tokens already out."))
    jwks: str = field(default="", metadata=_env("LIVESALE_JWKS", _jwks, "The platform's public key set (JWKS): RS256 and EdDSA tokens whose `kid` is in it are accepted, so gateways need not hold the platform's signing key. A URL is fetched at start, every LIVESALE_JWKS_REFRESH_S and on an unknown `kid` (at most every 5 s); a file is re-read the same way. Empty: HS256 tokens only."))
    jwks_refresh_s: float = field(default=300.0, metadata=_env("LIVESALE_JWKS_REFRESH_S", _float(1, 86400), "How often LIVESALE_JWKS is reloaded: a key removed from the set is refused after at most this long."))
    token_issuer: str = field(default="", metadata=_env("LIVESALE_TOKEN_ISSUER", _str, "When set, a token signed with a LIVESALE_JWKS key must carry this `iss`.", "empty, or the expected `iss`"))
    token_audience: str = field(default="", metadata=_env("LIVESALE_TOKEN_AUDIENCE", _str, "When set, a token signed with a LIVESALE_JWKS key must carry this `aud`; when empty, such a token with an `aud` is refused.", "empty, or the expected `aud`"))
    log_level: str = field(default="INFO", metadata=_env("LIVESALE_LOG_LEVEL", _level, "Logging level."))
    log_format: str = field(default="text", metadata=_env("LIVESALE_LOG_FORMAT", _choice(("text", "json")), "Log line format on stderr: `text` (`<time> <LEVEL> <logger>[<pid>]: <message>`) or `json` (one object a line: ts, level, logger, pid, message, exc, request_id and the room / sale / hold ids where known; docs/OPERATIONS.md Logs). Tokens, secrets and passwords are redacted either way."))
    access_log: bool = field(default=True, metadata=_env("LIVESALE_ACCESS_LOG", _bool, "One log line per HTTP request (method, path without the query string, status, bytes, duration, request id, peer address) on the `livesale.access` logger at INFO, in LIVESALE_LOG_FORMAT."))
    redis_cluster: bool = field(default=False, metadata=_env("LIVESALE_REDIS_CLUSTER", _bool, "Treat REDIS_URL as a seed node of a Redis/Valkey Cluster (cluster client, sharded room channels, settlement per slot; docs/SCALING.md). `livesale serve --cluster N` sets it for its embedded cluster."))
    redis_pool_size: int = field(default=64, metadata=_env("LIVESALE_REDIS_POOL", _int(1, 10000), "Redis connections per process; requests wait for a free one rather than fail."))
    redis_wait_replicas: int = field(default=0, metadata=_env("LIVESALE_REDIS_WAIT_REPLICAS", _int(0, 16), "Replicas that must have a hold or a payment before the buyer is answered: `WAIT n` pipelined after the script on the same connection, so an acknowledged hold or paid order survives its master's failover. 0: answer at once (asynchronous replication; docs/SCALING.md has the cost and the trade-off)."))
    redis_wait_ms: int = field(default=1000, metadata=_env("LIVESALE_REDIS_WAIT_MS", _int(1, 10000), "How long `WAIT` may hold an answer for its replicas; an answer not confirmed by enough replicas in time becomes the retryable `UNAVAILABLE` error (a retry with the same request id gets the same hold or payment once it is replicated, or does it again on the promoted replica if it was lost)."))
    answer_deadline_ms: int = field(default=5000, metadata=_env("LIVESALE_ANSWER_DEADLINE_MS", _int(0, 120000), "The longest a buy, pay, checkout, release, vote or coupon claim waits for its answer: past it the request is answered with the retryable `UNAVAILABLE` (a slow or failing-over Redis shard), goes on in the background, and a retry with the same request id gets its outcome. A request still queued at its deadline is answered without being run. 0: no deadline."))
    default_hold_ttl_s: int = field(default=300, metadata=_env("LIVESALE_HOLD_TTL_S", _int(5, 86400), "Default pay-by window of a hold, in seconds."))
    payment_mode: str = field(default="sandbox", metadata=_env("LIVESALE_PAYMENT_MODE", _choice(("instant", "sandbox")), "How holds are paid. `sandbox` (the default): `checkout` through the sandbox provider and its signed webhooks; `pay` is refused (`PAYMENT_REQUIRED`); with LIVESALE_SANDBOX_URL empty, `livesale serve` and `livesale demo` start the bundled sandbox provider themselves. `instant`: `pay` confirms at once, only for load tests and benchmarks. Production sets a real provider (only the sandbox exists today: see Known limitations)."))
    payment_webhook_secret: str = field(default="", repr=False, metadata=_env("LIVESALE_PAYMENT_WEBHOOK_SECRET", _str, "Shared secret of the payment provider's webhooks (HMAC-SHA256; the sandbox also takes it as its API key). Empty: a random one kept in <data dir>/payment-webhook.key (mode 0600); required when LIVESALE_SANDBOX_URL points at a sandbox started separately.", "empty, or at least 32 characters (required with LIVESALE_SANDBOX_URL)"))
    payment_tolerance_s: int = field(default=300, metadata=_env("LIVESALE_PAYMENT_TOLERANCE_S", _int(1, 3600), "A webhook whose signed timestamp is further than this from the server's clock is refused (`STALE_WEBHOOK`)."))
    sandbox_url: str = field(default="", metadata=_env("LIVESALE_SANDBOX_URL", _url(("http", "https")), "Base URL of a sandbox payment provider started separately (`python -m server.sandbox_pay`). Empty with LIVESALE_PAYMENT_MODE=sandbox: `livesale serve` (the parent, with several workers) and `livesale demo` start the bundled one on LIVESALE_HOST and print its URL."))
    sandbox_port: int = field(default=0, metadata=_env("LIVESALE_SANDBOX_PORT", _int(0, 65535), "Port of the bundled sandbox payment provider that `livesale serve` / `livesale demo` start (0: a free one, so a second server on the machine never collides; a set port that cannot be bound stops the command with exit status 1)."))
    max_qty_per_request: int = field(default=100, metadata=_env("LIVESALE_MAX_QTY", _int(1, 1_000_000), "Largest quantity one reserve request may ask for."))
    reap_interval_ms: int = field(default=250, metadata=_env("LIVESALE_REAP_INTERVAL_MS", _int(10, 60000), "How often expired holds are returned to stock."))
    reconcile_interval_s: float = field(default=60.0, metadata=_env("LIVESALE_RECONCILE_INTERVAL_S", _float(0, 86400), "Seconds between two comparisons of every live sale's Redis state with SQL, run by every gateway and settlement process, one of them a round (`livesale reconcile` documents the checks); a drifting sale is logged as a warning, and a sale whose Redis data vanished while SQL says it is live is rebuilt from SQL at once. 0 turns the comparison off."))
    refund_retry_s: float = field(default=60.0, metadata=_env("LIVESALE_REFUND_RETRY_S", _float(0, 86400), "A refund the payment provider did not accept (or that was recorded but not sent when a process stopped) is sent again once it has been untouched this many seconds, by every gateway and settlement process until the provider takes it. 0 turns the resending off."))
    settle_batch: int = field(default=200, metadata=_env("LIVESALE_SETTLE_BATCH", _int(1, 10000), "Orders written per settlement transaction."))
    settle_block_ms: int = field(default=1000, metadata=_env("LIVESALE_SETTLE_BLOCK_MS", _int(1, 4000), "XREADGROUP block time (kept below the Redis socket timeout)."))
    settle_claim_idle_ms: int = field(default=30000, metadata=_env("LIVESALE_SETTLE_CLAIM_IDLE_MS", _int(1, 3_600_000), "Pending entries idle this long are reclaimed from a dead consumer."))
    settle_max_deliveries: int = field(default=5, metadata=_env("LIVESALE_SETTLE_MAX_DELIVERIES", _int(1, 1000), "An entry delivered more often than this goes to the dead-letter stream."))
    settle_in_process: bool = field(default=True, metadata=_env("LIVESALE_SETTLE_IN_PROCESS", _bool, "Run a settlement worker inside `livesale serve` (turn off when running `livesale settle` separately)."))
    settle_heartbeat_s: float = field(default=5.0, metadata=_env("LIVESALE_SETTLE_HEARTBEAT_S", _float(0.1, 600), "How often each settlement worker (`livesale settle`, or the one inside `livesale serve`) writes its heartbeat to Redis (`ls:{settle}:alive:<consumer>`, expiring after 3 intervals) with its counters and the settlement lag; `livesale settle --check` reads them (docs/OPERATIONS.md Settlement heartbeat)."))
    metrics: bool = field(default=True, metadata=_env("LIVESALE_METRICS", _bool, "Serve Prometheus metrics at `GET /metrics` (docs/OPERATIONS.md Metrics); off: no route, no counting beyond the hub's own."))
    tick_ms: int = field(default=200, metadata=_env("LIVESALE_TICK_MS", _int(10, 10000), "Room tick: ambient events (likes, viewers, units left, comments, ticker) are coalesced per tick."))
    replay_buffer: int = field(default=1024, metadata=_env("LIVESALE_REPLAY_BUFFER", _int(16, 1_000_000), "Room events kept for resume after reconnect."))
    ws_soft_limit: int = field(default=256 * 1024, metadata=_env("LIVESALE_WS_SOFT_LIMIT", _int(1024, 1 << 30), "Write-buffer bytes above which ambient frames are skipped for a connection.", f"{_n(1024)} to {_n(1 << 30)}, below LIVESALE_WS_HARD_LIMIT"))
    ws_hard_limit: int = field(default=4 * 1024 * 1024, metadata=_env("LIVESALE_WS_HARD_LIMIT", _int(4096, 1 << 31), "Write-buffer bytes above which a connection is closed (code 4008) and must resync.", f"{_n(4096)} to {_n(1 << 31)}, above LIVESALE_WS_SOFT_LIMIT"))
    ws_max_msg: int = field(default=4096, metadata=_env("LIVESALE_WS_MAX_MSG", _int(256, 1 << 20), "Largest inbound WebSocket message, bytes."))
    heartbeat_s: float = field(default=25.0, metadata=_env("LIVESALE_HEARTBEAT_S", _float(1, 3600), "Server ping interval; a peer silent for two intervals is closed."))
    buy_rate: float = field(default=5.0, metadata=_env("LIVESALE_BUY_RATE", _float(0.1, 10000), "Buy requests per second allowed per connection (burst of twice this)."))
    comment_rate: float = field(default=1.0, metadata=_env("LIVESALE_COMMENT_RATE", _float(0.01, 10000), "Comments per second allowed per connection (burst of three)."))
    ambient_rate: int = field(default=20000, metadata=_env("LIVESALE_AMBIENT_RATE", _int(100, 10_000_000), "Ambient frames per second one gateway process writes at most: with more local viewers than this x tick, rooms tick every 2nd, 3rd... tick (critical events are never delayed)."))
    sample_threshold: int = field(default=20000, metadata=_env("LIVESALE_SAMPLE_THRESHOLD", _int(1, 10_000_000), "Rooms with more local viewers than this get sampled comments/ticker."))
    demo_viewers: int = field(default=6, metadata=_env("LIVESALE_DEMO_VIEWERS", _int(0, 10000), "Simulated viewers in `livesale demo`."))
    guest_tokens: bool = field(default=False, metadata=_env("LIVESALE_GUEST_TOKENS", _bool, "Issue guest viewer tokens (`POST /api/viewer-token`); off: refused with 403 `GUESTS_OFF`, and viewers need a token signed by the platform. `livesale demo` turns it on."))
    guest_token_rate: float = field(default=10.0, metadata=_env("LIVESALE_GUEST_TOKEN_RATE", _float(0.1, 100000), "Guest tokens per client address per minute, per gateway process (burst of this many, at least 1); over it: 429 `RATE_LIMITED`."))
    conn_per_addr: int = field(default=0, metadata=_env("LIVESALE_CONN_PER_ADDR", _int(0, 1_000_000), "Concurrent WebSockets per client address, per gateway process (0: no cap); over it the handshake is refused with HTTP 429 `RATE_LIMITED`."))
    join_rate_per_addr: float = field(default=0.0, metadata=_env("LIVESALE_JOIN_RATE_PER_ADDR", _float(0, 100000), "`join`s per second per client address, per gateway process (burst of twice this, at least 1; 0: no limit); over it: `error RATE_LIMITED`."))
    trusted_proxies: str = field(default="", metadata=_env("LIVESALE_TRUSTED_PROXIES", _proxies, "Reverse proxies whose `X-Forwarded-For` is believed: the client address is the last hop that is not one of them. Empty: the TCP peer's address (the header is ignored)."))
    retain_ended_s: int = field(default=3600, metadata=_env("LIVESALE_RETAIN_ENDED_S", _int(1, 31_536_000), "Seconds the Redis keys of an ended, settled sale (and of an ended room) are kept before they expire; their SQL records and archive rows stay (docs/DATABASE.md, Retention)."))
    retain_room_s: int = field(default=604800, metadata=_env("LIVESALE_RETAIN_ROOM_S", _int(1, 31_536_000), "Seconds a room's Redis keys (event log, state, comments, likes, viewers, funnel) live after its last activity; every event, comment, like, viewer report or funnel flush starts the window again. A buyer's index of holds (`GET /api/me/orders`) lives this long after their last reservation."))
    share_window_s: int = field(default=604800, metadata=_env("LIVESALE_SHARE_WINDOW_S", _int(60, 31_536_000), "Share-to-earn attribution window: a viewer who joins through a share link is attributed to its sharer (first touch) for this many seconds; an order paid in that room within it earns the sharer a commission."))
    commission_bps: int = field(default=500, metadata=_env("LIVESALE_COMMISSION_BPS", _int(0, 10000), "Default commission of a share link or a shopkeeper's mini-shop, in basis points of the paid total (500 = 5%), for products and pools without a rate of their own."))
    commission_pending_s: int = field(default=1_209_600, metadata=_env("LIVESALE_COMMISSION_PENDING_S", _int(0, 31_536_000), "A commission is `pending` this many seconds after its order settles (the return window; a refund reverses it), then `confirmed` and payable."))
    share_link_rate: float = field(default=20.0, metadata=_env("LIVESALE_SHARE_LINK_RATE", _float(0.1, 100000), "Share links and mini-shops a viewer may create per minute (burst of this many, at least 1); over it: 429 `RATE_LIMITED`."))
    signal_watch_s: int = field(default=30, metadata=_env("LIVESALE_SIGNAL_WATCH_S", _int(1, 86400), "A viewer who watches a pinned product this many seconds records a `watched` interest signal."))
    signal_flush_ms: int = field(default=200, metadata=_env("LIVESALE_SIGNAL_FLUSH_MS", _int(10, 60000), "How often a process appends the interest signals it recorded to the signal stream (one Redis call per flush)."))
    signal_batch: int = field(default=200, metadata=_env("LIVESALE_SIGNAL_BATCH", _int(1, 10000), "Signal stream entries written per SQL transaction by the signal sink."))
    signal_retention_days: int = field(default=90, metadata=_env("LIVESALE_SIGNAL_RETENTION_DAYS", _int(0, 3650), "Interest signals older than this are deleted from SQL (checked every 10 minutes by the signal sink); 0 keeps them."))
    signals_on: bool = field(default=True, metadata=_env("LIVESALE_SIGNALS", _bool, "Record interest signals (audiences, the per-viewer shelf and show reports use them)."))
    personal_shelf: bool = field(default=True, metadata=_env("LIVESALE_PERSONAL_SHELF", _bool, "Order each viewer's shelf (the show's products) by their own interest signals and team (docs/PROTOCOL.md, Each viewer their own shelf); off: every viewer sees the host's order."))
    webhook_url: str = field(default="", metadata=_env("LIVESALE_WEBHOOK_URL", _url(("http", "https")), "The platform's endpoint for re-engagement deliveries (reminders and audience notices to viewers who are offline), signed with LIVESALE_WEBHOOK_SECRET. Empty: offline viewers are not reached."))
    webhook_secret: str = field(default="", repr=False, metadata=_env("LIVESALE_WEBHOOK_SECRET", _str, "HMAC-SHA256 secret of the re-engagement deliveries. Empty: a random one kept in <data dir>/webhook.key (mode 0600), which the platform's receiver is given to verify deliveries (docs/WEBHOOKS.md).", "empty, or at least 32 characters"))
    webhook_attempts: int = field(default=8, metadata=_env("LIVESALE_WEBHOOK_ATTEMPTS", _int(1, 100), "Attempts per re-engagement delivery (the first and the retries, with exponential backoff from 1 s, capped at 5 minutes) before it is given up as `failed`."))
    shutdown_timeout_s: float = field(default=10.0, metadata=_env("LIVESALE_SHUTDOWN_TIMEOUT_S", _float(0.1, 600), "Graceful shutdown: time to drain before cancelling."))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``env`` (default ``os.environ``); ``overrides`` win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            meta = f.metadata
            raw = env.get(meta["env"])
            if raw is not None and raw.strip() != "":
                values[f.name] = meta["parse"](meta["env"], raw)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.ws_soft_limit >= self.ws_hard_limit:
            raise SettingsError("LIVESALE_WS_SOFT_LIMIT must be lower than LIVESALE_WS_HARD_LIMIT")
        if self.secret and len(self.secret) < 32:
            raise SettingsError("LIVESALE_SECRET must be at least 32 characters (HS256 keys need 256 bits)")
        if self.payment_webhook_secret and len(self.payment_webhook_secret) < 32:
            raise SettingsError("LIVESALE_PAYMENT_WEBHOOK_SECRET must be at least 32 characters")
        if self.payment_mode == "sandbox" and self.sandbox_url and not self.payment_webhook_secret:
            # a sandbox started separately signs with its own secret: the gateway must be given the same one
            raise SettingsError("LIVESALE_SANDBOX_URL (a sandbox started separately) needs "
                                "LIVESALE_PAYMENT_WEBHOOK_SECRET, the same as the sandbox's (at least 32 characters)")
        if self.webhook_secret and len(self.webhook_secret) < 32:
            raise SettingsError("LIVESALE_WEBHOOK_SECRET must be at least 32 characters")
        if self.settle_block_ms >= 5000:
            raise SettingsError("LIVESALE_SETTLE_BLOCK_MS must stay below the 5 s Redis socket timeout")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        """The DATABASE_URL in the async driver's dialect (aiosqlite or asyncpg)."""
        if not self.database_url:
            return f"sqlite+aiosqlite:///{self.data_path / 'livesale.db'}"
        from inventory.store import async_url  # one converter, shared with the store

        return async_url(self.database_url)

    def signing_secret(self) -> str:
        """LIVESALE_SECRET, or a random secret persisted (0600) in the data directory."""
        return self.signing_secret_and_origin()[0]

    def signing_secret_and_origin(self) -> tuple[str, str]:
        """The signing secret and where it came from, for humans (never the secret itself):
        ``LIVESALE_SECRET``, or ``/abs/path/secret.key (existing)`` / ``... (created now)``."""
        if self.secret:
            return self.secret, "LIVESALE_SECRET"
        return self._kept_secret("secret.key")

    def payment_secret(self) -> str:
        """LIVESALE_PAYMENT_WEBHOOK_SECRET, or a random one persisted (0600) in the data directory
        (``payment-webhook.key``): the bundled sandbox provider and the gateway share it."""
        if self.payment_webhook_secret:
            return self.payment_webhook_secret
        return self._kept_secret("payment-webhook.key")[0]

    def webhook_signing_secret(self) -> str:
        """LIVESALE_WEBHOOK_SECRET, or a random one persisted (0600) in the data directory (``webhook.key``)."""
        if self.webhook_secret:
            return self.webhook_secret
        return self._kept_secret("webhook.key")[0]

    def _kept_secret(self, name: str) -> tuple[str, str]:
        """A random secret kept in ``<data dir>/<name>`` (mode 0600; the first process to write it wins)."""
        path = self.data_path / name
        try:
            return path.read_text().strip(), f"{path} (existing)"
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
        created = False
        try:
            os.link(tmp, path)  # atomic: the first process to link wins
            created = True
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text().strip(), f"{path} ({'created now' if created else 'existing'})"


def _docs() -> list[tuple[str, str, str]]:
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        shown = "(empty)" if default in ("", ()) else str(default).lower() if isinstance(default, bool) else str(default)
        rows.append((f.metadata["env"], shown, f.metadata["doc"]))
    return rows


ENV_DOCS = _docs()
# Variable -> the values it accepts, as the README's configuration table states them ("" = any string).
ENV_ALLOWED: dict[str, str] = {f.metadata["env"]: f.metadata["allowed"] for f in dataclasses.fields(Settings)}

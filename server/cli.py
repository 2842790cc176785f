"""Command line: ``livesale serve | settle | reconcile | audit | demo | token | verify-draw``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

import verify_draw

from .config import Settings, SettingsError

__all__ = ["main"]

log = logging.getLogger("livesale")

# Internal parent -> child signal, not a user setting (so it is not in server/config.py or the README):
# `livesale serve` with more than one worker sets it in each gateway child's environment so the child
# binds with SO_REUSEPORT. Setting it by hand is not supported.
_INTERNAL_REUSE_PORT_ENV = "LIVESALE_REUSE_PORT"

TOKEN_TTL_MAX_S = 366 * 86400


class ListenError(OSError):
    """The HTTP/WebSocket address cannot be bound (in use, not ours, unknown host...)."""


def package_version() -> str:
    """The installed package's version; from a source tree without metadata, pyproject's."""
    import importlib.metadata

    try:
        return importlib.metadata.version("livesale")
    except importlib.metadata.PackageNotFoundError:
        import re

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            m = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
        except OSError:
            m = None
        return m.group(1) if m else "unknown"


def _setup_logging(settings: Settings) -> None:
    """Every command's logging: LIVESALE_LOG_LEVEL, LIVESALE_LOG_FORMAT (text | json), the settings' secrets
    never written (server/logs.py)."""
    from . import logs

    logs.setup(settings.log_level, settings.log_format,
               (settings.secret, *settings.secrets_previous, settings.payment_webhook_secret, settings.webhook_secret))


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _tune_gc() -> None:
    """After start-up: freeze what exists (imports, app, pools: never garbage) out of the collector's
    sight, and collect the young generation every 50,000 allocations instead of 700. Measured in the
    checkout burst (5,000 buyers, 10,000 clicks/s): the default thresholds spent ~4 s in the collector
    over the run, full passes over every connection's objects, 25-30% of the gateway's CPU."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _signal_event() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM; install it before announcing readiness."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bind (not yet listen) the server's sockets as asyncio's ``create_server`` would: one per address
    ``host`` resolves to (empty: every interface), SO_REUSEADDR, SO_REUSEPORT when asked, IPv6-only
    IPv6 sockets. Raises ``ListenError`` naming the address; nothing else has started by then."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ListenError(f"cannot listen on {_where(host, port)}: {str(e.strerror or e).lower()}") from None
    socks: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    where = _where(host, port)
    try:
        for family, kind, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            where = _where(str(addr[0]), int(addr[1]))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
    except OSError as e:
        for sock in socks:
            sock.close()
        raise ListenError(f"cannot listen on {where}: {str(e.strerror or e).lower()}") from None
    return socks


async def run_server(settings: Settings, *, reuse_port: bool = False,
                     ready: Callable[[str], Awaitable[None] | None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM. The address is bound first: when it cannot be (in use...), this
    raises ``ListenError`` before anything (embedded engine, settlement) has started."""
    from . import access_log
    from .app import create_app
    from .payment_setup import needs_bundled_sandbox, start_bundled_sandbox

    socks = bind_sockets(settings.host, settings.port, reuse_port=reuse_port)
    sandbox = None
    try:
        if needs_bundled_sandbox(settings):  # sandbox mode, no LIVESALE_SANDBOX_URL: start the bundled one
            sandbox, settings = await start_bundled_sandbox(settings, socks[0].getsockname()[1])
            print(f"livesale sandbox payment provider on {settings.sandbox_url} (no real money)", flush=True)
        stop = _signal_event()
        app = create_app(settings)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout_s,
                               **access_log.runner_options(settings.access_log))
        try:  # whatever fails from here on, everything started so far is stopped in order
            await runner.setup()
            for sock in socks:
                await web.SockSite(runner, sock, backlog=4096).start()
            _tune_gc()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}"
            # one write of the whole line: with several workers on one pipe (and PYTHONUNBUFFERED), print's
            # separate write of the newline let two workers' lines run together
            sys.stdout.write(f"livesale listening on {url}\n")
            sys.stdout.flush()
            if ready is not None:
                result = ready(url)
                if asyncio.iscoroutine(result):
                    await result
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        if sandbox is not None:
            await sandbox.cleanup()
        for sock in socks:
            sock.close()


def _serve_workers(settings: Settings) -> int:
    """N gateway processes sharing the port (SO_REUSEPORT); this process runs settlement. Returns 1
    when a gateway child ends on its own (it could not bind, it crashed): the others are stopped."""
    from .embedded import EmbeddedRedis
    from .embedded_cluster import EmbeddedCluster

    if settings.port == 0:
        raise SettingsError("LIVESALE_PORT must be set (not 0) with LIVESALE_WORKERS > 1")
    # the children bind exactly so: a port they cannot share fails here, before anything starts
    for sock in bind_sockets(settings.host, settings.port, reuse_port=True):
        sock.close()
    embedded: EmbeddedRedis | EmbeddedCluster | None = None
    env = dict(os.environ)
    if settings.metrics:  # one scrape of any worker adds up every process (server/metrics_dir.py)
        from .metrics_dir import fresh_multiprocess_dir

        fresh_multiprocess_dir(settings.data_path, env)
    if not settings.redis_url and settings.embedded_cluster > 0:  # --cluster N: the children get its seed node
        embedded = EmbeddedCluster(settings.data_path, settings.embedded_cluster, settings.embedded_replicas)
        env["REDIS_URL"] = embedded.start()
        env["LIVESALE_REDIS_CLUSTER"] = "1"
        settings = settings.replace(redis_cluster=True)
    elif not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_path)
        env["REDIS_URL"] = embedded.start()
    settings.signing_secret()  # create the shared secret once, before the workers race for it
    # The children re-read their settings from the environment: hand them what this process resolved
    # (command-line overrides such as --port included), not just a copy of os.environ.
    env.update(LIVESALE_SETTLE_IN_PROCESS="0", LIVESALE_WORKERS="1", LIVESALE_PORT=str(settings.port),
               LIVESALE_HOST=settings.host)
    env[_INTERNAL_REUSE_PORT_ENV] = "1"
    resolved = settings.replace(redis_url=env["REDIS_URL"] if embedded else settings.redis_url)
    try:
        return asyncio.run(_workers_main(resolved, env))
    finally:
        if embedded:
            embedded.stop()


async def _workers_main(settings: Settings, env: dict[str, str]) -> int:
    """Start the gateway children (and, in the sandbox mode without LIVESALE_SANDBOX_URL, the one
    bundled sandbox provider they share), settle until SIGINT/SIGTERM or until a child ends on its own."""
    from .payment_setup import needs_bundled_sandbox, start_bundled_sandbox

    stop = _signal_event()
    stopping = False
    failed: list[str] = []
    children: list[asyncio.subprocess.Process] = []

    async def watch(child: asyncio.subprocess.Process) -> None:
        rc = await child.wait()
        if settings.metrics:  # its live gauges (connections, rooms) stop counting
            from .metrics_dir import process_ended

            process_ended(child.pid)
        if not stopping and not stop.is_set():
            failed.append(f"gateway worker {child.pid} exited with status {rc}")
            stop.set()

    watchers: list[asyncio.Task[None]] = []
    sandbox = None
    try:
        if needs_bundled_sandbox(settings):  # one sandbox provider for all the gateways, in this process
            sandbox, settings = await start_bundled_sandbox(settings, settings.port)
            env.update(LIVESALE_SANDBOX_URL=settings.sandbox_url,
                       LIVESALE_PAYMENT_WEBHOOK_SECRET=settings.payment_webhook_secret)
            print(f"livesale sandbox payment provider on {settings.sandbox_url} (no real money)", flush=True)
        for _ in range(settings.workers):
            child = await asyncio.create_subprocess_exec(sys.executable, "-m", "server.cli", "serve", env=env)
            children.append(child)
            watchers.append(asyncio.create_task(watch(child), name=f"watch-{child.pid}"))
        await _settle_main(settings, stop)
    finally:
        stopping = True
        for c in children:
            if c.returncode is None:
                c.send_signal(signal.SIGTERM)
        for c in children:
            try:
                await asyncio.wait_for(c.wait(), settings.shutdown_timeout_s + 5)
            except TimeoutError:
                c.kill()
                await c.wait()
        await asyncio.gather(*watchers, return_exceptions=True)
        if sandbox is not None:
            await sandbox.cleanup()
    for reason in failed:
        log.error("%s: stopping", reason)
        print(f"livesale: {reason}", file=sys.stderr, flush=True)
    return 1 if failed else 0


async def _settle_main(settings: Settings, stop: asyncio.Event | None = None,
                       metrics_port: int | None = None) -> None:
    """Settlement worker + hold reaper, until SIGTERM or ``stop`` (drains the batch in hand first).
    Its metrics (LIVESALE_METRICS): served on ``metrics_port`` if given (`livesale settle --metrics-port`),
    else only written to the multiprocess directory when there is one (the parent of `serve --workers N`)."""
    from .app import Core, Settlement, Upkeep

    if stop is None:
        stop = _signal_event()
    core = await Core.open(settings)
    settlement = Settlement(settings, core)
    upkeep = Upkeep(settings, core)
    settlement.start()
    upkeep.start()
    metrics, metrics_http = None, None
    if settings.metrics and (metrics_port is not None or os.environ.get("PROMETHEUS_MULTIPROC_DIR")):  # metrics_dir
        from .metrics import Metrics, serve_settle

        metrics = Metrics()
        metrics.watch_settlement(settlement.worker, settlement.reaper, core.redis)
        await metrics.start()
        if metrics_port is not None:
            metrics_http = await serve_settle(metrics, settings.host, metrics_port)
            print(f"livesale settlement metrics on http://{settings.host}:{metrics_port}/metrics", flush=True)
    print("livesale settlement worker running", flush=True)
    try:
        await stop.wait()
    finally:
        if metrics_http is not None:
            await metrics_http.cleanup()
        await upkeep.aclose()
        await settlement.aclose()
        if metrics is not None:
            await metrics.aclose()
        await core.aclose()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(**_overrides(args))
    _setup_logging(settings)
    _install_uvloop()
    if settings.workers > 1:
        return _serve_workers(settings)
    asyncio.run(run_server(settings, reuse_port=os.environ.get(_INTERNAL_REUSE_PORT_ENV) == "1"))
    return 0


async def _settle_check(settings: Settings, max_lag_s: float) -> int:
    """`livesale settle --check`: one line from the workers' heartbeats; 0 when one is alive and the lag
    is within ``max_lag_s`` (inventory/settle_heartbeat.py)."""
    from inventory.redis_link import is_cluster
    from inventory.settle_heartbeat import read_beats, verdict

    from .app import redis_client

    redis = redis_client(settings.redis_url, 2, decode=True, cluster=settings.redis_cluster)
    try:
        beats, now_ms = await asyncio.wait_for(read_beats(redis), 10)
    except Exception as exc:  # the class only: the message of a connection error may carry the URL
        print(f"unhealthy: cannot read the settlement heartbeats from Redis ({type(exc).__name__})", flush=True)
        return 1
    finally:
        await redis.aclose()
        if not is_cluster(redis):
            await redis.connection_pool.disconnect()
    ok, line = verdict(beats, now_ms, max_lag_s)
    print(line, flush=True)
    return 0 if ok else 1


def cmd_settle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    _setup_logging(settings)
    if not settings.redis_url:
        raise SettingsError("`livesale settle` needs REDIS_URL (the embedded server belongs to `livesale serve`)")
    if args.check:
        if args.max_lag_s < 0:
            raise SettingsError(f"--max-lag-s {args.max_lag_s:g}: expected seconds, 0 or more")
        return asyncio.run(_settle_check(settings, args.max_lag_s))
    if not settings.database_url:
        raise SettingsError("`livesale settle` needs DATABASE_URL (a private SQLite file would not be the "
                            "gateways' database)")
    _install_uvloop()
    asyncio.run(_settle_main(settings, metrics_port=args.metrics_port))
    return 0


async def _reconcile_main(settings: Settings, repair: bool) -> int:
    """Compare every live sale with SQL (one line each); with ``repair`` rebuild the drifting ones."""
    from commerce.recovery import Recovery

    from .app import Core

    core = await Core.open(settings)
    try:
        recovery = Recovery(core.commerce)
        drifts = await recovery.check()
        for d in drifts:
            print(d.line(), flush=True)
        drifting = [d for d in drifts if not d.ok]
        rooms = await recovery.rooms_lost()
        for room_id in rooms:
            print(f"room {room_id} DRIFT live in SQL, its Redis state is gone", flush=True)
        if repair:
            for room_id in rooms:
                await recovery.republish_room(room_id)
                print(f"room {room_id} REPUBLISHED", flush=True)
        if not repair or not drifting:
            return 1 if drifting or (rooms and not repair) else 0
        failed = False
        for r in await recovery.repair(drifting):
            failed |= r.code != "REBUILT"
            print(f"{r.sale_id} {r.code} allocated={r.allocated} available={r.available} held={r.held} "
                  f"sold={r.sold} restored={r.added} requeued={r.requeued}", flush=True)
        return 1 if failed else 0
    finally:
        await core.aclose()


def cmd_reconcile(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    _setup_logging(settings)
    if not settings.redis_url:
        raise SettingsError("`livesale reconcile` needs REDIS_URL (the Redis server the gateways use)")
    if not settings.database_url:
        raise SettingsError("`livesale reconcile` needs DATABASE_URL (the gateways' database)")
    return asyncio.run(_reconcile_main(settings, args.repair))


async def _audit_main(settings: Settings, pool_ids: list[str]) -> int:
    """Audit stock pools (every one, or those named): one line per pool, one more per problem."""
    from .app import Core

    core = await Core.open(settings)
    try:
        pools = core.commerce.pools
        ids = pool_ids or [p.pool_id for p in await pools.sql.all(limit=100_000)]
        bad = 0
        for pool_id in ids:
            try:
                a = await pools.audit(pool_id)
            except Exception as exc:  # an unknown pool, or one SQL has and Redis lost
                print(f"pool {pool_id} ERROR {getattr(exc, 'message', exc)}", flush=True)
                bad += 1
                continue
            state = "OK" if a.ok else "DRIFT"
            print(f"pool {pool_id} {state} received={a.received} restocked={a.restocked} available={a.available} "
                  f"channel_held={a.channel_held} channel_sold={a.channel_sold} at_sales={a.at_sales} "
                  f"sales={len(a.sales)} ledger_pending={a.sql['journal_pending']}", flush=True)
            for problem in a.problems:
                print(f"  {problem}", flush=True)
            bad += not a.ok
        return 1 if bad else 0
    finally:
        await core.aclose()


def cmd_audit(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    _setup_logging(settings)
    if not settings.redis_url:
        raise SettingsError("`livesale audit` needs REDIS_URL (the Redis server the gateways use)")
    if not settings.database_url:
        raise SettingsError("`livesale audit` needs DATABASE_URL (the gateways' database)")
    return asyncio.run(_audit_main(settings, args.pool or []))


def cmd_token(args: argparse.Namespace) -> int:
    from commerce.identity import TokenError, mint_host_token, mint_merchant_token, mint_viewer_token

    if not 1 <= args.ttl <= TOKEN_TTL_MAX_S:
        print(f"livesale token: --ttl {args.ttl}: expected seconds between 1 and {TOKEN_TTL_MAX_S} (366 days)",
              file=sys.stderr)
        return 2
    settings = Settings.from_env()
    secret, origin = settings.signing_secret_and_origin()
    # where the secret came from (never the secret): a server verifies the token only with the same one
    print(f"secret: {origin}", file=sys.stderr)
    if origin.endswith("(created now)"):
        print("livesale token: no secret was there, so a new one was made: a server accepts this token only if "
              "it uses this data directory (LIVESALE_DATA_DIR) or LIVESALE_SECRET set to this secret", file=sys.stderr)
    try:
        if args.viewer:
            token, _user = mint_viewer_token(secret, args.viewer, ttl_s=args.ttl)
        elif args.merchant:
            token = mint_merchant_token(secret, args.merchant, ttl_s=args.ttl)
        else:
            token = mint_host_token(secret, args.host, tuple(args.room or ["*"]), ttl_s=args.ttl)
    except TokenError as e:
        print(f"livesale token: {e}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    settings = Settings.from_env(**_overrides(args))
    _setup_logging(settings)
    _install_uvloop()
    asyncio.run(run_demo(settings))
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "port", None) is not None:
        out["port"] = args.port
    if getattr(args, "workers", None) is not None:
        out["workers"] = args.workers
    if getattr(args, "cluster", None) is not None:
        out["embedded_cluster"] = args.cluster
    if getattr(args, "replicas", None) is not None:
        out["embedded_replicas"] = args.replicas
    return out


def _cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", type=int, metavar="N", choices=range(0, 17),
                   help="without REDIS_URL: start a private Valkey Cluster of N masters on loopback instead of the "
                        "single embedded Valkey, N from 1 to 16, 0 off (development and tests: its data is deleted "
                        "at exit; LIVESALE_EMBEDDED_CLUSTER)")
    p.add_argument("--replicas", type=int, metavar="R", choices=range(0, 3),
                   help="replicas per master of that cluster, 0 to 2 (default 1; LIVESALE_EMBEDDED_REPLICAS)")


_EPILOG = """\
every setting comes from the environment (the README's Configuration table lists them all); the main ones:
  LIVESALE_HOST, LIVESALE_PORT   where `serve` listens (default 127.0.0.1:8080)
  REDIS_URL                      Redis/Valkey (empty: a private embedded Valkey under LIVESALE_DATA_DIR)
  LIVESALE_REDIS_CLUSTER         treat REDIS_URL as a Redis Cluster seed node
  DATABASE_URL                   the SQL system of record (empty: SQLite under LIVESALE_DATA_DIR)
  LIVESALE_SECRET                the token signing secret (empty: one kept in LIVESALE_DATA_DIR)
  LIVESALE_WORKERS               gateway processes sharing the port
  LIVESALE_SETTLE_IN_PROCESS     settle inside `serve` (false when `livesale settle` runs separately)
  LIVESALE_LOG_LEVEL, LIVESALE_LOG_FORMAT, LIVESALE_ACCESS_LOG   logging (text or json)
operations (logs, health and readiness, metrics, the settlement heartbeat): docs/OPERATIONS.md
`livesale COMMAND --help` describes a command's options."""


def build_parser() -> argparse.ArgumentParser:
    """The command line: every command and option with its help (tests/unit/test_cli_help.py)."""
    parser = argparse.ArgumentParser(prog="livesale", description="Real-time server for live-stream shopping.",
                                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"livesale {package_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    p = sub.add_parser("serve", help="run the HTTP/WebSocket gateway (and, by default, settlement)")
    p.add_argument("--port", type=int, help="TCP port to listen on, 0 for a free one (overrides LIVESALE_PORT)")
    p.add_argument("--workers", type=int, help="gateway processes sharing the port (SO_REUSEPORT)")
    _cluster_arguments(p)
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("settle", help="run a settlement worker and the hold reaper (needs REDIS_URL); --check: "
                                      "is one alive")
    p.add_argument("--check", action="store_true",
                   help="do not settle: read the settlement workers' heartbeats in Redis and exit 0 when at least "
                        "one is alive and the lag is within --max-lag-s, else 1, with a one-line reason (needs "
                        "REDIS_URL only)")
    p.add_argument("--max-lag-s", type=float, default=60.0, metavar="S",
                   help="with --check: the largest acceptable age of the oldest order not yet settled, in "
                        "seconds (default: 60)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve this process's Prometheus metrics at http://LIVESALE_HOST:PORT/metrics "
                        "(docs/OPERATIONS.md Metrics)")
    p.set_defaults(fn=cmd_settle)
    p = sub.add_parser("reconcile", help="compare live sales' Redis state with SQL (needs REDIS_URL, DATABASE_URL); "
                                         "exit 1 on drift")
    p.add_argument("--repair", action="store_true", help="rebuild every drifting sale from SQL")
    p.set_defaults(fn=cmd_reconcile)
    p = sub.add_parser("audit", help="check every stock pool's balance in Redis and against SQL (needs REDIS_URL, "
                                     "DATABASE_URL); exit 1 on a difference")
    p.add_argument("--pool", action="append", help="audit this pool only (repeat)")
    p.set_defaults(fn=cmd_audit)
    p = sub.add_parser("demo", help="the whole system on embedded defaults with a live demo room")
    p.add_argument("--port", type=int, help="TCP port to listen on, 0 for a free one (overrides LIVESALE_PORT)")
    _cluster_arguments(p)
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("token", help="mint a signed host token (or --viewer NAME for a viewer token)")
    p.add_argument("--host", default="host", help="host id (default: host)")
    p.add_argument("--room", action="append", help="room the token may control (repeat; default: all)")
    p.add_argument("--viewer", help="mint a viewer token with this display name instead")
    p.add_argument("--merchant", help="mint a merchant token (owns stock pools) with this merchant id instead")
    p.add_argument("--ttl", type=int, default=7 * 86400,
                   help=f"lifetime in seconds, 1 to {TOKEN_TTL_MAX_S} (default: 7 days)")
    p.set_defaults(fn=cmd_token)
    p = sub.add_parser("verify-draw", help="check a lucky draw's winners from its published entrant list alone "
                                           "(docs/DRAWS.md); exit 1 unless everything agrees")
    verify_draw.add_arguments(p)
    p.set_defaults(fn=verify_draw.run)
    for choice in sub._choices_actions:  # each command's own --help opens with its one-line summary
        command = sub.choices[choice.dest]
        command.description = command.description or choice.help
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except SettingsError as e:
        print(f"livesale: configuration error: {e}", file=sys.stderr)
        return 2
    except ListenError as e:
        print(f"livesale: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # `python -m server.cli`: run the importable module's main, not this __main__ copy (server.demo
    # imports server.cli: the ListenError it raises must be the class main() catches)
    from server.cli import main as _main

    sys.exit(_main())

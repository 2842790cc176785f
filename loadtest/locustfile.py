"""Locust scenario for a live room: viewers watch, like, comment, tap buy at a sale's open, pay.

Headless through ``make loadtest`` (``python -m loadtest.run_locust``), or the web UI against a
running server::

    export LIVESALE_HOST_TOKEN=$(python -m server.cli token --host loadhost)
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080

Locust has no WebSocket user: each user holds a ``livesale_client.sync`` client (the Python client
package; its receiver thread is a gevent greenlet here), which joins, resumes after a drop and re-sends
a buy / pay with the same rid. Only request/response pairs become locust request events (``ws buy``
click -> ``buy_result``, ``ws pay`` -> ``pay_result``, ``ws launch_sale`` -> ``ok``, ``ws join`` ->
``snapshot``); room broadcasts are counted, not recorded one by one.

Viewers learn each sale's open instant (``starts_at``, server time) from the snapshot and from
``sale_scheduled``/``sale_open`` events, estimate the clock offset NTP-style over 5 ``clock``
samples (PROTOCOL.md, Clock sync), and tap buy at the open with a small human jitter. A share
(``LIVESALE_PAY_RATIO``) of the holds are paid; every CONFIRMED pay result is appended as one JSON
line to ``LIVESALE_ORDERS_FILE`` (order, sale, hold, user, token) so ``run_locust`` can check each
exists in the database exactly once. One host user (``LIVESALE_HOST_TOKEN``) launches a sale every
``LIVESALE_SALE_EVERY_S`` seconds with ``launch_sale``.

Environment: LIVESALE_HOST_TOKEN, LIVESALE_ROOM (load), LIVESALE_PRODUCT (p-load),
LIVESALE_SALE_UNITS (50), LIVESALE_SALE_EVERY_S (10), LIVESALE_SALE_STARTS_IN_S (3),
LIVESALE_PAY_RATIO (0.5), LIVESALE_ORDERS_FILE (unset: not recorded), LIVESALE_SECRET.

Viewer tokens: with ``LIVESALE_SECRET`` (the server's, as ``run_locust`` passes it) each viewer's token
is minted here with PyJWT, as the platform's auth service would (PROTOCOL.md Identity); without it
they come from ``POST /api/viewer-token``, which needs a server with ``LIVESALE_GUEST_TOKENS=1``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import time

import gevent
import gevent.event
import jwt
from gevent.lock import Semaphore
from locust import HttpUser, between, constant, events, task

from livesale_client import LiveSaleError, SaleOpen, SaleScheduled
from livesale_client import sync as livesale_sync

ROOM = os.environ.get("LIVESALE_ROOM", "load")
PRODUCT = os.environ.get("LIVESALE_PRODUCT", "p-load")
HOST_TOKEN = os.environ.get("LIVESALE_HOST_TOKEN", "")
ORDERS_FILE = os.environ.get("LIVESALE_ORDERS_FILE", "")
PAY_RATIO = float(os.environ.get("LIVESALE_PAY_RATIO", "0.5"))
SECRET = os.environ.get("LIVESALE_SECRET", "")
SALE_UNITS = int(os.environ.get("LIVESALE_SALE_UNITS", "50"))
SALE_EVERY_S = float(os.environ.get("LIVESALE_SALE_EVERY_S", "10"))
SALE_STARTS_IN_S = int(os.environ.get("LIVESALE_SALE_STARTS_IN_S", "3"))
SALE_DURATION_S = int(os.environ.get("LIVESALE_SALE_DURATION_S", "60"))
REPLY_TIMEOUT_S = 15.0

_ids = itertools.count(1)
_orders_lock = Semaphore()
BUY_OK = {"RESERVED", "SOLD_OUT", "LIMIT", "ENDED", "NOT_STARTED"}  # answers a real click can get


def _record_order(line: dict) -> None:
    if not ORDERS_FILE:
        return
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    with _orders_lock:  # O_APPEND + one write per line: safe across locust processes too
        fd = os.open(ORDERS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def platform_token(name: str, ttl_s: int = 3600) -> tuple[str, str]:
    """(token, user id): an HS256 viewer token with the claims PROTOCOL.md lists, signed with
    LIVESALE_SECRET as the platform's auth service signs them (never imports the server)."""
    user = "lt-" + secrets.token_hex(6)
    now = int(time.time())
    claims = {"sub": user, "role": "viewer", "name": name, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, SECRET, algorithm="HS256"), user


class RoomConnection:
    """One ``livesale_client.sync`` client in the room (its receiver is a greenlet under locust's gevent),
    every request/response pair reported as a locust request event."""

    def __init__(self, user: HttpUser, token: str | None, on_event) -> None:
        self.env = user.environment
        t0 = time.perf_counter()
        try:
            self.client = livesale_sync.connect(user.host, room=ROOM, token=token, on_event=on_event,
                                                queue_events=False, request_timeout=REPLY_TIMEOUT_S,
                                                timeout=REPLY_TIMEOUT_S)
        except Exception as exc:
            self._fire("ws", "join", t0, 0, exc)
            raise
        snap = self.client.snapshot
        self._fire("ws", "join", t0, len(json.dumps(snap.raw)) if snap else 0, None)
        self.client.wait_clock(REPLY_TIMEOUT_S)  # the client samples the clock after each join (5 samples)

    @property
    def snapshot(self) -> dict:
        return self.client.snapshot.raw if self.client.snapshot else {}

    @property
    def closed(self) -> bool:
        return self.client.closed

    def _fire(self, kind: str, name: str, t0: float, length: int, exc: Exception | None) -> None:
        self.env.events.request.fire(request_type=kind, name=name,
                                     response_time=(time.perf_counter() - t0) * 1000.0,
                                     response_length=length, exception=exc, context={})

    def send(self, type: str, **fields) -> None:
        self.client.send(type, **fields)

    def request(self, type: str, fields: dict, name: str):
        """The typed reply (None when it failed); records a locust request event. The client keeps one rid
        per call and re-sends it after a lost connection or an UNAVAILABLE answer."""
        t0 = time.perf_counter()
        try:
            reply = self.client.request(type, fields, rid=f"{type[:1]}{next(_ids)}.{random.getrandbits(32):x}")
        except LiveSaleError as exc:
            self._fire("ws", f"{name} -> {exc.code}" if type in ("buy", "pay") else name, t0, 0, exc)
            return None
        code = reply.raw.get("code")
        ok = (type != "buy" or code in BUY_OK) and (type != "pay" or code in ("CONFIRMED", "ALREADY_CONFIRMED"))
        label = f"{name} -> {code}" if code and type in ("buy", "pay") else name
        self._fire("ws", label, t0, 0, None if ok else RuntimeError(f"{reply.raw.get('type')} {code}"))
        return reply

    def server_now(self) -> float:
        return self.client.server_now()

    def close(self) -> None:
        self.client.close()


class Viewer(HttpUser):
    """Watches, likes and comments at a low rate; taps buy at every sale's open; pays some holds."""

    weight = 100
    wait_time = between(3, 8)

    def on_start(self) -> None:
        self.tried: set[str] = set()
        self.buys: list[gevent.Greenlet] = []
        if SECRET:  # the platform's way: a token signed with the shared secret
            self.token, self.user_id = platform_token(f"viewer{next(_ids)}")
        else:
            with self.client.post("/api/viewer-token", json={"name": f"viewer{next(_ids)}"},
                                  name="/api/viewer-token", catch_response=True) as r:
                if r.status_code != 200 and r.status_code != 201:
                    r.failure(f"viewer-token: {r.status_code}")
                    self.stop()
                    return
                body = r.json()
            self.token, self.user_id = body["token"], body.get("user")
        # room events can arrive (and spawn tap_buy) while RoomConnection is still joining
        self.conn_ready = gevent.event.Event()
        self.conn = RoomConnection(self, self.token, self.on_event)
        self.conn_ready.set()
        for sale in (self.conn.snapshot.get("sales") or []):
            self.consider(sale, from_snapshot=True)

    def on_stop(self) -> None:
        for g in getattr(self, "buys", []):
            g.kill(block=False)
        if getattr(self, "conn", None):
            self.conn.close()

    # -- room events -------------------------------------------------------------------------------
    def on_event(self, msg) -> None:
        if isinstance(msg, (SaleScheduled, SaleOpen)) and msg.sale:
            self.consider(msg.sale)

    def consider(self, sale: dict, from_snapshot: bool = False) -> None:
        sid = sale.get("sale_id")
        if not sid or sid in self.tried or sale.get("state") not in ("scheduled", "open"):
            return
        if sale.get("state") == "open" and from_snapshot and random.random() < 0.5:
            self.tried.add(sid)  # joined mid-sale: half of them still try
            return
        self.tried.add(sid)
        self.buys.append(gevent.spawn(self.tap_buy, sid, int(sale.get("starts_at") or 0)))

    def tap_buy(self, sale_id: str, starts_at: int) -> None:
        if not self.conn_ready.wait(30):
            return
        conn = self.conn
        wait_s = (starts_at - conn.server_now()) / 1000.0
        gevent.sleep(max(0.0, wait_s) + random.uniform(0.0, 0.25))  # a thumb, not a robot
        if conn.closed:
            return
        reply = conn.request("buy", {"sale": sale_id, "qty": 1}, "buy")
        if not reply or not reply.reserved or random.random() >= PAY_RATIO:
            return
        gevent.sleep(random.uniform(0.5, 2.0))
        hold = reply.hold
        paid = conn.request("pay", {"hold": hold}, "pay")
        if paid and paid.code == "CONFIRMED":
            _record_order({"order": paid.order or hold, "sale": sale_id, "hold": hold,
                           "user": self.user_id, "token": self.token, "t": int(time.time() * 1000)})

    # -- ambient behaviour ---------------------------------------------------------------------------
    @task(6)
    def watch(self) -> None:
        pass

    @task(3)
    def like(self) -> None:
        if not self.conn.closed:
            self.conn.send("like", n=random.randint(1, 3))

    @task(1)
    def comment(self) -> None:
        if not self.conn.closed:
            self.conn.send("comment", text=random.choice(
                ["love it", "how much?", "size M please", "wow", "is it back in stock?", "ship to EU?"]))


class Host(HttpUser):
    """Launches a sale of the room's product every LIVESALE_SALE_EVERY_S seconds."""

    fixed_count = 1
    wait_time = constant(SALE_EVERY_S)

    def on_start(self) -> None:
        if not HOST_TOKEN:
            self.stop()
            return
        self.conn = RoomConnection(self, HOST_TOKEN, lambda msg: None)

    def on_stop(self) -> None:
        if getattr(self, "conn", None):
            self.conn.close()

    @task
    def launch(self) -> None:
        if self.conn.closed:
            return
        self.conn.request("launch_sale", {"product": PRODUCT, "units": SALE_UNITS, "limit": 1,
                                          "starts_in_s": SALE_STARTS_IN_S, "duration_s": SALE_DURATION_S},
                          "launch_sale")


@events.test_start.add_listener
def ensure_room(environment, **_kw) -> None:
    """Web-UI mode: create the room and its product if they are missing (needs the host token)."""
    if not HOST_TOKEN or not environment.host or os.environ.get("LIVESALE_ROOM_READY"):
        return
    import requests

    h = {"Authorization": f"Bearer {HOST_TOKEN}"}
    base = environment.host.rstrip("/")
    if requests.get(f"{base}/api/rooms/{ROOM}", timeout=10).status_code == 404:
        requests.post(f"{base}/api/rooms", json={"room_id": ROOM, "title": "Load test room"}, headers=h, timeout=10)
    requests.post(f"{base}/api/rooms/{ROOM}/products", json={
        "product_id": PRODUCT, "sku": "LOAD-1", "title": "Load test tee", "unit_price": 1999, "currency": "EUR"},
        headers=h, timeout=10)
    requests.post(f"{base}/api/rooms/{ROOM}/actions/go_live", json={}, headers=h, timeout=10)

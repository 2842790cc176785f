"""Re-engagement (issue #11 item 3) against real engines, real sockets: a reminder fires once when its sale
opens (an online viewer gets a ``notice`` on their WebSocket, an offline one is in a signed webhook delivery
that a real receiver on 127.0.0.1 verifies with ``webhook_verify``), also when no gateway had the room; show
reminders at go-live; an audience notified by its merchant; the sender retries 5xx with the same delivery id
and a fresh signature, gives up at once on a 400, and two senders never send one attempt twice. Bad input
gets typed errors and changes nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from commerce.identity import mint_merchant_token
from commerce.reminders import Reengage, delivery_body
from commerce.webhooks import Deliverer, signed_headers
from conftest import timeout
from gateway_helpers import Api, WsClient, host_token, viewer
from goods_helpers import until
from inventory.reengage import FAILED, SENT, Delivery, Notice, ReengageStore
from inventory.store import Store
from server.app import create_app
from server.appkeys import COMMERCE, HUB
from server.config import Settings
from webhook_verify import VerificationError, verify
from webhook_verify.receiver import make_server

pytestmark = pytest.mark.timeout(120, method="thread")

SECRET = "reengage-test-secret-0123456789abcdef"


@dataclass
class Attempt:
    delivery_id: str
    timestamp: int
    signature: str
    body: bytes
    at: float
    status: int
    verdict: str            # "ok" or the verifier's code
    delivery: dict[str, Any] | None


@dataclass
class Receiver:
    """The platform's endpoint: verifies every POST with the reference verifier and answers ``answer(id, n)``
    (n: the attempt of that delivery id, from 1)."""
    url: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    answer: Callable[[str, int], int] = lambda _id, _n: 200
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        h = request.headers
        delivery_id = h.get("X-Livesale-Delivery", "")
        n = 1 + sum(1 for a in self.attempts if a.delivery_id == delivery_id)
        try:
            delivery: dict[str, Any] | None = verify(SECRET, h, raw)
            verdict = "ok"
        except VerificationError as e:
            delivery, verdict = None, e.code
        status = self.answer(delivery_id, n) if verdict == "ok" else 400
        self.attempts.append(Attempt(delivery_id, int(h.get("X-Livesale-Timestamp", "0")),
                                     h.get("X-Livesale-Signature", ""), raw, time.time(), status, verdict, delivery))
        self.changed.set()
        return web.json_response({"ok": status < 300}, status=status)

    def of(self, delivery_id: str) -> list[Attempt]:
        return [a for a in self.attempts if a.delivery_id == delivery_id]

    def for_user(self, user: str) -> list[Attempt]:
        return [a for a in self.attempts if a.delivery and user in a.delivery.get("users", ())]


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/livesale", rec.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    rec.url = str(server.make_url("/hooks/livesale"))
    return rec


@dataclass
class Env:
    api: Api
    client: Any
    settings: Settings
    host: str
    reengage: Reengage


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings, receiver: Receiver) -> Env:
    s = settings.replace(tick_ms=50, webhook_url=receiver.url, webhook_secret=SECRET, webhook_attempts=4)
    client = await aiohttp_client(create_app(s))
    return Env(Api(client), client, s, host_token(s.secret), client.app[COMMERCE].reengage)


async def show(env: Env, uid: str, starts_in_s: int = 3, **sale: Any) -> tuple[str, str]:
    room = f"r{uid[:12]}"
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Sneaker night"}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                     {"product_id": "p0", "sku": f"SKU-{uid}", "title": "Court sneaker", "unit_price": 9900}, 201)
    s = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                         {"product_id": "p0", "units": 10, "starts_in_s": starts_in_s, "duration_s": 120, **sale}, 201)
    return room, s["sale_id"]


async def report_online(env: Env) -> None:
    """What the gateway's ticker reports every 10 s: the viewers connected to it, by room."""
    hub = env.client.app[HUB]
    await env.reengage.online.report(hub.gateway_id, {r.room_id: list(r.by_user) for r in hub.rooms.values()})


async def test_a_reminder_fires_once_in_the_app_and_by_a_verified_webhook(env: Env, receiver: Receiver,
                                                                          uid: str) -> None:
    room, sale = await show(env, uid, starts_in_s=4)
    on_tok, on_user = viewer(env.settings.secret, "Online")
    off_tok, off_user = viewer(env.settings.secret, "Offline")
    first = await env.api.ok("PUT", f"/api/me/reminders/{room}/{sale}", on_tok, status=201)
    got = await env.api.ok("PUT", f"/api/me/reminders/{room}/{sale}", off_tok, status=201)
    assert got["room_id"] == room and got["sale_id"] == sale and got["created_at"] > 0
    again = await env.api.ok("PUT", f"/api/me/reminders/{room}/{sale}", on_tok, status=200)  # it was waiting
    assert again == first
    mine = await env.api.ok("GET", "/api/me/reminders", off_tok)
    assert mine["reminders"] == [{"room_id": room, "sale_id": sale, "created_at": got["created_at"]}]

    ws = await WsClient.connect(env.client)
    try:
        assert (await ws.join(room, on_tok))["type"] == "snapshot"
        await report_online(env)
        assert await env.reengage.online.where([on_user, off_user]) == {on_user: room}
        notice = await ws.wait(lambda m: m["type"] == "notice", timeout(15))
        assert notice["notice"]["kind"] == "reminder" and notice["notice"]["room_id"] == room
        assert notice["notice"]["sale_id"] == sale and notice["notice"]["title"] == "Court sneaker"
        assert notice["notice"]["url"] == f"/rooms/{room}?sale={sale}" and notice["notice"]["starts_at"] > 0
        # the offline viewer: in a delivery the receiver verified, and nobody else of this show in it
        sent = await until("the offline viewer's delivery", lambda: _first(receiver.for_user(off_user)))
        assert sent.verdict == "ok" and sent.status == 200 and sent.delivery is not None
        d = sent.delivery
        assert d["users"] == [off_user] and d["type"] == "reminder" and d["room_id"] == room
        assert d["sale_id"] == sale and d["delivery_id"] == sent.delivery_id and d["url"] == notice["notice"]["url"]
        # once: the hook of another gateway, the sweep, a second firing: nothing more is sent to anyone
        assert await env.reengage.fire(room, sale) == 0
        env.reengage._swept_at = 0.0
        await env.reengage.sweep()
        await until("the delivery to be recorded sent",
                    lambda: _sent(env.reengage.sql, sent.delivery_id))
        notices = await env.reengage.sql.notices_of(room, sale)
        assert sum(n.online for n in notices) == 1 and sum(n.offline for n in notices) == 1
        assert sum(n.deliveries for n in notices) == 1
        await asyncio.sleep(0.3)  # a stray second notice would have arrived by now
        assert len(ws.of_type("notice")) == 1 and len(receiver.for_user(off_user)) == 1
        assert (await env.api.ok("GET", "/api/me/reminders", on_tok))["reminders"] == []  # fired: not waiting
        # the verifier: the same delivery again is REPLAYED; tampered, BAD_SIGNATURE; an old one, STALE
        seen: set[str] = set()
        headers = {"X-Livesale-Delivery": sent.delivery_id, "X-Livesale-Timestamp": str(sent.timestamp),
                   "X-Livesale-Signature": sent.signature}
        verify(SECRET, headers, sent.body, now=sent.timestamp, seen=seen)
        with pytest.raises(VerificationError, match="REPLAYED"):
            verify(SECRET, headers, sent.body, now=sent.timestamp, seen=seen)
        with pytest.raises(VerificationError, match="BAD_SIGNATURE"):
            verify(SECRET, headers, sent.body.replace(off_user.encode(), on_user.encode()), now=sent.timestamp)
        with pytest.raises(VerificationError, match="STALE"):
            verify(SECRET, headers, sent.body, now=sent.timestamp + 301)
    finally:
        await ws.close()


async def test_reminders_no_gateway_saw_fire_from_the_sweep_and_show_reminders_at_go_live(
        env: Env, receiver: Receiver, uid: str) -> None:
    room, sale = await show(env, uid, starts_in_s=2)
    tok, user = viewer(env.settings.secret, "Away")
    await env.api.ok("PUT", f"/api/me/reminders/{room}/{sale}", tok, status=201)
    await env.api.ok("PUT", f"/api/me/reminders/{room}", tok, status=201)  # the show
    listed = (await env.api.ok("GET", "/api/me/reminders", tok))["reminders"]
    assert {(r["room_id"], r["sale_id"]) for r in listed} == {(room, sale), (room, None)}
    # nobody is in the room: no gateway has it loaded, so no sale timer fires; the sweep does
    got = await until("the sale reminder's delivery",
                      lambda: _first([a for a in receiver.for_user(user) if a.delivery["sale_id"] == sale]),
                      limit=20)
    assert got.delivery["type"] == "reminder" and got.verdict == "ok"
    # go-live: the show reminder fires (the hook, not the sweep: within a couple of seconds)
    await env.api.ok("POST", f"/api/rooms/{room}/actions/go_live", env.host, {})
    live = await until("the show reminder's delivery",
                       lambda: _first([a for a in receiver.for_user(user) if a.delivery["sale_id"] is None]),
                       limit=4)
    assert live.delivery["room_id"] == room and live.delivery["title"] == "Sneaker night"
    assert live.delivery["url"] == f"/rooms/{room}"
    assert (await env.api.ok("GET", "/api/me/reminders", tok))["reminders"] == []
    # asking again after it fired waits for the next go-live
    await env.api.ok("PUT", f"/api/me/reminders/{room}", tok, status=201)
    assert await env.api.ok("DELETE", f"/api/me/reminders/{room}", tok) == {"room_id": room, "sale_id": None,
                                                                             "removed": True}
    assert (await env.api.ok("DELETE", f"/api/me/reminders/{room}", tok))["removed"] is False


async def test_bad_input_gets_typed_errors_and_changes_nothing(env: Env, uid: str) -> None:
    room, sale = await show(env, uid, starts_in_s=600)
    tok, user = viewer(env.settings.secret, "Ann")
    merchant = mint_merchant_token(env.settings.secret, f"m-{uid[:8]}")
    cases = [
        ("PUT", f"/api/me/reminders/{room}/{sale}", None, None, 401, "UNAUTHORIZED"),
        ("GET", "/api/me/reminders", None, None, 401, "UNAUTHORIZED"),
        ("PUT", f"/api/me/reminders/{room}/{sale}", merchant, None, 401, "UNAUTHORIZED"),
        ("PUT", f"/api/me/reminders/nope-{uid}", tok, None, 404, "NOT_FOUND"),
        ("PUT", f"/api/me/reminders/{room}/nope", tok, None, 404, "NOT_FOUND"),
        ("PUT", f"/api/me/reminders/{room}/bad%20id", tok, None, 400, "INVALID"),
        ("PUT", f"/api/me/reminders/{'x' * 65}", tok, None, 400, "INVALID"),
        ("DELETE", f"/api/me/reminders/{room}/bad%20id", tok, None, 400, "INVALID"),
        ("POST", f"/api/rooms/{room}/sales/{sale}/notify", None, {"audience_id": "a1", "request_id": "q"}, 401,
         "UNAUTHORIZED"),
        ("POST", f"/api/rooms/{room}/sales/{sale}/notify", tok, {"audience_id": "a1", "request_id": "q"}, 403,
         "FORBIDDEN"),
        ("POST", f"/api/rooms/{room}/sales/{sale}/notify", env.host, {"audience_id": "a 1", "request_id": "q"}, 400,
         "INVALID"),
        ("POST", f"/api/rooms/{room}/sales/{sale}/notify", env.host, {"request_id": "q"}, 400, "INVALID"),
        ("POST", f"/api/rooms/{room}/sales/{sale}/notify", env.host, {"audience_id": f"no-{uid}", "request_id": "q"},
         404, "NOT_FOUND"),
        ("POST", f"/api/rooms/nope-{uid}/sales/{sale}/notify", env.host, {"audience_id": "a1", "request_id": "q"},
         404, "NOT_FOUND"),
        ("POST", f"/api/rooms/{room}/sales/nope/notify", env.host, {"audience_id": "a1", "request_id": "q"}, 404,
         "NOT_FOUND"),
        ("POST", f"/api/rooms/{room}/sales/{sale}/notify", merchant, {"audience_id": f"no-{uid}", "request_id": "q"},
         404, "NOT_FOUND"),
    ]
    for method, path, token, body, status, code in cases:
        st, got = await env.api.call(method, path, token, body)
        assert (st, got["error"]["code"]) == (status, code), (method, path, st, got)
    st, got = await env.api.call("POST", f"/api/rooms/{room}/sales/{sale}/notify", env.host, data=b"{nope")
    assert (st, got["error"]["code"]) == (400, "BAD_JSON")
    assert await env.reengage.sql.pending_count(user) == 0
    assert await env.reengage.sql.notices_of(room, sale) == []
    # a sale that has started takes no reminder; a sale of another room is not found there
    open_room, open_sale = await show(env, uid[::-1], starts_in_s=0)
    st, got = await env.api.call("PUT", f"/api/me/reminders/{open_room}/{open_sale}", tok)
    assert (st, got["error"]["code"]) == (409, "CONFLICT")
    st, got = await env.api.call("PUT", f"/api/me/reminders/{room}/{open_sale}", tok)
    assert (st, got["error"]["code"]) == (404, "NOT_FOUND")
    assert await env.reengage.sql.pending_count(user) == 0


async def test_at_most_200_reminders_per_viewer(env: Env, uid: str) -> None:
    room, _ = await show(env, uid, starts_in_s=600)
    tok, user = viewer(env.settings.secret, "Keen")
    now = int(time.time() * 1000)
    for i in range(200):
        await env.reengage.sql.remind(user, f"{room}-{i}", "", now)
    st, got = await env.api.call("PUT", f"/api/me/reminders/{room}", tok)
    assert (st, got["error"]["code"]) == (409, "CONFLICT")
    assert len((await env.api.ok("GET", "/api/me/reminders", tok))["reminders"]) == 200
    await env.api.ok("DELETE", f"/api/me/reminders/{room}-7", tok)
    await env.api.ok("PUT", f"/api/me/reminders/{room}", tok, status=201)


async def test_an_audience_notified_by_its_merchant(env: Env, receiver: Receiver, uid: str) -> None:
    room, sale = await show(env, uid, starts_in_s=600)
    merchant_id = f"m-{uid[:8]}"
    merchant = mint_merchant_token(env.settings.secret, merchant_id)
    other = mint_merchant_token(env.settings.secret, f"m2-{uid[:8]}")
    on_tok, on_user = viewer(env.settings.secret, "Fan")
    off_tok, off_user = viewer(env.settings.secret, "Lapsed")
    for tok in (on_tok, off_tok):  # both saved the product: that is the audience
        await env.api.ok("PUT", f"/api/me/saved/{room}/p0", tok, status=201)
    audience = f"au-{uid[:10]}"
    await env.api.ok("POST", "/api/audiences", merchant,
                     {"audience_id": audience, "name": "Saved it", "rules": [{"signal": "saved", "room": room}]}, 201)
    commerce = env.client.app[COMMERCE]

    async def members() -> bool:
        await commerce.signals.flush()
        return sorted(await commerce.audiences.members(audience)) == sorted([on_user, off_user])
    await until("both viewers in the audience", members, limit=20)

    ws = await WsClient.connect(env.client)
    try:
        await ws.join(room, on_tok)
        await report_online(env)
        body = {"audience_id": audience, "request_id": "launch-1"}
        st, got = await env.api.call("POST", f"/api/rooms/{room}/sales/{sale}/notify", other, body)
        assert (st, got["error"]["code"]) == (403, "FORBIDDEN")  # another merchant's audience
        out = await env.api.ok("POST", f"/api/rooms/{room}/sales/{sale}/notify", merchant, body, status=202)
        assert out["online"] == 1 and out["offline"] == 1 and out["deliveries"] == 1
        assert out["notice_id"]
        notice = await ws.wait(lambda m: m["type"] == "notice", timeout(10))
        assert notice["notice"] == {"notice_id": out["notice_id"], "kind": "audience", "room_id": room,
                                    "sale_id": sale, "title": "Court sneaker", "starts_at": notice["notice"]["starts_at"],
                                    "url": f"/rooms/{room}?sale={sale}"}
        sent = await until("the audience delivery", lambda: _first(receiver.for_user(off_user)))
        assert sent.delivery["type"] == "audience" and sent.delivery["users"] == [off_user]
        # the same request again: the same answer, nothing sent again
        assert await env.api.ok("POST", f"/api/rooms/{room}/sales/{sale}/notify", merchant, body, status=202) == out
        # the host of the room may notify too (another request: another notice)
        host_out = await env.api.ok("POST", f"/api/rooms/{room}/sales/{sale}/notify", env.host,
                                    {"audience_id": audience, "request_id": "launch-1"}, status=202)
        assert host_out["notice_id"] != out["notice_id"]
        await ws.wait(lambda m: m["type"] == "notice" and m["notice"]["notice_id"] == host_out["notice_id"],
                      timeout(10))
        await asyncio.sleep(0.3)
        assert [m["notice"]["notice_id"] for m in ws.of_type("notice")] == [out["notice_id"], host_out["notice_id"]]
    finally:
        await ws.close()


# -- the sender, on its own over the real store -----------------------------------------------------------------

async def queue(sql: ReengageStore, uid: str, n: int = 1) -> list[str]:
    now = int(time.time() * 1000)
    notice = Notice(f"n-{uid}-{n}", "audience", f"r{uid}", "s1", "A title", now, "/rooms/x", now, deliveries=n)
    out = []
    for i in range(n):
        did = f"d-{uid}-{i}"
        out.append(did)
    fresh, _ = await sql.add_notice(notice, [Delivery(did, notice.notice_id, delivery_body(notice, did, [f"v-{i}"]),
                                                      next_at_ms=now, created_at_ms=now, updated_at_ms=now)
                                             for i, did in enumerate(out)])
    assert fresh
    return out


async def test_5xx_is_retried_with_the_same_id_and_a_fresh_signature_400_fails_at_once(
        store: Store, receiver: Receiver, uid: str) -> None:
    sql = ReengageStore(store)
    retried, refused = await queue(sql, uid + "a"), await queue(sql, uid + "b")
    receiver.answer = lambda did, n: (503 if n <= 2 else 200) if did in retried else 400 if did in refused else 200
    d = Deliverer(sql, receiver.url, SECRET, attempts=5, backoff_s=0.7)
    d.start()
    try:
        d.kick()
        await until("the retried delivery sent", lambda: _sent(sql, retried[0]))
        await until("the refused delivery failed", lambda: _state(sql, refused[0], FAILED))
    finally:
        await d.aclose()
    tries = receiver.of(retried[0])
    assert [a.status for a in tries] == [503, 503, 200]
    assert {a.delivery_id for a in tries} == {retried[0]} and all(a.verdict == "ok" for a in tries)
    assert len({a.body for a in tries}) == 1  # the same bytes every time
    assert tries[0].timestamp < tries[2].timestamp and tries[0].signature != tries[2].signature  # fresh each time
    gaps = [tries[1].at - tries[0].at, tries[2].at - tries[1].at]
    assert 0.5 < gaps[0] < 0.7 * 1.2 + 0.5 and gaps[1] > 1.1  # backoff 0.7 s x 2^n, jittered
    row = await sql.delivery(retried[0])
    assert row is not None and (row.state, row.attempts, row.last_status) == (SENT, 3, 200)
    assert [a.status for a in receiver.of(refused[0])] == [400]
    row = await sql.delivery(refused[0])
    assert row is not None and (row.state, row.attempts, row.last_status, row.last_error) == (FAILED, 1, 400,
                                                                                               "HTTP 400")


async def test_a_receiver_that_never_answers_is_given_up_after_the_attempts(store: Store, uid: str) -> None:
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sql = ReengageStore(store)
    (did,) = await queue(sql, uid)
    d = Deliverer(sql, f"http://127.0.0.1:{port}/hook?token=not-logged", SECRET, attempts=3, backoff_s=0.05)
    d.start()
    try:
        await until("the delivery failed", lambda: _state(sql, did, FAILED))
    finally:
        await d.aclose()
    row = await sql.delivery(did)
    assert row is not None and (row.attempts, row.last_status) == (3, 0)
    assert row.last_error.startswith("ClientConnectorError"), row.last_error
    assert "not-logged" not in row.last_error and "127.0.0.1" not in row.last_error


async def test_two_senders_never_send_the_same_attempt(store: Store, receiver: Receiver, uid: str) -> None:
    sql = ReengageStore(store)
    ids = await queue(sql, uid, 30)
    senders = [Deliverer(sql, receiver.url, SECRET, attempts=3, backoff_s=0.05, batch=7) for _ in range(2)]
    for d in senders:
        d.start()
    try:
        await until("every delivery sent", lambda: _all_sent(sql, ids))
    finally:
        for d in senders:
            await d.aclose()
    mine = [a for a in receiver.attempts if a.delivery_id in ids]
    assert sorted(a.delivery_id for a in mine) == sorted(ids)  # each once
    assert all(a.verdict == "ok" for a in mine)
    assert sum(d.stats["sent"] for d in senders) >= len(ids)


async def test_the_example_receiver_of_the_docs_handles_a_delivery_once(store: Store, uid: str) -> None:
    got: list[dict[str, Any]] = []
    server = make_server(SECRET, "127.0.0.1", 0, got.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        sql = ReengageStore(store)
        (did,) = await queue(sql, uid)
        d = Deliverer(sql, url, SECRET, attempts=3, backoff_s=0.05)
        d.start()
        try:
            await until("the delivery sent", lambda: _sent(sql, did))
        finally:
            await d.aclose()
        assert [g["users"] for g in got if g["delivery_id"] == did] == [["v-0"]]
        row = await sql.delivery(did)
        assert row is not None
        body = row.body.encode()
        async with aiohttp.ClientSession() as http:
            # the same delivery again (a retry whose answer was lost): 2xx, and not handled twice
            async with http.post(url, data=body, headers=signed_headers(SECRET, did, body, time.time())) as r:
                assert (r.status, (await r.json())["error"]) == (200, "REPLAYED")
            async with http.post(url, data=body + b" ", headers=signed_headers(SECRET, did, body, time.time())) as r:
                assert (r.status, (await r.json())["error"]) == (400, "BAD_SIGNATURE")
            async with http.post(url, data=body, headers=signed_headers(SECRET, did, body, time.time() - 900)) as r:
                assert (r.status, (await r.json())["error"]) == (400, "STALE")
        assert len([g for g in got if g["delivery_id"] == did]) == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _sent(sql: ReengageStore, delivery_id: str) -> bool:
    return await _state(sql, delivery_id, SENT)


async def _state(sql: ReengageStore, delivery_id: str, state: str) -> bool:
    row = await sql.delivery(delivery_id)
    return row is not None and row.state == state


async def _all_sent(sql: ReengageStore, ids: list[str]) -> bool:
    return all([await _sent(sql, i) for i in ids])


async def _first(items: list[Attempt]) -> Attempt | None:
    return items[0] if items else None

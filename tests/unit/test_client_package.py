"""livesale_client's pure parts: it imports nothing of the server, messages parse to typed objects (unknown
types kept raw), clock math, the sequence check, the retry decision, backoff and the frame codec."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import msgpack

from livesale_client import messages as m
from livesale_client.clock import ClockSample, ClockSync
from livesale_client.codec import Codec, ws_url
from livesale_client.core import RetryPolicy, Sequencer, Step, Verdict, backoff_delay, decide, new_rid
from livesale_client.errors import LiveSaleError
from livesale_client.session import Action, Session

PACKAGE = Path(__file__).resolve().parents[2] / "livesale_client"
FORBIDDEN = {"server", "stream_gateway", "commerce", "inventory", "loadtest"}


def test_the_package_imports_nothing_of_the_server() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_known_messages_parse_typed() -> None:
    br = m.parse({"type": "buy_result", "rid": "b-1", "code": "RESERVED", "sale": "s-1", "hold": "s-1.ab",
                  "pay_by": 5, "qty": 1, "units_left": 99, "new_field": 1})
    assert isinstance(br, m.BuyResult) and br.reserved and br.hold == "s-1.ab" and br.units_left == 99
    assert br.raw["new_field"] == 1
    ev = m.parse({"type": "sale_open", "seq": 8, "epoch": 1795316000123, "ts": 1, "sale": {"sale_id": "s-1"}})
    assert isinstance(ev, m.SaleOpen) and isinstance(ev, m.RoomEvent) and ev.epoch == "1795316000123"
    assert ev.seq == 8 and ev.sale["sale_id"] == "s-1" and ev.reason is None
    tick = m.parse({"type": "tick", "ts": 3, "units": {"s-1": 61}, "viewers": 13})
    assert isinstance(tick, m.Tick) and tick.units == {"s-1": 61} and tick.likes is None and tick.bought is None
    snap = m.parse({"type": "snapshot", "epoch": "e", "seq": 7, "you": {"user": "v"}, "sales": [], "pinned": None})
    assert isinstance(snap, m.Snapshot) and snap.seq == 7 and snap.pinned is None and snap.you == {"user": "v"}
    pr = m.parse({"type": "pay_result", "rid": "p", "code": "ALREADY_CONFIRMED", "hold": "h", "order": "h"})
    assert isinstance(pr, m.PayResult) and pr.confirmed
    oc = m.parse({"type": "order_confirmed", "order": {"order_id": "h", "qty": 1}})
    assert isinstance(oc, m.OrderConfirmed) and oc.order_id == "h"
    for kind in m.TYPES:
        assert type(m.parse({"type": kind})).type == kind  # every type parses with all fields left out


def test_unknown_types_never_break() -> None:
    u = m.parse({"type": "hologram_drop", "seq": 9, "epoch": "e", "x": [1]})
    assert isinstance(u, m.Unknown) and u.kind == "hologram_drop" and u.raw["x"] == [1]
    assert m.is_sequenced(u.raw)  # still counted by seq: no false gap
    assert not m.is_sequenced({"type": "buy_result", "seq": 3})
    assert isinstance(m.parse({"no": "type"}), m.Unknown)


def test_clock_keeps_the_smallest_round_trip() -> None:
    assert ClockSample.of(1000, 1510, 1512, 1022) == ClockSample(rtt=20, offset=500)
    c = ClockSync()
    assert not c.synced and c.server_now(100.0) == 100.0
    c.hint(5000, 1000)
    assert c.offset == 4000
    c.add(1000, 1560, 1560, 1100)   # rtt 100, offset 510
    c.add(2000, 2505, 2505, 2010)   # rtt 10, offset 500
    c.add(3000, 3700, 3700, 3300)   # rtt 300
    assert c.synced and c.samples == 3 and c.rtt == 10 and c.offset == 500 and c.server_now(10.0) == 510.0
    c.reset()
    assert not c.synced and c.offset == 4000


def test_sequencer_applies_in_order_once() -> None:
    s = Sequencer()
    assert s.resume_point() is None
    s.on_snapshot("e1", 5)
    assert s.resume_point() == ("e1", 5)
    assert s.on_event("e1", 6) is Verdict.APPLY and s.seq == 6
    assert s.on_event("e1", 6) is Verdict.DUPLICATE
    assert s.on_event("e1", 8) is Verdict.RESYNC and s.seq == 6
    assert s.on_event("e2", 7) is Verdict.RESYNC
    s.on_resumed("e1", 6)
    assert s.on_event("e1", 7) is Verdict.APPLY


def test_session_outcomes() -> None:
    sess = Session("room", "tok", {"device": "d1"})
    assert sess.join() == {"type": "join", "room": "room", "device": "d1", "token": "tok"}
    assert sess.receive({"type": "error", "code": "NOT_FOUND", "message": "x"}, 0).action is Action.REFUSED
    assert sess.receive({"type": "error", "code": "RATE_LIMITED"}, 0).action is Action.JOIN_LATER
    assert sess.receive({"type": "snapshot", "epoch": "e", "seq": 3}, 0).action is Action.JOINED
    assert sess.receive({"type": "announcement", "seq": 4, "epoch": "e", "text": "a"}, 0).action is Action.DELIVER
    assert sess.receive({"type": "announcement", "seq": 4, "epoch": "e", "text": "a"}, 0).action is Action.IGNORE
    assert sess.receive({"type": "buy_result", "rid": "r", "code": "SOLD_OUT"}, 0).action is Action.REPLY
    assert sess.receive({"type": "clock", "t0": 1, "t1": 2, "t2": 2}, 5).clock == (1, 2, 2, 5)
    assert sess.receive({"type": "announcement", "seq": 9, "epoch": "e"}, 0).action is Action.RESYNC
    sess.connection_lost()
    assert sess.join()["resume"] == {"epoch": "e", "seq": 4}
    sess.resync()
    assert "resume" not in sess.join()


def test_retry_decision_reuses_the_rid_for_idempotent_requests() -> None:
    p = RetryPolicy(max_attempts=3)
    unavailable = {"type": "error", "code": "UNAVAILABLE", "rid": "r"}
    assert decide("buy", unavailable, 1, p) is Step.RETRY
    assert decide("buy", unavailable, 3, p) is Step.RAISE   # bounded
    assert decide("buy", None, 1, p) is Step.RETRY          # connection lost: after the next join
    assert decide("comment", None, 1, p) is Step.RAISE      # not deduplicated by the server
    assert decide("launch_sale", unavailable, 1, p) is Step.RAISE
    assert decide("buy", {"type": "buy_result", "code": "SOLD_OUT"}, 1, p) is Step.RETURN
    assert decide("pay", {"type": "error", "code": "EXPIRED"}, 1, p) is Step.RAISE
    err = LiveSaleError.from_reply({"type": "error", "code": "MUTED", "message": "no"})
    assert err.code == "MUTED" and err.message == "no" and "MUTED" in str(err)


def test_backoff_has_equal_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for attempt, d in ((1, 1), (2, 2), (5, 16), (9, 16)):
        for _ in range(20):
            assert d / 2 <= backoff_delay(attempt, rng=rng) <= d
    rids = {new_rid("buy") for _ in range(1000)}
    assert len(rids) == 1000 and all(len(r) <= 128 for r in rids)


def test_codec_and_urls() -> None:
    j = Codec("json")
    assert j.subprotocol == "livesale.v1.json" and j.decode(j.encode({"type": "ping"})) == {"type": "ping"}
    assert j.decode("[1]") is None and j.decode("nope") is None
    b = Codec("msgpack")
    frame = b.encode({"type": "buy", "qty": 2})
    assert isinstance(frame, bytes) and msgpack.unpackb(frame) == {"type": "buy", "qty": 2}
    assert b.decode(frame) == {"type": "buy", "qty": 2} and b.decode(b"\xc1") is None
    assert ws_url("http://h:8080") == "ws://h:8080/ws"
    assert ws_url("https://h/") == "wss://h/ws"
    assert ws_url("ws://h:1/ws") == "ws://h:1/ws"
    assert ws_url("h:1") == "ws://h:1/ws"

"""The typed protocol, without sockets: inbound parsing and validation, the event type list shared
with the browser client, the reply builders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, strategies as st

from commerce.errors import ErrorCode
from commerce.events import EventType
from commerce.host_actions import HOST_ACTIONS
from commerce.requests import MAX_SALE_UNITS, Buy, LaunchSale
from stream_gateway.messages import BadInbound, Join, buy_result, error, parse_inbound

LIVESALE_JS = Path(__file__).resolve().parents[2] / "server" / "web" / "livesale.js"


def parse(obj: Any, binary: bool = False) -> Any:
    return parse_inbound(msgpack.packb(obj) if binary else orjson.dumps(obj).decode())


def refused(obj: Any) -> tuple[str, str]:
    with pytest.raises(BadInbound) as exc:
        parse(obj)
    return str(exc.value.error.code), exc.value.error.message


def test_event_types_match_the_browser_client() -> None:
    block = re.search(r"export const EventType = Object\.freeze\(\{(.*?)\}\);", LIVESALE_JS.read_text(), re.S)
    assert block, "livesale.js has no EventType"
    js = dict(re.findall(r"([A-Z_]+):\s*\"([a-z_]+)\"", block.group(1)))
    assert js == {e.name: e.value for e in EventType}


@pytest.mark.parametrize("binary", [False, True])
def test_buy_parses_to_its_type(binary: bool) -> None:
    m = parse({"type": "buy", "rid": "b-1", "sale": "s-1", "qty": 2}, binary)
    assert (m.type, m.rid, m.body) == ("buy", "b-1", Buy(sale="s-1", qty=2))
    assert parse({"type": "buy", "rid": "b-2", "sale": "s-1"}).body.qty == 1


@pytest.mark.parametrize("qty", [None, 1.0, True, "1", [1]])
def test_qty_of_the_wrong_type_is_bad_message(qty: Any) -> None:
    code, message = refused({"type": "buy", "rid": "b", "sale": "s-1", "qty": qty})
    assert code == "BAD_MESSAGE" and "qty" in message


@pytest.mark.parametrize("qty", [0, -1, 1_000_001])
def test_qty_out_of_range_is_invalid(qty: int) -> None:
    assert refused({"type": "buy", "rid": "b", "sale": "s-1", "qty": qty})[0] == "INVALID"


def test_frame_errors() -> None:
    with pytest.raises(BadInbound) as exc:
        parse_inbound("{not json")
    assert exc.value.error.code is ErrorCode.BAD_JSON
    with pytest.raises(BadInbound) as exc:
        parse_inbound("[1, 2]")
    assert exc.value.error.code is ErrorCode.BAD_JSON
    assert refused({"type": "nope"})[0] == "BAD_MESSAGE"
    assert refused({"type": "buy", "sale": "s-1"}) == ("BAD_MESSAGE", "buy needs a rid")
    assert refused({"type": "buy", "rid": "has space", "sale": "s"})[0] == "BAD_MESSAGE"
    with pytest.raises(BadInbound) as exc:
        parse({"type": "buy", "rid": "r-9", "sale": "bad sale"})
    assert exc.value.rid == "r-9"  # the error echoes the request's id


def test_join_null_token_and_resume_mean_none() -> None:
    assert parse({"type": "join", "room": "r1", "token": None, "resume": None}).body == Join(room="r1")
    m = parse({"type": "join", "room": "r1", "resume": {"epoch": "e", "seq": 3}})
    assert m.body.resume == ("e", 3)
    assert refused({"type": "join", "room": "r1", "resume": {"epoch": "e", "seq": -1}})[0] == "BAD_MESSAGE"
    assert refused({"type": "join", "room": "r1", "resume": [1]})[0] == "BAD_MESSAGE"


def test_every_host_action_parses() -> None:
    fields = {"pin": {"product": "p0"}, "launch_sale": {"product": "p0", "units": 5}, "end_sale": {"sale": "s1"},
              "announce": {"text": " hi "}, "hide_comment": {"comment": "c-1"}, "mute": {"user": "v-1"},
              "topup_sale": {"sale": "pl-1--s1", "units": 5, "request_id": "t-1"},
              "set_teams": {"teams": [{"team_id": "a", "name": "A", "colour": "#ff0000", "badge": "A"},
                                      {"team_id": "b", "name": "B", "colour": "#0000ff", "badge": "B"}]},
              "open_poll": {"question": "Which?", "options": ["x", "y"]}, "close_poll": {"poll": "p-1"},
              "drop_coupons": {"count": 100, "kind": "amount", "value": 500}, "end_drop": {"drop": "d-1"},
              "create_draw": {"title": "Lucky bag", "winners": 3, "entry_s": 60, "prize": {"pool": "pl-1"}}}
    for name in HOST_ACTIONS:
        m = parse({"type": name, **fields.get(name, {})})
        assert m.type == name
    assert parse({"type": "announce", "text": "  hi  "}).body.text == "hi"
    launched = parse({"type": "launch_sale", "product": "p0", "units": MAX_SALE_UNITS, "price": None}).body
    assert launched == LaunchSale(product="p0", units=MAX_SALE_UNITS)
    assert refused({"type": "launch_sale", "product": "p0", "units": MAX_SALE_UNITS + 1})[0] == "INVALID"
    assert refused({"type": "announce", "text": "x" * 301})[0] == "INVALID"
    assert refused({"type": "announce", "text": "   "})[0] == "BAD_MESSAGE"


def test_reply_builders() -> None:
    assert buy_result("r", "SOLD_OUT", "s", 1, 0) == {"type": "buy_result", "rid": "r", "code": "SOLD_OUT",
                                                      "sale": "s", "qty": 1, "units_left": 0}
    assert error(ErrorCode.NOT_FOUND, "no", None) == {"type": "error", "code": "NOT_FOUND", "message": "no"}
    assert error("INTERNAL", "x", "r1")["rid"] == "r1"


@given(st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=20),
                                                      st.booleans()), max_size=6),
       st.sampled_from(["buy", "pay", "release", "comment", "like", "join", "clock", "ping", *HOST_ACTIONS]))
def test_any_object_parses_or_is_refused_with_a_code(obj: dict[str, Any], msg_type: str) -> None:
    obj = {**obj, "type": msg_type}
    try:
        m = parse(obj)
    except BadInbound as e:
        assert e.error.code in ErrorCode and e.error.message
    else:
        assert m.type == msg_type

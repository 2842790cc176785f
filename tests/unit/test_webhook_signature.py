"""Webhook signatures (commerce/payments/signature.py) and event parsing (provider.py). Pure."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from commerce.payments.provider import EventType, WebhookRejected, parse_event, verify_webhook
from commerce.payments.signature import (
    SIGNATURE_HEADER, SignatureError, sign, signature_header, verify_signature,
)

SECRET = "s" * 40
BODY = b'{"id":"evt_1","type":"payment.succeeded","created":1700000000,' \
       b'"data":{"payment_id":"pay_1","amount":2500,"currency":"EUR"}}'
NOW = 1_700_000_000


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    want = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == want
    assert signature_header(SECRET, NOW, BODY) == f"t={NOW},v1={want}"


def test_a_genuine_timely_signature_passes() -> None:
    header = signature_header(SECRET, NOW, BODY)
    assert verify_signature(SECRET, header, BODY, now_s=NOW + 299, tolerance_s=300) == NOW
    assert verify_signature(SECRET, header, BODY, now_s=NOW - 300, tolerance_s=300) == NOW


@pytest.mark.parametrize("header", [
    None, "", "garbage", "t=abc,v1=" + "0" * 64, f"t={NOW}", "v1=" + "0" * 64, f"t={NOW},v1=short",
    f"t={NOW},t={NOW},v1=" + "0" * 64, f"t={NOW},v1=" + "0" * 64, "t=1," + "v1=" + "0" * 64 * 40,
])
def test_malformed_or_wrong_signatures_are_refused(header: str | None) -> None:
    with pytest.raises(SignatureError) as e:
        verify_signature(SECRET, header, BODY, now_s=NOW, tolerance_s=300)
    assert not e.value.stale


def test_another_secret_another_body_or_another_timestamp_is_forged() -> None:
    for header, body in ((signature_header("o" * 40, NOW, BODY), BODY),
                         (signature_header(SECRET, NOW, BODY), BODY + b" "),
                         (signature_header(SECRET, NOW, BODY).replace(f"t={NOW}", f"t={NOW + 1}"), BODY)):
        with pytest.raises(SignatureError) as e:
            verify_signature(SECRET, header, body, now_s=NOW, tolerance_s=300)
        assert not e.value.stale


def test_outside_the_tolerance_is_stale_but_only_once_the_signature_is_genuine() -> None:
    header = signature_header(SECRET, NOW, BODY)
    for now in (NOW + 301, NOW - 301):
        with pytest.raises(SignatureError) as e:
            verify_signature(SECRET, header, BODY, now_s=now, tolerance_s=300)
        assert e.value.stale
    forged_old = signature_header("o" * 40, NOW - 10_000, BODY)
    with pytest.raises(SignatureError) as e:
        verify_signature(SECRET, forged_old, BODY, now_s=NOW, tolerance_s=300)
    assert not e.value.stale  # a forged header learns nothing about the window


def test_rotation_several_signatures_and_several_secrets() -> None:
    old, new = "o" * 40, "n" * 40
    both = f"t={NOW},v1={sign(old, NOW, BODY)},v1={sign(new, NOW, BODY)}"
    assert verify_signature(new, both, BODY, now_s=NOW, tolerance_s=10) == NOW
    assert verify_signature((old, new), signature_header(old, NOW, BODY), BODY, now_s=NOW, tolerance_s=10) == NOW
    with pytest.raises(SignatureError):
        verify_signature("", signature_header("", NOW, BODY), BODY, now_s=NOW, tolerance_s=10)  # no secret: refuse


def test_verify_webhook_maps_reasons_and_parses_the_event() -> None:
    headers = {SIGNATURE_HEADER.lower(): signature_header(SECRET, NOW, BODY)}
    event = verify_webhook(SECRET, headers, BODY, NOW, 300)
    assert (event.event_id, event.type, event.payment_id, event.amount, event.currency) == \
        ("evt_1", EventType.SUCCEEDED, "pay_1", 2500, "EUR")
    with pytest.raises(WebhookRejected) as e:
        verify_webhook(SECRET, {}, BODY, NOW, 300)
    assert e.value.reason == "BAD_SIGNATURE"
    with pytest.raises(WebhookRejected) as e:
        verify_webhook(SECRET, headers, BODY, NOW + 1000, 300)
    assert e.value.reason == "STALE_WEBHOOK"


@pytest.mark.parametrize("change", [
    {"id": None}, {"id": "bad id with spaces"}, {"type": "payment.refunded"}, {"created": -1},
    {"data": {"payment_id": "pay_1", "amount": "2500", "currency": "EUR"}},
    {"data": {"payment_id": "pay_1", "amount": True, "currency": "EUR"}},
    {"data": {"payment_id": "pay_1", "amount": 1, "currency": "eur"}},
    {"data": {"amount": 1, "currency": "EUR"}},
])
def test_bad_event_bodies_are_refused(change: dict[str, object]) -> None:
    obj = {**orjson.loads(BODY), **change}
    with pytest.raises(WebhookRejected) as e:
        parse_event(orjson.dumps(obj))
    assert e.value.reason == "BAD_WEBHOOK"
    for raw in (b"", b"[]", b"{", b"x" * 70_000):
        with pytest.raises(WebhookRejected):
            parse_event(raw)

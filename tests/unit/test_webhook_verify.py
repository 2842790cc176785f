"""The reference verifier of re-engagement webhooks (``webhook_verify/``, docs/WEBHOOKS.md): it stands alone
(standard library only, nothing of the server imports it), it agrees with the server's signer on a fixed
vector, and it refuses a tampered body or signature (BAD_SIGNATURE), an old or future timestamp (STALE), a
delivery id seen before (REPLAYED) and missing or malformed parts (MALFORMED)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from commerce.webhooks import backoff_s, outcome, signed_headers
from webhook_verify import VerificationError, sign, verify

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = {"server", "stream_gateway", "commerce", "inventory", "loadtest", "verify_draw"}

SECRET = "test-webhook-secret-0123456789abcdef"
DELIVERY = "d-0123456789abcdef01234567"
BODY = b'{"delivery_id":"d-0123456789abcdef01234567","type":"reminder","users":["v-1"]}'
TS = 1_700_000_000
# HMAC-SHA256(SECRET, "1700000000.d-0123456789abcdef01234567." + BODY), computed once by hand
VECTOR = "c3cb76287fd9c7c16cb85379d43b7787df4e98acfc80da404c2e8d3b3d5e7fa7"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_it_imports_only_the_standard_library() -> None:
    files = sorted((ROOT / "webhook_verify").rglob("*.py"))
    assert {p.name for p in files} >= {"__init__.py", "__main__.py"}
    wrong = [f"{p.relative_to(ROOT)} imports {n}" for p in files for n in _imports(p)
             if n != "webhook_verify" and (n in SERVER_PACKAGES or n not in sys.stdlib_module_names)]
    assert not wrong, wrong


def test_no_server_package_imports_it() -> None:
    users = [str(p.relative_to(ROOT)) for package in ("server", "stream_gateway", "commerce", "inventory")
             for p in sorted((ROOT / package).rglob("*.py")) if "webhook_verify" in _imports(p)]
    assert not users, users


def headers(ts: int = TS, body: bytes = BODY, delivery: str = DELIVERY, secret: str = SECRET) -> dict[str, str]:
    return signed_headers(secret, delivery, body, ts)


def test_the_server_signs_what_the_verifier_checks_on_a_fixed_vector() -> None:
    assert sign(SECRET, TS, DELIVERY, BODY) == VECTOR
    h = headers()
    assert h["X-Livesale-Signature"] == f"v1={VECTOR}"
    assert h["X-Livesale-Timestamp"] == str(TS) and h["X-Livesale-Delivery"] == DELIVERY
    assert verify(SECRET, h, BODY, now=TS + 1)["users"] == ["v-1"]


def test_header_names_are_case_insensitive_and_a_rotation_may_send_two_signatures() -> None:
    lower = {k.lower(): v for k, v in headers().items()}
    assert verify(SECRET, lower, BODY, now=TS)["delivery_id"] == DELIVERY
    old = sign("an-older-secret-0123456789abcdef!!", TS, DELIVERY, BODY)
    lower["x-livesale-signature"] = f"v1={old}, v1={VECTOR}"
    assert verify(SECRET, lower, BODY, now=TS)["type"] == "reminder"


def code_of(*args: Any, **kw: Any) -> str:
    with pytest.raises(VerificationError) as e:
        verify(*args, **kw)
    return e.value.code


def test_a_tampered_body_or_signature_or_another_secret_is_bad_signature() -> None:
    assert code_of(SECRET, headers(), BODY.replace(b"v-1", b"v-2"), now=TS) == "BAD_SIGNATURE"
    assert code_of(SECRET, headers(), BODY + b" ", now=TS) == "BAD_SIGNATURE"
    bad = {**headers(), "X-Livesale-Signature": "v1=" + ("0" if VECTOR[0] != "0" else "1") + VECTOR[1:]}
    assert code_of(SECRET, bad, BODY, now=TS) == "BAD_SIGNATURE"
    assert code_of("another-secret-0123456789abcdef!!", headers(), BODY, now=TS) == "BAD_SIGNATURE"
    # the timestamp and the delivery id are signed too
    assert code_of(SECRET, {**headers(), "X-Livesale-Timestamp": str(TS + 1)}, BODY, now=TS) == "BAD_SIGNATURE"
    assert code_of(SECRET, {**headers(), "X-Livesale-Delivery": "d-other"}, BODY, now=TS) == "BAD_SIGNATURE"


def test_an_old_or_future_timestamp_is_stale_even_when_signed() -> None:
    assert verify(SECRET, headers(), BODY, now=TS + 300)
    assert code_of(SECRET, headers(), BODY, now=TS + 301) == "STALE"
    assert code_of(SECRET, headers(), BODY, now=TS - 301) == "STALE"
    assert code_of(SECRET, headers(), BODY, now=TS + 61, tolerance_s=60) == "STALE"
    # a forged signature on an old timestamp says BAD_SIGNATURE (the signature is checked first)
    forged = {**headers(), "X-Livesale-Signature": "v1=" + "ab" * 32}
    assert code_of(SECRET, forged, BODY, now=TS + 10_000) == "BAD_SIGNATURE"


def test_a_delivery_id_seen_before_is_replayed() -> None:
    seen: set[str] = set()
    assert verify(SECRET, headers(), BODY, now=TS, seen=seen)
    assert seen == {DELIVERY}
    assert code_of(SECRET, headers(), BODY, now=TS, seen=seen) == "REPLAYED"
    # a retry of the same delivery (same id, fresh timestamp and signature) is the same delivery
    assert code_of(SECRET, headers(TS + 5), BODY, now=TS + 5, seen=seen) == "REPLAYED"
    # a failed check remembers nothing
    other: set[str] = set()
    code_of(SECRET, headers(), BODY + b"x", now=TS, seen=other)
    assert not other


def test_missing_or_malformed_parts_are_malformed() -> None:
    h = headers()
    for name in ("X-Livesale-Delivery", "X-Livesale-Timestamp", "X-Livesale-Signature"):
        assert code_of(SECRET, {k: v for k, v in h.items() if k != name}, BODY, now=TS) == "MALFORMED", name
    for name, value in (("X-Livesale-Timestamp", "17e8"), ("X-Livesale-Timestamp", "-1"),
                        ("X-Livesale-Delivery", "d 1"), ("X-Livesale-Delivery", "x" * 129),
                        ("X-Livesale-Signature", "v0=" + VECTOR), ("X-Livesale-Signature", "v1=" + VECTOR.upper()),
                        ("X-Livesale-Signature", "v1=" + VECTOR[:-1]), ("X-Livesale-Signature", "v1=" * 400)):
        assert code_of(SECRET, {**h, name: value}, BODY, now=TS) == "MALFORMED", (name, value)
    # signed, but not a delivery: not JSON, not an object, or another delivery_id inside
    for body in (b"not json", b"[1]", json.dumps({"delivery_id": "d-else"}).encode()):
        assert code_of(SECRET, headers(body=body), body, now=TS) == "MALFORMED", body
    with pytest.raises(ValueError):
        verify("", h, BODY, now=TS)


def test_retry_policy_of_the_sender() -> None:
    assert [outcome(s) for s in (200, 204, 299)] == ["sent"] * 3
    assert [outcome(s) for s in (400, 401, 403, 404, 410, 422, 301)] == ["failed"] * 7
    assert [outcome(s) for s in (408, 429, 500, 502, 503, None)] == ["retry"] * 6
    nominal = [backoff_s(n, 1.0, 300.0, 0.5) for n in range(1, 12)]
    assert nominal[:5] == [1.0, 2.0, 4.0, 8.0, 16.0] and nominal[-1] == 300.0
    assert backoff_s(3, 1.0, 300.0, 0.0) == pytest.approx(3.2) and backoff_s(3, 1.0, 300.0, 0.999) < 4.8
    assert backoff_s(1000, 1.0, 300.0, 0.5) == 300.0

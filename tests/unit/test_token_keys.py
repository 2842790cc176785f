"""Tokens signed by the platform's own key (RS256 / EdDSA from a JWKS) and HS256 secret rotation.

Keys are generated here with ``cryptography``; the JWKS is a file in tmp_path (no network).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from jwt.algorithms import OKPAlgorithm

from commerce.identity import TokenError, TokenVerifier, mint_viewer_token, verify_token
from commerce.jwks import KeySet, KeySetError, parse_jwks
from server.config import Settings, SettingsError
from token_keys_helpers import PlatformKey, b64, hand_made, viewer_claims, write_jwks

SECRET = "s" * 40
OLD_SECRET = "o" * 40


async def verifier_for(path: Path, *, min_refetch_s: float = 0.0, **kw: Any) -> TokenVerifier:
    v = TokenVerifier([SECRET, OLD_SECRET], KeySet(str(path), refresh_s=3600, min_refetch_s=min_refetch_s), **kw)
    await v.start()
    return v


@pytest.fixture
def ed() -> PlatformKey:
    return PlatformKey("ed-1")


@pytest.fixture
def rs() -> PlatformKey:
    return PlatformKey("rs-1", "rsa")


async def test_platform_keys_accepted_and_others_refused(tmp_path: Path, ed: PlatformKey, rs: PlatformKey) -> None:
    v = await verifier_for(write_jwks(tmp_path / "jwks.json", ed, rs))
    try:
        ident = v.verify(ed.sign())
        assert (ident.user, ident.role, ident.name, ident.guest) == ("u-1", "viewer", "Ana", False)
        assert v.verify(rs.sign({"sub": "h-9", "role": "host", "rooms": ["r1"]})).hosts("r1")
        assert v.verify(ed.sign(guest=True)).guest

        impostor = PlatformKey("ed-1")  # same kid, another key
        for token, why in [
            (impostor.sign(), "not valid"),
            (PlatformKey("rs-1", "rsa").sign(), "not valid"),
            (ed.sign(kid="nope"), "not in the platform key set"),
            (ed.sign(kid=None), "needs a key id"),
            (ed.sign(exp=int(time.time()) - 60), "expired"),
            (ed.sign({"exp": None}), "not valid"),
            (ed.sign({"role": "admin"}), "role"),
            (ed.sign({"sub": "bad sub!"}), "subject"),
            (ed.sign(kid="rs-1"), "not valid"),  # an EdDSA signature under the RSA key's kid
        ]:
            with pytest.raises(TokenError, match=why):
                v.verify(token)
    finally:
        await v.aclose()


async def test_platform_token_without_a_key_set_is_refused(ed: PlatformKey) -> None:
    with pytest.raises(TokenError):
        TokenVerifier([SECRET]).verify(ed.sign())


async def test_hs256_current_and_previous_secrets(tmp_path: Path, ed: PlatformKey) -> None:
    v = await verifier_for(write_jwks(tmp_path / "jwks.json", ed))
    try:
        assert v.verify(mint_viewer_token(SECRET, "Ana", user="a")[0]).user == "a"
        assert v.verify(mint_viewer_token(OLD_SECRET, "Ben", user="b")[0]).user == "b"
        with pytest.raises(TokenError, match="not valid"):
            v.verify(mint_viewer_token("x" * 40, "Eve")[0])
        expired_old = jwt.encode({**viewer_claims(ttl=-60)}, OLD_SECRET, algorithm="HS256")
        with pytest.raises(TokenError, match="expired"):
            v.verify(expired_old)
        # the rotation ends: the old secret leaves the list and its tokens are refused
        assert TokenVerifier([SECRET]).verify(mint_viewer_token(SECRET, "Ana")[0]).role == "viewer"
        with pytest.raises(TokenError):
            TokenVerifier([SECRET]).verify(mint_viewer_token(OLD_SECRET, "Ben")[0])
        # the thin wrapper the rest of the code base used before
        assert verify_token(SECRET, mint_viewer_token(SECRET, "Ana", user="a")[0]).user == "a"
    finally:
        await v.aclose()


async def test_alg_none_and_algorithm_confusion_are_refused(tmp_path: Path, ed: PlatformKey, rs: PlatformKey) -> None:
    v = await verifier_for(write_jwks(tmp_path / "jwks.json", ed, rs))
    try:
        claims = viewer_claims()
        forged = [
            hand_made({"alg": "none", "typ": "JWT", "kid": "ed-1"}, claims, None),
            hand_made({"alg": "none", "typ": "JWT"}, claims, None),
            # HS256 "signed" with the public key (PEM or JWK text) as the HMAC secret, naming its kid
            hand_made({"alg": "HS256", "typ": "JWT", "kid": "rs-1"}, claims, rs.public_pem()),
            hand_made({"alg": "HS256", "typ": "JWT", "kid": "ed-1"}, claims, ed.public_pem()),
            hand_made({"alg": "HS256", "typ": "JWT", "kid": "rs-1"}, claims, json.dumps(rs.jwk()).encode()),
            hand_made({"alg": "HS384", "typ": "JWT"}, claims, SECRET.encode()),
            hand_made({"alg": "RS256", "typ": "JWT", "kid": "rs-1"}, claims, rs.public_pem()),
        ]
        for token in forged:
            with pytest.raises(TokenError):
                v.verify(token)
        for junk in ["", "a.b.c", "x" * 5000, 42, None]:
            with pytest.raises(TokenError):
                v.verify(junk)
    finally:
        await v.aclose()


async def test_rotation_two_kids_then_the_old_one_removed(tmp_path: Path) -> None:
    old, new = PlatformKey("2026-01"), PlatformKey("2026-02", "rsa")
    path = write_jwks(tmp_path / "jwks.json", old)
    v = await verifier_for(path)
    try:
        t_old = old.sign()
        assert v.verify(t_old).user == "u-1"
        # the platform publishes the next key: a token with the new kid triggers a reload
        write_jwks(path, old, new)
        t_new = new.sign({"sub": "u-2"})
        with pytest.raises(TokenError, match="not in the platform key set"):
            v.verify(t_new)  # nothing reloaded yet: the sync path does no I/O
        assert (await v.verify_async(t_new)).user == "u-2"
        assert v.verify(t_old).user == "u-1"  # both accepted during the window
        # the window ends: the old key leaves the set
        write_jwks(path, new)
        assert v.keys is not None
        await v.keys.refresh()
        with pytest.raises(TokenError, match="not in the platform key set"):
            await v.verify_async(t_old)
        assert v.verify(t_new).user == "u-2"
    finally:
        await v.aclose()


async def test_the_key_set_is_reloaded_periodically(tmp_path: Path) -> None:
    old, new = PlatformKey("old"), PlatformKey("new")
    path = write_jwks(tmp_path / "jwks.json", old)
    keys = KeySet(str(path), refresh_s=0.05, min_refetch_s=3600)
    await keys.start()
    try:
        write_jwks(path, new)
        for _ in range(200):
            if keys.kids == ("new",):
                break
            await asyncio.sleep(0.02)
        assert keys.kids == ("new",)
    finally:
        await keys.aclose()


async def test_unknown_kid_reloads_at_most_once_per_interval(tmp_path: Path, ed: PlatformKey) -> None:
    path = write_jwks(tmp_path / "jwks.json", ed)
    v = await verifier_for(path, min_refetch_s=3600)
    try:
        later = PlatformKey("ed-2")
        write_jwks(path, ed, later)
        with pytest.raises(TokenError, match="not in the platform key set"):
            await v.verify_async(later.sign())  # loaded at start, moments ago: no reload yet
        assert v.keys is not None and v.keys.kids == ("ed-1",)
    finally:
        await v.aclose()


async def test_a_failed_reload_keeps_the_keys(tmp_path: Path, ed: PlatformKey) -> None:
    path = write_jwks(tmp_path / "jwks.json", ed)
    v = await verifier_for(path)
    try:
        path.write_text("{not json")
        assert v.keys is not None
        await v.keys.refresh()
        assert v.verify(ed.sign()).user == "u-1"
    finally:
        await v.aclose()


async def test_unreadable_file_stops_the_start(tmp_path: Path) -> None:
    v = TokenVerifier([SECRET], KeySet(str(tmp_path / "missing.json")))
    with pytest.raises(KeySetError, match="cannot load"):
        await v.start()


def test_key_set_keeps_only_public_signing_keys(ed: PlatformKey, rs: PlatformKey) -> None:
    private = json.loads(OKPAlgorithm.to_jwk(ed.private))  # type: ignore[arg-type]
    keys = parse_jwks({"keys": [
        ed.jwk(), rs.jwk(),
        {**private, "kid": "with-private-part"},
        {"kty": "oct", "k": b64(SECRET.encode()), "kid": "symmetric"},
        {**PlatformKey("x").jwk(), "kid": "enc", "use": "enc"},
        {**PlatformKey("x").jwk(), "kid": "wrong-alg", "alg": "RS256"},
        {k: val for k, val in PlatformKey("x").jwk().items() if k != "kid"},
        {**PlatformKey("x").jwk(), "kid": "ed-1"},  # duplicate kid: the first one stays
        "junk",
    ]})
    assert sorted(keys) == ["ed-1", "rs-1"]
    assert keys["ed-1"].algorithm_name == "EdDSA" and keys["rs-1"].algorithm_name == "RS256"
    with pytest.raises(KeySetError):
        parse_jwks([1, 2])


async def test_issuer_and_audience(tmp_path: Path, ed: PlatformKey) -> None:
    path = write_jwks(tmp_path / "jwks.json", ed)
    v = await verifier_for(path, issuer="https://platform.example", audience="livesale")
    plain = await verifier_for(path)
    try:
        assert v.verify(ed.sign(iss="https://platform.example", aud="livesale")).user == "u-1"
        assert v.verify(ed.sign(iss="https://platform.example", aud=["other", "livesale"])).user == "u-1"
        for token in [ed.sign(), ed.sign(iss="https://platform.example"), ed.sign(aud="livesale"),
                      ed.sign(iss="https://evil.example", aud="livesale"),
                      ed.sign(iss="https://platform.example", aud="other")]:
            with pytest.raises(TokenError):
                v.verify(token)
        # HS256 tokens are livesale's own: no iss / aud asked of them
        assert v.verify(mint_viewer_token(SECRET, "Ana")[0]).role == "viewer"
        # no audience configured: a token addressed to someone is refused (RFC 7519 4.1.3)
        with pytest.raises(TokenError):
            plain.verify(ed.sign(aud="livesale"))
        assert plain.verify(ed.sign(iss="anyone")).user == "u-1"
    finally:
        await v.aclose()
        await plain.aclose()


def test_settings_for_token_keys(tmp_path: Path) -> None:
    from server.app import token_verifier

    s = Settings.from_env({"LIVESALE_SECRET": SECRET, "LIVESALE_SECRETS_PREVIOUS": f" {OLD_SECRET} , {'p' * 32}",
                           "LIVESALE_JWKS": "https://platform.example/.well-known/jwks.json",
                           "LIVESALE_JWKS_REFRESH_S": "60", "LIVESALE_TOKEN_ISSUER": "https://platform.example",
                           "LIVESALE_TOKEN_AUDIENCE": "livesale", "LIVESALE_DATA_DIR": str(tmp_path)})
    assert s.secrets_previous == (OLD_SECRET, "p" * 32) and s.jwks_refresh_s == 60
    assert OLD_SECRET not in repr(s)
    v = token_verifier(s)
    assert v.secrets == (SECRET, OLD_SECRET, "p" * 32)  # minting uses the first: LIVESALE_SECRET
    assert v.keys is not None and v.keys.is_url and v.keys.refresh_s == 60
    assert (v.issuer, v.audience) == ("https://platform.example", "livesale")
    assert token_verifier(Settings.from_env({"LIVESALE_SECRET": SECRET})).keys is None
    assert Settings.from_env({"LIVESALE_JWKS": "./keys/jwks.json"}).jwks == "./keys/jwks.json"
    for env, needle in [({"LIVESALE_SECRETS_PREVIOUS": "short"}, "LIVESALE_SECRETS_PREVIOUS"),
                        ({"LIVESALE_JWKS": "ftp://x/jwks.json"}, "LIVESALE_JWKS"),
                        ({"LIVESALE_JWKS_REFRESH_S": "0"}, "LIVESALE_JWKS_REFRESH_S")]:
        with pytest.raises(SettingsError, match=needle):
            Settings.from_env(env)

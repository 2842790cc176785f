"""A platform's signing keys for the token tests: Ed25519 / RSA keys made with ``cryptography``,
their public JWKs, tokens signed with them, and hand-assembled JWTs for forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

Private = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class PlatformKey:
    def __init__(self, kid: str, kind: str = "ed") -> None:
        self.kid = kid
        self.alg = "EdDSA" if kind == "ed" else "RS256"
        self.private: Private = (ed25519.Ed25519PrivateKey.generate() if kind == "ed"
                                 else rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        algo = OKPAlgorithm if self.alg == "EdDSA" else RSAAlgorithm
        out: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))  # type: ignore[attr-defined]
        out.update(kid=self.kid, use="sig", alg=self.alg)
        return out

    def sign(self, claims: dict[str, Any] | None = None, kid: str | None = "", **extra: Any) -> str:
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode({**viewer_claims(), **(claims or {}), **extra}, self.private, algorithm=self.alg,
                          headers=headers)

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


def viewer_claims(sub: str = "u-1", ttl: int = 600) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "role": "viewer", "name": "Ana", "iat": now, "exp": now + ttl}


def write_jwks(path: Path, *keys: PlatformKey, extra: list[dict[str, Any]] | None = None) -> Path:
    path.write_text(json.dumps({"keys": [k.jwk() for k in keys] + (extra or [])}))
    return path


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT assembled by hand: lets the test forge what PyJWT refuses to produce."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"

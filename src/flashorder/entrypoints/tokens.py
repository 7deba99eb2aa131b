"""Minting bearer tokens the API accepts, for development, tests and the benchmark.

Apart from the API (``api.auth`` checks tokens) so that ``flashorder token`` loads only the
settings, not the web framework. The token is signed here with the standard library's HMAC:
the JWT library would load a cryptography backend, which costs more than the whole command
otherwise does. Checking tokens stays with the JWT library; a test holds the two together.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any

from flashorder.config import Settings


def mint_token(settings: Settings, user_id: str, *, admin: bool = False, ttl: int = 3600) -> str:
    """A token for ``user_id``, valid ``ttl`` seconds, signed HS256 with the configured
    secret. For development, tests and the benchmark: a deployment with an identity provider
    checks that provider's tokens instead."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl,
        "roles": ["admin"] if admin else [],
    }
    return _signed_hs256(claims, settings.jwt_secret.get_secret_value().encode())


def _signed_hs256(claims: dict[str, Any], secret: bytes) -> str:
    """The compact form of a JWS (RFC 7515) whose signature is HMAC-SHA256 (RFC 7518)."""
    header = _base64url({"alg": "HS256", "typ": "JWT"})
    payload = _base64url(claims)
    signature = hmac.digest(secret, f"{header}.{payload}".encode(), "sha256")
    return f"{header}.{payload}.{_unpadded(signature)}"


def _base64url(part: dict[str, Any]) -> str:
    return _unpadded(json.dumps(part, separators=(",", ":")).encode())


def _unpadded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

"""Minting development tokens: light enough for the ``flashorder`` commands to import (the
API's token checks live in ``api.auth``)."""

from __future__ import annotations

import time
from typing import Any

import jwt

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
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")

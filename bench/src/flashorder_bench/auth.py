"""Bearer tokens for the bench's calls, minted as ``flashorder token`` mints them (README,
settings ``FLASHORDER_JWT_*``): HS256 over the stack's secret, with its issuer and audience,
the user id as ``sub`` and ``roles: ["admin"]`` for an administrator. Minted here rather than
by running ``flashorder token``: a run needs tens of thousands of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import jwt

from flashorder_bench.settings import StackSettings

Mint = Callable[[str, bool], str]

ADMIN_USER = "bench-admin"
#: Long enough for any run: a token that expired mid-run would turn the sale into 401s.
TOKEN_TTL_S = 6 * 3600


def minter(settings: StackSettings) -> Mint:
    """A function ``(user_id, admin) -> token`` for the stack of ``settings``."""

    def mint(user_id: str, admin: bool) -> str:
        now = int(time.time())
        claims = {
            "sub": user_id,
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
            "roles": ["admin"] if admin else [],
        }
        return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")

    return mint


def bearer(mint: Mint, user_id: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(user_id, admin)}"}


def user_headers(mint: Mint, users: Iterable[str]) -> dict[str, dict[str, str]]:
    """The Authorization header of each user, minted once up front: signing is CPU the
    generator should not spend while it measures."""
    return {user: bearer(mint, user) for user in set(users)}

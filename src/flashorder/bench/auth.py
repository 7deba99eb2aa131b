"""Bearer tokens for the bench's calls, minted the way the service verifies them.

The API mints with ``flashorder.entrypoints.tokens.mint_token(settings, user_id, admin)``
from the settings the service runs with. Where that module is absent (a build without auth),
the bench sends no ``Authorization`` header at all.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

from flashorder.config import Settings

Mint = Callable[[str, bool], str]

ADMIN_USER = "bench-admin"


def minter(settings: Settings) -> Mint | None:
    """A function ``(user_id, admin) -> token``, or None when the service has no auth."""
    try:
        module = importlib.import_module("flashorder.entrypoints.api.auth")
    except ModuleNotFoundError:
        return None
    mint_token = getattr(module, "mint_token", None)
    if not callable(mint_token):
        return None

    def mint(user_id: str, admin: bool) -> str:
        return str(mint_token(settings, user_id, admin=admin))

    return mint


def bearer(mint: Mint | None, user_id: str, *, admin: bool = False) -> dict[str, str]:
    if mint is None:
        return {}
    return {"Authorization": f"Bearer {mint(user_id, admin)}"}


def user_headers(mint: Mint | None, users: Iterable[str]) -> dict[str, dict[str, str]]:
    """The Authorization header of each user, minted once up front: signing is CPU the
    generator should not spend while it measures."""
    return {user: bearer(mint, user) for user in set(users)}

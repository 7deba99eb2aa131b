"""Tokens to principals, without HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from flashorder.config import DEV_JWT_SECRET, Settings
from flashorder.domain.model import UserId
from flashorder.entrypoints.api.auth import Authenticator, Principal, secret_warning
from flashorder.entrypoints.api.problems import Unauthorized
from flashorder.entrypoints.tokens import mint_token

SETTINGS = Settings(database_url=None, redis_url=None)


def token(**claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "alice", "iss": "flashorder", "aud": "flashorder-api", "exp": now + 60}
    body.update(claims)
    return jwt.encode(body, SETTINGS.jwt_secret.get_secret_value(), algorithm="HS256")


async def test_a_minted_token_names_its_user_and_role() -> None:
    authenticator = Authenticator(SETTINGS)

    assert await authenticator.principal(mint_token(SETTINGS, "bob")) == Principal(
        UserId("bob"), False
    )
    assert await authenticator.principal(mint_token(SETTINGS, "root", admin=True)) == Principal(
        UserId("root"), True
    )


@pytest.mark.parametrize(
    ("claims", "admin"),
    [
        ({"roles": ["buyer", "admin"]}, True),
        ({"roles": "admin"}, True),
        ({"roles": ["buyer"]}, False),
        ({"roles": "administrator"}, False),
        ({"roles": [["admin"]]}, False),
        # Only the configured claim counts: another claim saying "admin" does not.
        ({"admin": True}, False),
        ({"scope": "admin"}, False),
        ({}, False),
    ],
)
async def test_only_the_admin_claim_holding_the_admin_value_makes_an_admin(
    claims: dict[str, Any], admin: bool
) -> None:
    principal = await Authenticator(SETTINGS).principal(token(**claims))

    assert principal.admin is admin


@pytest.mark.parametrize(
    ("claim", "value", "claims", "admin"),
    [
        ("scope", "orders:admin", {"scope": "orders:read orders:admin"}, True),
        ("scope", "orders:admin", {"scope": "orders:read", "roles": ["admin"]}, False),
        ("realm_access.roles", "shop-admin", {"realm_access": {"roles": ["shop-admin"]}}, True),
        ("realm_access.roles", "shop-admin", {"realm_access": {"roles": ["admin"]}}, False),
        ("https://shop.example/roles", "admin", {"https://shop.example/roles": ["admin"]}, True),
        ("is_admin", "true", {"is_admin": True}, True),
        ("is_admin", "true", {"is_admin": "false"}, False),
        ("is_admin", "true", {"is_admin": 1}, False),
    ],
)
async def test_the_admin_claim_and_value_are_settings_for_real_identity_providers(
    claim: str, value: str, claims: dict[str, Any], admin: bool
) -> None:
    settings = SETTINGS.model_copy(update={"jwt_admin_claim": claim, "jwt_admin_value": value})

    principal = await Authenticator(settings).principal(token(**claims))

    assert principal.admin is admin


@pytest.mark.parametrize("sub", ["alice\n", "alice\r\n", "\nalice", "al ice", "a" * 65, ""])
async def test_a_subject_outside_the_user_id_rule_is_refused_even_by_a_trailing_newline(
    sub: str,
) -> None:
    with pytest.raises(Unauthorized, match="subject"):
        await Authenticator(SETTINGS).principal(token(sub=sub))


async def test_a_token_expired_within_the_leeway_is_still_accepted() -> None:
    authenticator = Authenticator(SETTINGS)

    await authenticator.principal(token(exp=int(time.time()) - 2))
    with pytest.raises(Unauthorized, match="expired"):
        await authenticator.principal(token(exp=int(time.time()) - 60))


async def test_a_token_minted_with_a_negative_ttl_is_expired() -> None:
    with pytest.raises(Unauthorized, match="expired"):
        await Authenticator(SETTINGS).principal(mint_token(SETTINGS, "bob", ttl=-3600))


EXPOSED = [
    {"host": "0.0.0.0"},
    {"host": "10.1.2.3"},
    {"host": "::"},
    {"host": "api.shop.example"},
    {"database_url": "mysql+asyncmy://u:p@db/flashorder"},
    {"redis_url": "redis://cache:6379/0"},
    {"kafka_bootstrap": "kafka:9092"},
    {"database_url": "mysql+asyncmy://u:p@db/f", "jwt_algorithms": ["RS256", "HS384"]},
]


@pytest.mark.parametrize("exposed", EXPOSED)
def test_the_development_secret_is_refused_beyond_loopback_or_with_a_real_store(
    exposed: dict[str, Any],
) -> None:
    settings = Settings(**{"database_url": None, "redis_url": None, **exposed})
    assert settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET

    problem = settings.dev_secret_problem()

    assert problem is not None
    assert "FLASHORDER_JWT_SECRET" in problem
    assert "FLASHORDER_ALLOW_DEV_SECRET" in problem
    assert problem in settings.problems()
    # The explicit development switch allows it, with a loud warning.
    allowed = settings.model_copy(update={"allow_dev_secret": True})
    assert allowed.dev_secret_problem() is None
    warning = secret_warning(allowed)
    assert warning is not None
    assert "ANYONE CAN MINT" in warning


@pytest.mark.parametrize(
    "fine",
    [
        {},  # make run: loopback, embedded
        {"host": "localhost"},
        {"host": "::1"},
        {"host": "0.0.0.0", "jwt_secret": "s" * 40},
        {"database_url": "mysql+asyncmy://u:p@db/f", "jwt_secret": "s" * 40},
        {
            "host": "0.0.0.0",
            "jwt_public_key": "PEM",
            "database_url": "mysql+asyncmy://u:p@db/f",
            "sale_session_secret": "t" * 40,
            "queue_secret": "q" * 40,
        },
    ],
)
def test_the_development_secret_is_fine_on_loopback_and_any_other_secret_anywhere(
    fine: dict[str, Any],
) -> None:
    settings = Settings(**{"database_url": None, "redis_url": None, **fine})

    assert settings.dev_secret_problem() is None
    assert secret_warning(settings) is None


@pytest.mark.parametrize(
    "exposed",
    [{"host": "0.0.0.0"}, {"database_url": "mysql+asyncmy://u:p@db/f"}],
    ids=["beyond-loopback", "real-store"],
)
def test_sale_sessions_signed_from_the_development_secret_are_refused(
    exposed: dict[str, Any],
) -> None:
    # Tokens checked with a public key leave the development secret unused by them, but the
    # sale page derives its session key from it unless it has a secret of its own: anyone
    # could forge an admin session.
    settings = Settings(
        **{"database_url": None, "redis_url": None, "jwt_public_key": "PEM", **exposed}
    )

    assert settings.dev_secret_problem() is None
    problem = settings.sale_session_secret_problem()
    assert problem is not None
    assert "FLASHORDER_SALE_SESSION_SECRET" in problem
    assert problem in settings.problems()
    # A secret of the sessions' own, or of the tokens', ends it; the switch allows it, loudly.
    own = settings.model_copy(update={"sale_session_secret": SecretStr("s" * 40)})
    assert own.sale_session_secret_problem() is None
    allowed = settings.model_copy(update={"allow_dev_secret": True})
    assert allowed.sale_session_secret_problem() is None
    warning = secret_warning(allowed)
    assert warning is not None
    assert "ANYONE CAN FORGE AN ADMIN SESSION" in warning
    # On loopback with embedded stores (make run) it is fine.
    loopback = Settings(database_url=None, redis_url=None, jwt_public_key="PEM")
    assert loopback.sale_session_secret_problem() is None


@pytest.mark.parametrize(
    "exposed",
    [{"host": "0.0.0.0"}, {"database_url": "mysql+asyncmy://u:p@db/f"}],
    ids=["beyond-loopback", "real-store"],
)
def test_admission_tokens_signed_from_the_development_secret_are_refused(
    exposed: dict[str, Any],
) -> None:
    # As the sale page's sessions: the queue's admission tokens derive their key from the
    # token secret unless they have one of their own; anyone could then skip the line.
    settings = Settings(
        **{
            "database_url": None,
            "redis_url": None,
            "jwt_public_key": "PEM",
            "sale_session_secret": "s" * 40,
            "payment_webhook_secret": "w" * 40,
            **exposed,
        }
    )

    problem = settings.queue_secret_problem()
    assert problem is not None
    assert "FLASHORDER_QUEUE_SECRET" in problem
    assert settings.problems() == [problem]
    assert settings.model_copy(update={"queue_secret": SecretStr("q" * 40)}).problems() == []
    allowed = settings.model_copy(update={"allow_dev_secret": True})
    assert allowed.problems() == []
    warning = secret_warning(allowed)
    assert warning is not None
    assert "ANYONE CAN SKIP THE QUEUE" in warning
    loopback = Settings(
        database_url=None, redis_url=None, jwt_public_key="PEM", sale_session_secret="s" * 40
    )
    assert loopback.queue_secret_problem() is None


def test_a_secret_shorter_than_32_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Settings(jwt_secret="short")


def test_the_secret_never_shows_in_the_settings_repr() -> None:
    assert DEV_JWT_SECRET not in repr(SETTINGS)


class CountingDecode:
    """Counts the calls of ``Authenticator._verify``: how often a token was really checked
    (signature and claims, by the fast HMAC check or by PyJWT)."""

    calls = 0


@pytest.fixture
def decode(monkeypatch: pytest.MonkeyPatch) -> CountingDecode:
    counting = CountingDecode()
    verify = Authenticator._verify

    async def counted(authenticator: Authenticator, token: str) -> Any:
        counting.calls += 1
        return await verify(authenticator, token)

    monkeypatch.setattr(Authenticator, "_verify", counted)
    return counting


async def test_a_verified_token_is_checked_once_then_remembered(decode: CountingDecode) -> None:
    authenticator = Authenticator(SETTINGS)
    alice, bob = token(), token(sub="bob")

    for _ in range(3):
        assert await authenticator.principal(alice) == Principal(UserId("alice"), False)
        assert await authenticator.principal(bob) == Principal(UserId("bob"), False)

    assert decode.calls == 2


async def test_with_the_cache_off_every_request_checks_the_signature(
    decode: CountingDecode,
) -> None:
    authenticator = Authenticator(SETTINGS.model_copy(update={"jwt_verified_cache_seconds": 0}))

    for _ in range(3):
        await authenticator.principal(token())

    assert decode.calls == 3


async def test_the_cache_keeps_at_most_its_size_dropping_the_oldest(
    decode: CountingDecode,
) -> None:
    authenticator = Authenticator(SETTINGS.model_copy(update={"jwt_verified_cache_size": 2}))
    a, b, c = token(sub="a"), token(sub="b"), token(sub="c")

    for t in (a, b, c):  # c pushes a out
        await authenticator.principal(t)
    await authenticator.principal(c)
    await authenticator.principal(b)
    assert decode.calls == 3
    await authenticator.principal(a)
    assert decode.calls == 4


async def test_a_refused_token_is_never_remembered(decode: CountingDecode) -> None:
    authenticator = Authenticator(SETTINGS)
    forged = token()[:-4] + "AAAA"

    for _ in range(2):
        with pytest.raises(Unauthorized):
            await authenticator.principal(forged)

    assert decode.calls == 2


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    authenticator = Authenticator(SETTINGS.model_copy(update={"jwt_leeway_seconds": 0}))
    short = token(exp=int(time.time()) + 1)
    assert await authenticator.principal(short) == Principal(UserId("alice"), False)

    await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))

    with pytest.raises(Unauthorized, match="expired"):
        await authenticator.principal(short)

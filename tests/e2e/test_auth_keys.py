"""Tokens from an identity provider: RS256/ES256 with a public key, or keys from a JWKS URL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from flashorder.config import Settings
from tests.support.api import Api, embedded
from tests.support.calls import jwks_served

PROBLEM = "urn:flashorder:problem:"
PRODUCT = {"name": "x", "price": 1, "stock": 1}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def signed(
    key: PrivateKey, alg: str, *, admin: bool = True, kid: str | None = None, **claims: Any
) -> str:
    settings = Settings()
    now = int(time.time())
    body = {
        "sub": "idp-user",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "exp": now + 600,
        "roles": ["admin"] if admin else [],
        **claims,
    }
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def create_product(api: Api, token: str) -> int:
    body = {"productId": f"PRD_{time.monotonic_ns()}", **PRODUCT}
    return (await api.call("POST", "/api/v1/products", body, token=token)).status


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ],
    ids=["RS256", "ES256"],
)
async def test_tokens_signed_with_the_configured_public_keys_pair_are_accepted(
    tmp_path: Path, alg: str, key: PrivateKey
) -> None:
    async with embedded(tmp_path, jwt_public_key=pem(key)) as api:
        assert await create_product(api, signed(key, alg)) == 201
        assert await create_product(api, signed(key, alg, admin=False)) == 403


async def test_with_a_public_key_the_shared_secret_is_refused_unless_listed(
    tmp_path: Path,
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with embedded(tmp_path, jwt_public_key=pem(key)) as api:
        assert await create_product(api, api.token("admin", admin=True)) == 401
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert await create_product(api, signed(other, "RS256")) == 401
    both = {"jwt_public_key": pem(key), "jwt_algorithms": ["HS256", "RS256"]}
    async with embedded(tmp_path / "both", **both) as api:
        assert await create_product(api, api.token("admin", admin=True)) == 201
        assert await create_product(api, signed(key, "RS256")) == 201


class Provider:
    """An identity provider's JWKS endpoint that counts how often it is asked."""

    def __init__(self, keys: dict[str, rsa.RSAPrivateKey]) -> None:
        self.keys = keys
        self.fetches = 0
        self.url = ""

    async def jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        published = [
            {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "RS256"}
            for kid, key in self.keys.items()
        ]
        return web.json_response({"keys": published})


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    found = Provider({"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)})
    async with jwks_served(found.jwks) as url:
        found.url = url
        yield found


async def test_keys_come_from_the_jwks_url_fetched_once_and_cached(
    tmp_path: Path, provider: Provider
) -> None:
    async with embedded(tmp_path, jwt_jwks_url=provider.url) as api:
        token = signed(provider.keys["k1"], "RS256", kid="k1")
        for _ in range(5):
            assert await create_product(api, token) == 201
        assert provider.fetches == 1


async def test_unknown_key_ids_cannot_make_the_service_flood_the_provider(
    tmp_path: Path, provider: Provider
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with embedded(tmp_path, jwt_jwks_url=provider.url) as api:
        assert await create_product(api, signed(provider.keys["k1"], "RS256", kid="k1")) == 201
        for n in range(10):
            reply = await api.call(
                "GET", "/api/v1/products/P", token=signed(stranger, "RS256", kid=f"made-up-{n}")
            )
            assert reply.status == 401
            assert reply.body["type"] == PROBLEM + "unauthorized"
        assert provider.fetches == 1


async def test_an_unreachable_jwks_url_is_a_503_not_a_401(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings = {"jwt_jwks_url": "http://127.0.0.1:1/jwks", "jwt_jwks_timeout_seconds": 0.5}
    async with embedded(tmp_path, **settings) as api:
        reply = await api.call("GET", "/api/v1/products/P", token=signed(key, "RS256", kid="k"))
        assert reply.status == 503, reply.body
        assert reply.body["type"] == PROBLEM + "unavailable"

"""Whatever a token's header says, the answer is 401 or the token's own, never a 500.

The header is fuzzed (``alg``, ``kid``, ``typ``, ``crit``, sizes) against the three ways the
service can hold keys: an RSA public key, an EC public key, and a JWKS served over HTTP by a
provider on a free local port. Each token is signed for real by the key its header names
where one exists (so a mismatch reaches the signature check, not only the header check),
else carries made-up bytes.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms

from flashorder.config import Settings
from tests.support.api import embedded
from tests.support.calls import jwks_served

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
SECRET = "a-secret-of-this-test-that-is-long-enough-0123456789"
#: Which private key signs a token whose header names each algorithm (None: junk bytes).
SIGNERS: dict[str, Any] = {
    "RS256": RSA_KEY,
    "RS512": RSA_KEY,
    "PS256": RSA_KEY,
    "ES256": EC_KEY,
    "HS256": SECRET,
}
ALGS: list[object] = [
    "RS256",
    "ES256",
    "HS256",
    "PS256",
    "RS512",
    "ES384",
    "ES512",
    "EdDSA",
    "none",
    "",
    "rs256",
    None,
    42,
    ["RS256"],
    "X" * 5_000,
]
KIDS: list[object] = ["rsa", "ec", "", "nobody", None, 7, {"kid": "rsa"}, "k" * 5_000, "__absent__"]
TYPS: list[object] = ["JWT", "at+jwt", 1, {}, None, "__absent__"]
CRITS: list[object] = ["__absent__", ["exp"], ["b64"], [], "b64", [1], None]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(header: dict[str, object], *, sub: str = "fuzz-user") -> str:
    """A JWS with exactly this header, signed by the key its ``alg`` names (if any)."""
    settings = Settings()
    now = int(time.time())
    payload = {
        "sub": sub,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "exp": now + 600,
    }
    signing_input = (
        b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    ).encode()
    alg = header.get("alg")
    signer = SIGNERS.get(alg) if isinstance(alg, str) else None
    if signer is not None:
        algorithm = get_default_algorithms()[str(alg)]
        signature = algorithm.sign(signing_input, algorithm.prepare_key(signer))
    else:
        signature = random.Random(len(signing_input)).randbytes(64)
    return signing_input.decode() + "." + b64(signature)


def header(alg: object, kid: object, typ: object, crit: object) -> dict[str, object]:
    fields = {"alg": alg, "kid": kid, "typ": typ, "crit": crit}
    return {name: value for name, value in fields.items() if value != "__absent__"}


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Provider:
    """An identity provider's JWKS endpoint; ``down`` makes it answer 503. Counts fetches."""

    def __init__(self) -> None:
        self.url = ""
        self.fetches = 0
        self.down = False

    async def jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.down:
            return web.Response(status=503)
        # Published without ``alg``: the key's type alone decides what it checks.
        rsa_jwk = {**RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "kid": "rsa"}
        ec_jwk = {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "ec"}
        return web.json_response({"keys": [rsa_jwk, ec_jwk]})


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    found = Provider()
    async with jwks_served(found.jwks) as url:
        found.url = url
        yield found


def cases() -> list[dict[str, object]]:
    """Every algorithm with every key id, then a seeded sample of all four fields mixed."""
    every = [header(alg, kid, "JWT", "__absent__") for alg, kid in itertools.product(ALGS, KIDS)]
    mixed = list(itertools.product(ALGS, KIDS, TYPS, CRITS))
    sample = random.Random(12).sample(mixed, 250)
    return every + [header(*fields) for fields in sample]


@pytest.mark.parametrize("keys", ["rsa-pem", "ec-pem", "jwks"])
async def test_no_token_header_gets_anything_but_its_answer_or_a_401(
    tmp_path: Path, provider: Provider, keys: str
) -> None:
    settings: dict[str, Any] = {
        "jwt_algorithms": ["RS256", "ES256", "PS256", "RS512", "ES384", "HS256"],
        "jwt_secret": SECRET,
        "rate_user_per_second": 0,
        "rate_ip_per_second": 0,
    }
    if keys == "jwks":
        settings["jwt_jwks_url"] = provider.url
    else:
        settings["jwt_public_key"] = pem(RSA_KEY if keys == "rsa-pem" else EC_KEY)
    answers: dict[int, int] = {}
    async with embedded(tmp_path, **settings) as api:
        for fields in cases():
            reply = await api.call("GET", "/api/v1/products/NOPE", token=token(fields))
            answers[reply.status] = answers.get(reply.status, 0) + 1
            # 404: the token was accepted and the product does not exist.
            assert reply.status in (401, 404), (fields, reply.status, reply.body)
            if reply.status == 401:
                assert reply.body["type"] == "urn:flashorder:problem:unauthorized"
                assert len(reply.body["detail"]) < 300
    # Tokens the key can check did get through: the checks refuse, they do not refuse all.
    assert answers.get(404, 0) >= 10, answers
    assert answers.get(401, 0) >= 300, answers


@pytest.mark.parametrize(
    ("alg", "kid", "accepted"),
    [
        ("RS256", "rsa", True),
        ("PS256", "rsa", True),
        ("ES256", "ec", True),
        # A header naming the other key's family: the key cannot check it (before: a 500).
        ("ES256", "rsa", False),
        ("RS256", "ec", False),
        ("PS256", "ec", False),
        ("HS256", "rsa", True),  # HS* tokens are checked with the secret, whatever the kid
    ],
)
async def test_the_accepted_algorithm_is_the_keys_own(
    tmp_path: Path, provider: Provider, alg: str, kid: str, accepted: bool
) -> None:
    settings = {
        "jwt_jwks_url": provider.url,
        "jwt_algorithms": ["RS256", "ES256", "PS256", "HS256"],
        "jwt_secret": SECRET,
    }
    async with embedded(tmp_path, **settings) as api:
        reply = await api.call(
            "GET", "/api/v1/products/NOPE", token=token({"alg": alg, "kid": kid, "typ": "JWT"})
        )
    assert reply.status == (404 if accepted else 401), reply.body


async def test_a_jwks_outage_at_start_is_not_retried_by_every_request(
    tmp_path: Path, provider: Provider
) -> None:
    provider.down = True
    async with embedded(tmp_path, jwt_jwks_url=provider.url) as api:
        answers = [
            (await api.call("GET", "/api/v1/products/P", token=token({"alg": "RS256"}))).status
            for _ in range(10)
        ]
        assert answers == [503] * 10
        # Failing fast for a while: one attempt, not one per request.
        assert provider.fetches == 1
        provider.down = False
        reply = await api.call(
            "GET", "/api/v1/products/P", token=token({"alg": "RS256", "kid": "rsa"})
        )
        # Still within the back-off: no new attempt yet.
        assert reply.status == 503
        assert provider.fetches == 1


async def test_a_huge_bearer_token_is_refused_before_it_is_read(tmp_path: Path) -> None:
    async with embedded(tmp_path) as api:
        huge = token({"alg": "HS256", "kid": "x" * 200_000})
        reply = await api.call("GET", "/api/v1/products/P", token=huge)
        assert reply.status == 431, reply.body
        assert reply.body["type"] == "urn:flashorder:problem:request-header-fields-too-large"
        # A token of ordinary size is read as before.
        reply = await api.call("GET", "/api/v1/products/P", token=api.token("u1"))
        assert reply.status == 404

"""Who is calling: bearer JWTs, checked on every request that needs them.

A token carries ``sub`` (the user id) and is an admin's when its admin claim holds the admin
value (settings ``jwt_admin_claim`` / ``jwt_admin_value``; by default ``roles`` contains
``"admin"``). It must carry ``exp``, ``iss`` and ``aud`` and they must match the settings.
HS256 tokens are checked with the shared secret; RS256/ES256 ones with the configured public
key or the provider's JWKS. Which ``alg`` values are accepted is a setting, so a token cannot
pick a weaker algorithm than the deployment allows, and a key only checks the algorithms of
its own type (an ``ES256`` header never meets an RSA key). Whatever a token holds, it is
accepted or answered 401: never a 500.

Rules of the API (the routes apply them):

- an order is placed by its buyer: the body's ``userId`` must be the token's ``sub``, for
  admins too (an admin who acts for a customer uses a token minted for that customer);
- an order is seen and cancelled by its buyer; to others it does not exist (404), except
  to admins;
- a user lists only their own orders (403 otherwise), admins anyone's;
- catalogue writes need an admin; catalogue reads any valid token;
- operations endpoints and the API docs need none.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jwt.algorithms import HMACAlgorithm

from flashorder.config import Settings
from flashorder.domain.model import UserId
from flashorder.entrypoints.api.hmac_tokens import HmacTokens
from flashorder.entrypoints.api.jwks import RSA_ALGORITHMS, JwksKeys
from flashorder.entrypoints.api.problems import Forbidden, ProblemType, Unauthorized, documented

log = logging.getLogger(__name__)

#: The answers of any route behind a token, for the OpenAPI document.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: documented(
        "No bearer token, or a bad, expired or foreign one",
        ProblemType.UNAUTHORIZED,
        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    403: documented("The token may not do this", ProblemType.FORBIDDEN),
}

# The wire format's identifier rule: a subject outside it could never match an order's user.
# Matched in full (``$`` would let a trailing newline through).
_USER_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,64}")

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as its token says."""

    user_id: UserId
    admin: bool


def secret_warning(settings: Settings) -> str | None:
    """What the development switch lets through of the secret settings where they would be
    refused otherwise (``Settings.dev_secret_problem``, ``sale_session_secret_problem``,
    ``queue_secret_problem``), or None."""
    if not settings.allow_dev_secret:
        return None
    saved = settings.model_copy(update={"allow_dev_secret": False})
    if problem := saved.dev_secret_problem():
        return f"FLASHORDER_ALLOW_DEV_SECRET is set: ANYONE CAN MINT ADMIN TOKENS. {problem}"
    if problem := saved.sale_session_secret_problem():
        return f"FLASHORDER_ALLOW_DEV_SECRET is set: ANYONE CAN FORGE AN ADMIN SESSION. {problem}"
    if problem := saved.queue_secret_problem():
        return f"FLASHORDER_ALLOW_DEV_SECRET is set: ANYONE CAN SKIP THE QUEUE. {problem}"
    return None


def algorithms_of(key: object) -> frozenset[str]:
    """The ``alg`` values a public key can check: those of its type (and curve), no other."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _EC_ALGORITHMS.get(key.curve.name)
        return frozenset({curve}) if curve else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


class Authenticator:
    """Turns a bearer token into a Principal, or refuses it with Unauthorized.

    Verified tokens are remembered by their exact text (signature included) for
    ``jwt_verified_cache_seconds``, never past their ``exp`` and its leeway: a flash sale's
    buyers send several requests with one token, and the signature check and claim parsing
    are the largest CPU cost of a refused order. Only tokens that passed every check are
    remembered, and the cache holds at most ``jwt_verified_cache_size`` of them (the oldest
    go first).
    """

    def __init__(self, settings: Settings) -> None:
        self._algorithms = frozenset(settings.effective_jwt_algorithms)
        self._secret = settings.jwt_secret.get_secret_value()
        self._public_key = (
            load_pem_public_key(settings.jwt_public_key.encode())
            if settings.jwt_public_key is not None
            else None
        )
        self._public_key_algorithms = algorithms_of(self._public_key)
        self._jwks = (
            JwksKeys(
                settings.jwt_jwks_url,
                timeout=settings.jwt_jwks_timeout_seconds,
                max_age=settings.jwt_jwks_cache_seconds,
            )
            if settings.jwt_jwks_url is not None
            else None
        )
        self._admin = _AdminClaim(settings.jwt_admin_claim, settings.jwt_admin_value)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._remember_for = settings.jwt_verified_cache_seconds
        self._remember_at_most = settings.jwt_verified_cache_size
        #: token -> (principal, valid until: a ``time.time()``); insertion order = age
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._hmac = _hmac_tokens(settings, self._algorithms)

    async def principal(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]
        principal, expires = await self._verify(token)
        if self._remember_for > 0:
            self._remember(token, principal, min(expires, time.time() + self._remember_for))
        return principal

    def _remember(self, token: str, principal: Principal, until: float) -> None:
        verified = self._verified
        while len(verified) >= self._remember_at_most:
            del verified[next(iter(verified))]
        verified[token] = (principal, until)

    async def _verify(self, token: str) -> tuple[Principal, float]:
        """The token's principal and the time after which it is expired, checked in full."""
        claims = self._hmac.claims(token) if self._hmac is not None else None
        if claims is not None:
            return self._principal_of(claims), float(claims["exp"]) + self._leeway
        try:
            header = jwt.get_unverified_header(token)
        except Exception:
            raise Unauthorized("the bearer token is not a JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise Unauthorized(f"tokens signed with {_shown(alg)} are not accepted")
        key = await self._key(alg, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {exc}") from None
        except Exception as exc:
            # The library's other errors (a key it cannot use for this token raises
            # TypeError or ValueError): still the token's fault, never a 500.
            log.info("auth.token_refused", extra={"error": type(exc).__name__})
            raise Unauthorized("the token is not valid") from None
        # ``exp`` is required and PyJWT checked that it is a number.
        return self._principal_of(claims), float(claims["exp"]) + self._leeway

    async def _key(self, alg: str, kid: object) -> Any:
        if alg.startswith("HS"):
            return self._secret
        if self._jwks is not None:
            if kid is not None and not isinstance(kid, str):
                raise Unauthorized("the token's key id is not a string")
            published = await self._jwks.key(kid)
            if published is None:
                raise Unauthorized(f"no published key has the id {_shown(kid)}")
            key, algorithms = published.key, published.algorithms
        elif self._public_key is not None:
            key, algorithms = self._public_key, self._public_key_algorithms
        else:
            raise Unauthorized(f"no key is configured for {alg} tokens")
        if alg not in algorithms:
            raise Unauthorized(f"a {alg} token cannot be checked with this key")
        return key

    def _principal_of(self, claims: dict[str, Any]) -> Principal:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not _USER_ID.fullmatch(sub):
            raise Unauthorized("the token's subject is not a valid user id")
        return Principal(UserId(sub), self._admin.held_by(claims))


def _hmac_tokens(settings: Settings, algorithms: frozenset[str]) -> HmacTokens | None:
    """The fast check of HS* tokens, when they are accepted and PyJWT takes the secret as an
    HMAC key (it refuses one that looks like a public key or a certificate)."""
    secret = settings.jwt_secret.get_secret_value().encode()
    hs = sorted(alg for alg in algorithms if alg.startswith("HS"))
    if not hs:
        return None
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except jwt.InvalidKeyError:
        return None
    return HmacTokens(
        secret,
        algorithms=hs,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway=settings.jwt_leeway_seconds,
    )


class _AdminClaim:
    """The claim that makes an admin, and its value (see ``Settings.jwt_admin_claim``)."""

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._path = name.split(".")
        self._value = value

    def held_by(self, claims: dict[str, Any]) -> bool:
        found: Any = claims.get(self._name)
        if found is None and len(self._path) > 1:
            found = claims
            for part in self._path:
                found = found.get(part) if isinstance(found, dict) else None
        if found is True:
            return self._value == "true"
        if isinstance(found, str):
            return found == self._value or self._value in found.split(" ")
        if isinstance(found, list):
            return any(item == self._value for item in found)
        return False


def _shown(value: object) -> str:
    # A header value echoed in a problem: cut short, whatever its size.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT. For development: `flashorder token --user U [--admin]` mints one.",
)


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The dependency behind ``UserDep``: the caller of a request, or a 401."""
    return await _principal(request, credentials)


async def caller(request: Request) -> Principal:
    """What ``authenticated`` answers, for a route that reads its request itself (``direct``)."""
    return await _principal(request, await _bearer(request))


async def _principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if credentials is None:
        raise Unauthorized("a bearer token is required", token_given=False)
    authenticator: Authenticator = request.state.authenticator
    return await authenticator.principal(credentials.credentials)


async def _admin(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if not principal.admin:
        raise Forbidden("this needs an admin token")
    return principal


UserDep = Annotated[Principal, Depends(authenticated)]
AdminDep = Annotated[Principal, Depends(_admin)]

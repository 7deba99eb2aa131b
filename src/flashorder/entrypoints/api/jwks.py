"""The signing keys an identity provider publishes at a JWKS URL, fetched and cached.

PyJWT's ``PyJWKClient`` fetches synchronously and refetches for every unknown ``kid``; this
fetches with aiohttp, bounded by a timeout, and refetches for an unknown ``kid`` at most once
per ``min_refetch`` seconds, so that tokens with made-up key ids cannot turn into a flood of
requests against the provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from flashorder.domain import errors

log = logging.getLogger("flashorder.auth")

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_CURVES = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA"}


@dataclass(frozen=True, slots=True)
class PublishedKey:
    #: What ``jwt.decode`` takes: a cryptography public key.
    key: Any
    #: The ``alg`` values this key checks: the one it was published with, else those of its
    #: type and curve. A token with another ``alg`` never reaches the library with it.
    algorithms: frozenset[str]


def _published(jwk: dict[str, Any]) -> PublishedKey:
    declared = jwk.get("alg")
    if isinstance(declared, str):
        algorithms = frozenset({declared})
    elif jwk.get("kty") == "RSA":
        algorithms = RSA_ALGORITHMS
    elif (curve := _CURVES.get(str(jwk.get("crv")))) is not None:
        algorithms = frozenset({curve})
    else:
        algorithms = frozenset()
    return PublishedKey(jwt.PyJWK(jwk).key, algorithms)


class JwksKeys:
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_age: float,
        min_refetch: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._max_age = max_age
        self._min_refetch = min_refetch
        self._clock = clock
        self._keys: dict[str | None, PublishedKey] | None = None
        self._fetched_at = float("-inf")
        #: While no keys were ever fetched: failed attempts in a row, and until when requests
        #: fail at once instead of each waiting out the timeout against a provider that is down.
        self._failures = 0
        self._retry_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> PublishedKey | None:
        """The key with this id (or the only key, for a token without ``kid``); None if the
        provider does not publish it. Raises Unavailable when the keys cannot be fetched and
        none were fetched before."""
        if self._stale(kid):
            async with self._lock:
                # Another request may have refreshed while this one waited.
                if self._stale(kid):
                    await self._refresh()
        keys = self._keys or {}
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid)

    def _stale(self, kid: str | None) -> bool:
        age = self._clock() - self._fetched_at
        if self._keys is None or age > self._max_age:
            return True
        return kid not in self._keys and age >= self._min_refetch

    async def _refresh(self) -> None:
        if self._keys is None and self._clock() < self._retry_at:
            raise errors.Unavailable("jwks", "the identity provider's keys are unreachable")
        try:
            keys = await self._fetch()
        except errors.Unavailable:
            if self._keys is None:
                # Back off: 1, 2, 4 … seconds, at most ``min_refetch``.
                self._failures += 1
                pause = min(self._min_refetch, 2.0 ** (self._failures - 1))
                self._retry_at = self._clock() + pause
                log.warning("jwks.fetch_failed", extra={"url": self._url, "retry_in": pause})
                raise
            # Keep serving with the keys we have: a provider's hiccup should not lock
            # everybody out. The next attempt waits for ``min_refetch``.
            log.warning("jwks.refresh_failed", extra={"url": self._url})
            self._fetched_at = self._clock() - self._max_age + self._min_refetch
            return
        self._keys = keys
        self._failures = 0
        self._fetched_at = self._clock()

    async def _fetch(self) -> dict[str | None, PublishedKey]:
        try:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self._url, headers={"Accept": "application/json"}) as got,
            ):
                got.raise_for_status()
                data = await got.json(content_type=None)
            listed = data.get("keys") if isinstance(data, dict) else None
            if not isinstance(listed, list):
                raise ValueError("a JWK set is a JSON object with a list of keys")
            keys: dict[str | None, PublishedKey] = {}
            for jwk in listed:
                try:
                    kid = jwk.get("kid") if isinstance(jwk, dict) else None
                    keys[kid if isinstance(kid, str) else None] = _published(jwk)
                except (jwt.PyJWTError, TypeError, ValueError, AttributeError):
                    # A key of a type this service cannot use (PyJWKSet skips those too).
                    continue
            if not keys:
                raise ValueError("the JWK set holds no usable key")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise errors.Unavailable("jwks", str(exc) or type(exc).__name__) from exc
        return keys

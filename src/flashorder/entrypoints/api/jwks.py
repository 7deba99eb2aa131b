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

import aiohttp
import jwt

from flashorder.domain import errors

log = logging.getLogger("flashorder.auth")


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
        self._keys: dict[str | None, jwt.PyJWK] | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
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
        try:
            keys = await self._fetch()
        except errors.Unavailable:
            if self._keys is None:
                raise
            # Keep serving with the keys we have: a provider's hiccup should not lock
            # everybody out. The next attempt waits for ``min_refetch``.
            log.warning("jwks.refresh_failed", extra={"url": self._url})
            self._fetched_at = self._clock() - self._max_age + self._min_refetch
            return
        self._keys = keys
        self._fetched_at = self._clock()

    async def _fetch(self) -> dict[str | None, jwt.PyJWK]:
        try:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self._url, headers={"Accept": "application/json"}) as got,
            ):
                got.raise_for_status()
                data = await got.json(content_type=None)
            if not isinstance(data, dict):
                raise ValueError("a JWK set is a JSON object")
            keyset = jwt.PyJWKSet.from_dict(data)
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            raise errors.Unavailable("jwks", str(exc) or type(exc).__name__) from exc
        return {key.key_id: key for key in keyset.keys}

"""What ``/readyz`` and ``/metrics`` report about the dependencies, read at most once per
``ttl`` per process.

Both routes are open to anyone (probes and scrapers carry no token), and each reading costs
database queries (the outbox backlog, the projectors' status) and a Redis ping. A flood of
them must not turn into a flood of queries: callers within ``ttl`` of a reading share it, and
callers that arrive while a reading is in flight wait for that one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from flashorder.bootstrap import Service

T = TypeVar("T")


class _Shared(Generic[T]):
    def __init__(self, read: Callable[[], Awaitable[T]], *, ttl: float) -> None:
        self._read = read
        self._ttl = ttl
        self._value: tuple[float, T] | None = None
        self._reading: asyncio.Task[T] | None = None

    async def get(self) -> T:
        now = time.monotonic()
        if self._value is not None and now - self._value[0] < self._ttl:
            return self._value[1]
        if self._reading is None:
            self._reading = asyncio.create_task(self._fresh(now))
        # Shielded: a caller that gives up does not cancel the reading others wait for.
        return await asyncio.shield(self._reading)

    async def _fresh(self, started: float) -> T:
        try:
            value = await self._read()
            self._value = (started, value)
            return value
        finally:
            self._reading = None


class Probes:
    """The readiness checks and the read-model lag, each shared for ``ttl`` seconds."""

    def __init__(self, service: Service, *, ttl: float) -> None:
        self._readiness = _Shared(service.readiness, ttl=ttl)
        self._lag = _Shared(service.lag, ttl=ttl)

    async def readiness(self) -> dict[str, str]:
        return await self._readiness.get()

    async def lag(self) -> dict[str, float]:
        return await self._lag.get()

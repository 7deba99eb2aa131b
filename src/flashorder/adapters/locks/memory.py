"""The in-process twin of the Redis lock: tokens, expiring leases, waiters woken on release.

The lock table is only touched by plain (non-async) methods, so every check-and-set runs
without another task interleaving. Leases run on the monotonic clock: a holder whose event
loop stalls past its lease loses the lock, as it would in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from flashorder.adapters.locks.waiting import retry_until_taken
from flashorder.domain import errors

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Lease:
    token: str
    expires_at: float


class MemoryLocks:
    """``Locks`` in process memory, with the Redis locks' semantics."""

    def __init__(
        self,
        *,
        default_wait: float = 5.0,
        default_lease: float = 10.0,
        max_retry_interval: float = 0.1,
    ) -> None:
        self._default_wait = default_wait
        self._default_lease = default_lease
        self._max_retry = max_retry_interval
        self._leases: dict[str, _Lease] = {}
        #: Waiters per lock name, oldest first; a release wakes one of them.
        self._waiters: dict[str, list[asyncio.Event]] = {}

    @asynccontextmanager
    async def hold(
        self, name: str, *, wait: float | None = None, lease: float | None = None
    ) -> AsyncIterator[None]:
        """Hold ``name`` for the body; raises DuplicateInFlight after ``wait`` seconds."""
        wait_s = self._default_wait if wait is None else wait
        lease_s = self._default_lease if lease is None else lease
        token = uuid.uuid4().hex
        await self._acquire(name, token, wait_s, lease_s)
        renewal = asyncio.create_task(self._renew(name, token, lease_s))
        try:
            yield
        finally:
            renewal.cancel()
            if not self._let_go(name, token):
                log.warning("lock.lost_before_release", extra={"lock": name})
            await asyncio.wait([renewal])

    def take_without_owner(self, name: str, lease: float) -> bool:
        """Test support, not part of ``Locks``: take ``name`` for a holder that vanished.

        Nothing renews or releases it, so it frees itself when ``lease`` runs out, like the
        lock of a crashed process. False if the lock is held.
        """
        return self._try(name, uuid.uuid4().hex, lease) is None

    def _live(self, name: str) -> _Lease | None:
        lease = self._leases.get(name)
        if lease is not None and lease.expires_at <= time.monotonic():
            del self._leases[name]
            return None
        return lease

    def _try(self, name: str, token: str, lease: float) -> float | None:
        """None when acquired, else the seconds left on the holder's lease."""
        held = self._live(name)
        now = time.monotonic()
        if held is not None:
            return held.expires_at - now
        self._leases[name] = _Lease(token, now + lease)
        return None

    def _let_go(self, name: str, token: str) -> bool:
        held = self._live(name)
        if held is None or held.token != token:
            return False
        del self._leases[name]
        self._wake_one(name)
        return True

    def _wake_one(self, name: str) -> None:
        for waiter in self._waiters.get(name, ()):
            if not waiter.is_set():
                waiter.set()
                return

    async def _acquire(self, name: str, token: str, wait: float, lease: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if self._try(name, token, lease) is None:
            return
        if loop.time() >= deadline:
            raise errors.DuplicateInFlight(f"lock {name!r}")
        signal = asyncio.Event()
        waiters = self._waiters.setdefault(name, [])
        waiters.append(signal)
        acquired = False
        try:

            async def attempt() -> float | None:
                # Nothing awaited inside: the check-and-set runs without interleaving.
                return self._try(name, token, lease)

            await retry_until_taken(
                name, attempt, signal, deadline=deadline, max_retry_interval=self._max_retry
            )
            acquired = True
        finally:
            waiters.remove(signal)
            if not waiters:
                self._waiters.pop(name, None)
            if not acquired and signal.is_set():
                # Woken but leaving without the lock: pass the wake-up on.
                self._wake_one(name)

    async def _renew(self, name: str, token: str, lease: float) -> None:
        while True:
            await asyncio.sleep(lease / 3)
            held = self._live(name)
            if held is None or held.token != token:
                log.warning("lock.lost_before_renewal", extra={"lock": name})
                return
            held.expires_at = time.monotonic() + lease

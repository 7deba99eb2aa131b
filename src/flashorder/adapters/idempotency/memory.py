"""The in-process twin of the Redis idempotency cache.

No method awaits, so a check and the write that follows it cannot interleave with another
task. Expiry runs on the monotonic clock, like Redis TTLs (immune to wall-clock steps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from flashorder.application.ports import StoredResponse
from flashorder.domain import errors
from flashorder.domain.model import UserId


@dataclass(frozen=True, slots=True)
class _Entry:
    fingerprint: str
    expires_at: float
    #: The serialised answer once the request is done; None while it is in flight.
    #: Kept as bytes so a replay can never share mutable state with the original caller.
    response: bytes | None


class MemoryIdempotencyCache:
    """``IdempotencyCache`` in process memory, with the Redis cache's semantics."""

    def __init__(self, *, inflight_lease: float = 30.0, retention: float = 24 * 3600.0) -> None:
        self._lease = inflight_lease
        self._retention = retention
        self._entries: dict[tuple[UserId, str], _Entry] = {}

    def _live(self, slot: tuple[UserId, str]) -> _Entry | None:
        entry = self._entries.get(slot)
        if entry is not None and entry.expires_at <= time.monotonic():
            del self._entries[slot]
            return None
        return entry

    async def begin(self, user_id: UserId, key: str, fingerprint: str) -> StoredResponse | None:
        slot = (user_id, key)
        entry = self._live(slot)
        if entry is None:
            self._entries[slot] = _Entry(fingerprint, time.monotonic() + self._lease, None)
            return None
        # A different fingerprint wins over "in flight", as in the Redis cache.
        if entry.fingerprint != fingerprint:
            raise errors.IdempotencyKeyReused()
        if entry.response is None:
            raise errors.DuplicateInFlight("a request with this Idempotency-Key")
        stored = orjson.loads(entry.response)
        return StoredResponse(
            fingerprint=entry.fingerprint, status_code=stored["status"], body=stored["body"]
        )

    async def finish(self, user_id: UserId, key: str, response: StoredResponse) -> None:
        answer = orjson.dumps({"status": response.status_code, "body": response.body})
        self._entries[(user_id, key)] = _Entry(
            response.fingerprint, time.monotonic() + self._retention, answer
        )

    async def abandon(self, user_id: UserId, key: str) -> None:
        slot = (user_id, key)
        entry = self._live(slot)
        if entry is not None and entry.response is None:
            del self._entries[slot]

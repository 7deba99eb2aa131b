"""The in-process twin of the Redis token buckets, for the embedded mode and unit tests.

``take`` never awaits, so no other task interleaves with it: as atomic as the script.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flashorder.application.ports import Bucket

# Forgetting full buckets is what the Redis keys' expiry does; here a sweep does it, at most
# this often, so that a stream of new client addresses cannot grow the map without bound.
_SWEEP_EVERY = 10.0


@dataclass(slots=True)
class _State:
    tokens: float
    at: float
    #: When the bucket is full again, hence as good as absent.
    full_at: float


class MemoryRateLimiter:
    """``RateLimiter`` in process memory, with the Redis limiter's semantics."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _State] = {}
        self._swept_at = clock()

    async def take(self, buckets: Sequence[Bucket]) -> float:
        now = self._clock()
        held = [self._tokens(bucket, now) for bucket in buckets]
        # Whole milliseconds, rounded up, as the script answers.
        wait = max(
            (
                math.ceil((1 - tokens) * 1000 / bucket.rate) / 1000
                for bucket, tokens in zip(buckets, held, strict=True)
                if tokens < 1
            ),
            default=0.0,
        )
        if wait == 0:
            # Every bucket has a token: take one from each. Otherwise none is touched.
            for bucket, tokens in zip(buckets, held, strict=True):
                left = tokens - 1
                self._buckets[bucket.key] = _State(
                    tokens=left, at=now, full_at=now + (bucket.burst - left) / bucket.rate
                )
        if now - self._swept_at >= _SWEEP_EVERY:
            self._sweep(now)
        return wait

    def _tokens(self, bucket: Bucket, now: float) -> float:
        state = self._buckets.get(bucket.key)
        if state is None or state.full_at <= now:
            return float(bucket.burst)
        return min(bucket.burst, state.tokens + max(0.0, now - state.at) * bucket.rate)

    def _sweep(self, now: float) -> None:
        self._buckets = {key: s for key, s in self._buckets.items() if s.full_at > now}
        self._swept_at = now

"""Token buckets on Redis: each take is one Lua script, so concurrent takes never overdraw.

Keys (``P`` is the configurable prefix)::

    P:rate:{<bucket key>}   hash: tokens (float), at (ms, the Redis clock)

Each bucket is its own hash tag, so buckets spread over a Redis Cluster; the buckets of one
request are sent in one pipeline (one round trip), each atomic on its own. A bucket expires
once it would have refilled, so idle users and addresses leave nothing behind.

The takes go through the process's ``ScriptBatcher``: the buckets of one request, and those
of the other requests admitted in the same turn of the event loop, share one pipeline of
``EVALSHA``s. (A script registered with redis-py and queued on a pipeline of one's own costs
a ``SCRIPT EXISTS`` round trip before every execution.)
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from flashorder.adapters._redis.batch import ScriptBatcher
from flashorder.adapters._redis.errors import translated
from flashorder.application.ports import Bucket

# KEYS[1]: the bucket. ARGV: rate (tokens a second), burst.
# Returns 0 when a token was taken, else the milliseconds until one will be there.
# The time is Redis's, so every API host refills the bucket by the same clock.
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = burst, now end
-- A clock that stepped back (a failover) must not drain the bucket: no negative refill.
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return wait
"""


class RedisRateLimiter:
    """``RateLimiter`` on Redis (standalone or Cluster). The script reloads after a flush."""

    def __init__(
        self, client: Redis, *, prefix: str = "fo", batcher: ScriptBatcher | None = None
    ) -> None:
        self._prefix = prefix
        self._take = (batcher or ScriptBatcher(client)).register(_TAKE)

    def _key(self, bucket: Bucket) -> str:
        return f"{self._prefix}:rate:{{{bucket.key}}}"

    async def take(self, buckets: Sequence[Bucket]) -> float:
        if not buckets:
            return 0.0
        calls = [([self._key(b)], [b.rate, b.burst]) for b in buckets]
        with translated():
            waits = await self._take.each(calls)
        return max(int(wait) for wait in waits) / 1000

"""Token buckets on Redis: each take is one Lua script over every bucket of the request, so
concurrent takes never overdraw and a refused request takes nothing.

Keys (``P`` is the configurable prefix)::

    P:rate:{rate}:<bucket key>   hash: tokens (float), at (ms, the Redis clock)

One request's buckets (its user's, its address's) are read and taken in one script, which is
what makes "a token only when every bucket has one" atomic: a user refused by their own
bucket takes nothing from the address bucket that every buyer behind one load balancer
shares. A script touches keys of one hash slot on a Redis Cluster, so the buckets share the
hash tag ``{rate}``: one slot holds them all (as ``{stock}`` holds the stock gate), and one
primary serves every take. A bucket expires once it would have refilled, so idle users and
addresses leave nothing behind.

The takes go through the process's ``ScriptBatcher``: the takes of requests admitted in the
same turn of the event loop share one pipeline of ``EVALSHA``s. (A script registered with
redis-py and queued on a pipeline of one's own costs a ``SCRIPT EXISTS`` round trip before
every execution.)
"""

from __future__ import annotations

from collections.abc import Sequence

from flashorder.adapters._redis import keys
from flashorder.adapters._redis.batch import Client, ScriptBatcher
from flashorder.adapters._redis.errors import translated
from flashorder.application.ports import Bucket

# KEYS: the buckets. ARGV: rate (tokens a second) and burst of each, in the order of KEYS.
# Returns 0 when a token was taken from every bucket, else the milliseconds until the emptiest
# will have one; then no bucket is written. The time is Redis's, so every API host refills
# the buckets by the same clock.
_TAKE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local tokens, wait = {}, 0
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local held, at = tonumber(state[1]), tonumber(state[2])
  if held == nil or at == nil then held, at = burst, now end
  -- A clock that stepped back (a failover) must not drain the bucket: no negative refill.
  held = math.min(burst, held + math.max(0, now - at) * rate / 1000)
  if held < 1 then
    wait = math.max(wait, math.ceil((1 - held) * 1000 / rate))
  end
  tokens[i] = held
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local left = tokens[i] - 1
  redis.call('HSET', key, 'tokens', tostring(left), 'at', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((burst - left) * 1000 / rate) + 1000)
end
return 0
"""


class RedisRateLimiter:
    """``RateLimiter`` on Redis (standalone or Cluster). The script reloads after a flush."""

    def __init__(
        self, client: Client, *, prefix: str = "fo", batcher: ScriptBatcher | None = None
    ) -> None:
        self._prefix = prefix
        self._take = (batcher or ScriptBatcher(client)).register(_TAKE)

    def _key(self, bucket: Bucket) -> str:
        return keys.rate(self._prefix, bucket.key)

    async def take(self, buckets: Sequence[Bucket]) -> float:
        if not buckets:
            return 0.0
        names = [self._key(b) for b in buckets]
        args = [value for b in buckets for value in (b.rate, b.burst)]
        with translated():
            wait = await self._take(names, args)
        return int(wait) / 1000

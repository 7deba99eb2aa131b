"""Idempotency keys on Redis: ``P:idem:{user:<userId>}:<key>`` (in the slot of the user's lock)
holds one JSON entry.

    {"state": "inflight", "fp": ..., "claim": ...}            while one request owns the key
    {"state": "done", "fp": ..., "status": ..., "body": ...}  its answer, for the retries

The in-flight entry expires after a lease, so a crashed request frees its key; a finished
one is kept for the retention period. The database holds the durable record.
"""

from __future__ import annotations

import secrets

import orjson

from flashorder.adapters._redis import keys
from flashorder.adapters._redis.batch import Client, ScriptBatcher
from flashorder.adapters._redis.errors import translated
from flashorder.application.ports import StoredResponse
from flashorder.domain import errors
from flashorder.domain.model import UserId

# ARGV: fingerprint, the in-flight entry, lease ms, the claim's token.
# Returns {0} claimed, {1} in flight, {2} fingerprint differs, {3, entry} done.
# A different fingerprint wins over "in flight": the key is being reused for another
# request, which is the client's error (422) whatever the state of the first one.
# An in-flight entry of this claim's own token was written by this same call: the cluster
# client sends a script again when the connection broke before its answer (a failover).
_BEGIN = """
local raw = redis.call('GET', KEYS[1])
if not raw then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return {0}
end
local entry = cjson.decode(raw)
if entry['fp'] ~= ARGV[1] then return {2} end
if entry['state'] == 'done' then return {3, raw} end
if entry['claim'] == ARGV[4] then return {0} end
return {1}
"""

_ABANDON = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['state'] == 'inflight' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_CLAIMED, _IN_FLIGHT, _REUSED = 0, 1, 2


class RedisIdempotencyCache:
    """``IdempotencyCache`` on Redis. One key per user and Idempotency-Key."""

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "fo",
        inflight_lease: float = 30.0,
        retention: float = 24 * 3600.0,
        batcher: ScriptBatcher | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._lease_ms = max(1, int(inflight_lease * 1000))
        self._retention_ms = max(1, int(retention * 1000))
        self._begin = (batcher or ScriptBatcher(client)).register(_BEGIN)
        self._abandon = client.register_script(_ABANDON)

    def _key(self, user_id: UserId, key: str) -> str:
        # The hash tag keeps all keys of one user in one Cluster slot.
        return keys.idempotency(self._prefix, user_id, key)

    async def begin(self, user_id: UserId, key: str, fingerprint: str) -> StoredResponse | None:
        token = secrets.token_hex(8)
        claim = orjson.dumps({"state": "inflight", "fp": fingerprint, "claim": token})
        with translated():
            result = await self._begin(
                keys=[self._key(user_id, key)], args=[fingerprint, claim, self._lease_ms, token]
            )
        code = int(result[0])
        if code == _CLAIMED:
            return None
        if code == _IN_FLIGHT:
            raise errors.DuplicateInFlight("a request with this Idempotency-Key")
        if code == _REUSED:
            raise errors.IdempotencyKeyReused()
        entry = orjson.loads(result[1])
        return StoredResponse(
            fingerprint=entry["fp"], status_code=int(entry["status"]), body=entry["body"]
        )

    async def finish(self, user_id: UserId, key: str, response: StoredResponse) -> None:
        entry = orjson.dumps(
            {
                "state": "done",
                "fp": response.fingerprint,
                "status": response.status_code,
                "body": response.body,
            }
        )
        with translated():
            await self._client.set(self._key(user_id, key), entry, px=self._retention_ms)

    async def abandon(self, user_id: UserId, key: str) -> None:
        with translated():
            await self._abandon(keys=[self._key(user_id, key)])

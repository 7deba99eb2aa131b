"""The stock gate on one Redis: every reservation is one Lua script, so it is all-or-nothing.

Keys (``P`` is the configurable prefix). All of them carry the one hash tag ``{stock}``, so
a multi-product reservation is one script. On Redis Cluster that tag would put the whole
shop on one master: a cluster runs ``ShardedStockGate`` (``redis_cluster.py``) instead.

    P:{stock}:avail:<productId>   string counter, what can still be reserved
    P:{stock}:bought:<productId>  hash userId -> units held by live reservations
    P:{stock}:res:<orderId>       hash: state R (reserved) | C (confirmed) | X (released),
                                  user, n (line count), q:<productId> -> quantity
    P:{stock}:pending             sorted set orderId -> reserve time (ms, Redis clock);
                                  holds exactly the reservations in state R
    P:{stock}:users-known         set of the productIds whose bought hash reconciliation
                                  rebuilt; emptied with everything else when Redis loses
                                  its data, which is how the loss is noticed

The reconciliation scripts (``_VIEW``, ``_CORRECT``) read the reservations named by the
pending set, keys they cannot declare in advance: Redis allows it for scripts without the
strict ``#!lua flags`` header, one Redis being one slot space.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from flashorder.adapters._redis import keys
from flashorder.adapters._redis.batch import Client, ScriptBatcher
from flashorder.adapters._redis.errors import text, translated
from flashorder.adapters.stock._counts import RedisCounts
from flashorder.adapters.stock._lua import ADJUST, CORRECT_COUNT
from flashorder.adapters.stock.lines import merged_lines
from flashorder.application.ports import (
    GateCorrection,
    GateView,
    ReservationLine,
    StockUnknown,
)
from flashorder.domain import errors
from flashorder.domain.model import OrderId, ProductId, UserId

_OK, _UNKNOWN, _SOLD_OUT, _LIMIT = 0, 1, 2, 3
_NO_LIMIT = -1

# KEYS: res, pending, then avail_i, bought_i for each line.
# ARGV: orderId, userId, ttl seconds, then productId_i, qty_i, max_i (-1: none).
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local n = (#KEYS - 2) / 2
for i = 1, n do
  local a = 3 * i
  local qty, max = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local avail = redis.call('GET', KEYS[1 + 2 * i])
  if not avail then return {1, ARGV[a + 1]} end
  if tonumber(avail) < qty then return {2, ARGV[a + 1]} end
  if max >= 0 then
    local bought = tonumber(redis.call('HGET', KEYS[2 + 2 * i], ARGV[2]) or '0')
    if bought + qty > max then return {3, ARGV[a + 1], max} end
  end
end
local fields = {'state', 'R', 'user', ARGV[2], 'n', n}
for i = 1, n do
  local a = 3 * i
  redis.call('DECRBY', KEYS[1 + 2 * i], ARGV[a + 2])
  redis.call('HINCRBY', KEYS[2 + 2 * i], ARGV[2], ARGV[a + 2])
  fields[#fields + 1] = 'q:' .. ARGV[a + 1]
  fields[#fields + 1] = ARGV[a + 2]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[3])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
return {0}
"""

# KEYS: res, pending, then avail_i, bought_i for each stored line. ARGV: orderId, productId_i.
# The caller read the lines beforehand (they never change once written); the script checks
# it was given all of them before writing anything. Returns 1 released, 0 not live, -1 stale.
_RELEASE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'R' and state ~= 'C' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
local n = (#KEYS - 2) / 2
if tonumber(redis.call('HGET', KEYS[1], 'n')) ~= n then return -1 end
local qty = {}
for i = 1, n do
  qty[i] = redis.call('HGET', KEYS[1], 'q:' .. ARGV[1 + i])
  if not qty[i] then return -1 end
end
local user = redis.call('HGET', KEYS[1], 'user')
for i = 1, n do
  -- A missing counter is primed from the database later, which already counts this
  -- release; creating it here from one order's quantity would invent a wrong count.
  if redis.call('EXISTS', KEYS[1 + 2 * i]) == 1 then
    redis.call('INCRBY', KEYS[1 + 2 * i], qty[i])
  end
  if redis.call('HINCRBY', KEYS[2 + 2 * i], user, -tonumber(qty[i])) <= 0 then
    redis.call('HDEL', KEYS[2 + 2 * i], user)
  end
end
redis.call('HSET', KEYS[1], 'state', 'X')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: pending, then res_i. ARGV: orderId_i.
_CONFIRM = """
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == 'R' then
    redis.call('HSET', KEYS[i], 'state', 'C')
    redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return 0
"""


_PENDING = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
"""

# KEYS: avail, pending, users-known. ARGV: reservation key prefix, productId.
# Returns {has count, count, users known, orderId_1, qty_1, ...} for the reservations in
# state R with a line of the product.
_VIEW = """
local raw = redis.call('GET', KEYS[1])
local out = {raw and 1 or 0, tonumber(raw or '0'), redis.call('SISMEMBER', KEYS[3], ARGV[2])}
local field = 'q:' .. ARGV[2]
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local r = redis.call('HMGET', ARGV[1] .. id, 'state', field)
  if r[1] == 'R' and r[2] then
    out[#out + 1] = id
    out[#out + 1] = tonumber(r[2])
  end
end
return out
"""

# KEYS: avail, bought, pending, users-known.
# ARGV: reservation key prefix, productId, database available, raise cap (-1: none),
#       dry run (0|1), n, committed orderId_1..n, rebuild (0|1), then userId, count pairs.
# The in-flight sum is taken here, in the same atomic step as the write, so no reservation
# can slip between reading it and using it. Returns {had count, before, target, after,
# in flight, users whose count the rebuild changed (-1: not rebuilt)}.
_CORRECT = (
    """
local n = tonumber(ARGV[6])
local committed = {}
for i = 1, n do committed[ARGV[6 + i]] = true end
local rebuild = ARGV[7 + n] == '1'
local field = 'q:' .. ARGV[2]
local held, users = 0, {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if not committed[id] then
    local r = redis.call('HMGET', ARGV[1] .. id, 'state', field, 'user')
    if r[1] == 'R' and r[2] then
      held = held + tonumber(r[2])
      users[r[3]] = (users[r[3]] or 0) + tonumber(r[2])
    end
  end
end
local available, cap, dry = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local first_pair, avail_key, bought_key = 8 + n, KEYS[1], KEYS[2]
"""
    + CORRECT_COUNT
    + """
if rebuild and not dry then redis.call('SADD', KEYS[4], ARGV[2]) end
return {raw and 1 or 0, before, target, after, held, rebuilt}
"""
)


class RedisStockGate(RedisCounts):
    """``StockGate`` on one Redis. Scripts reload after SCRIPT FLUSH."""

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "fo",
        reservation_ttl: float = 7 * 24 * 3600.0,
        batcher: ScriptBatcher | None = None,
    ) -> None:
        self._client = client
        self._base = keys.standalone_stock(prefix)
        self._pending_key = f"{self._base}:pending"
        self._users_known_key = f"{self._base}:users-known"
        self._ttl_s = max(1, int(reservation_ttl))
        # Every order's reservation rides in a shared pipeline (see _redis.batch).
        batcher = batcher or ScriptBatcher(client)
        self._reserve = batcher.register(_RESERVE)
        self._adjust = batcher.register(ADJUST)
        self._release = client.register_script(_RELEASE)
        self._confirm = batcher.register(_CONFIRM)
        self._pending = client.register_script(_PENDING)
        self._view = client.register_script(_VIEW)
        self._correct = client.register_script(_CORRECT)

    def _avail(self, product_id: str) -> str:
        return f"{self._base}:avail:{product_id}"

    def _count_key(self, product_id: str) -> str:
        return self._avail(product_id)

    def _bought(self, product_id: str) -> str:
        return f"{self._base}:bought:{product_id}"

    def _res(self, order_id: str) -> str:
        return f"{self._base}:res:{order_id}"

    async def reserve(
        self, order_id: OrderId, user_id: UserId, lines: Sequence[ReservationLine]
    ) -> None:
        merged = merged_lines(lines)
        keys = [self._res(order_id), self._pending_key]
        args: list[str | int] = [order_id, user_id, self._ttl_s]
        for line in merged:
            keys += [self._avail(line.product_id), self._bought(line.product_id)]
            limit = _NO_LIMIT if line.max_per_user is None else line.max_per_user
            args += [line.product_id, line.quantity, limit]
        with translated():
            result = await self._reserve(keys=keys, args=args)
        code = int(result[0])
        if code == _OK:
            return
        product_id = ProductId(text(result[1]))
        if code == _UNKNOWN:
            raise StockUnknown(product_id)
        if code == _SOLD_OUT:
            raise errors.SoldOut(product_id)
        raise errors.LimitReached(product_id, int(result[2]))

    async def confirm(self, *order_ids: OrderId) -> None:
        if not order_ids:
            return
        keys = [self._pending_key, *(self._res(order_id) for order_id in order_ids)]
        with translated():
            await self._confirm(keys=keys, args=list(order_ids))

    async def release(self, order_id: OrderId) -> bool:
        # Two steps keep every key declared to the script (Cluster routing). The lines are
        # immutable, so reading them outside the script is safe; the state is re-checked
        # inside. A -1 can only follow a reservation rewritten in between: read again.
        for _ in range(3):
            with translated():
                stored = await self._client.hgetall(self._res(order_id))
                products = [text(field)[2:] for field in stored if text(field).startswith("q:")]
                keys = [self._res(order_id), self._pending_key]
                for product_id in products:
                    keys += [self._avail(product_id), self._bought(product_id)]
                released = int(await self._release(keys=keys, args=[order_id, *products]))
            if released >= 0:
                return released == 1
        raise errors.Unavailable("redis", f"reservation {order_id!r} kept changing")

    async def pending(self, older_than_seconds: float) -> list[OrderId]:
        age_ms = max(0, int(older_than_seconds * 1000))
        with translated():
            members = await self._pending(keys=[self._pending_key], args=[age_ms])
        return [OrderId(text(member)) for member in members]

    async def set_user_count(self, product_id: ProductId, user_id: UserId, quantity: int) -> None:
        with translated():
            if quantity > 0:
                await self._client.hset(self._bought(product_id), user_id, quantity)
            else:
                await self._client.hdel(self._bought(product_id), user_id)

    async def view(self, product_id: ProductId) -> GateView:
        keys = [self._avail(product_id), self._pending_key, self._users_known_key]
        with translated():
            result = await self._view(keys=keys, args=[self._res(""), product_id])
        pairs = result[3:]
        return GateView(
            available=int(result[1]) if int(result[0]) else None,
            in_flight={OrderId(text(pairs[i])): int(pairs[i + 1]) for i in range(0, len(pairs), 2)},
            users_known=bool(int(result[2])),
        )

    async def correct(
        self,
        product_id: ProductId,
        *,
        available: int,
        committed: Collection[OrderId],
        raise_by_at_most: int | None = None,
        user_counts: Mapping[UserId, int] | None = None,
        dry_run: bool = False,
    ) -> GateCorrection:
        keys = [
            self._avail(product_id),
            self._bought(product_id),
            self._pending_key,
            self._users_known_key,
        ]
        cap = -1 if raise_by_at_most is None else max(0, raise_by_at_most)
        args: list[str | int] = [
            self._res(""),
            product_id,
            available,
            cap,
            int(dry_run),
            len(committed),
            *committed,
            int(user_counts is not None),
        ]
        for user_id, quantity in (user_counts or {}).items():
            args += [user_id, quantity]
        with translated():
            result = await self._correct(keys=keys, args=args)
        had, before, target, after, held, rebuilt = (int(v) for v in result)
        return GateCorrection(
            before=before if had else None,
            target=target,
            after=after,
            in_flight=held,
            users_rebuilt=None if rebuilt < 0 else rebuilt,
        )

"""The waiting rooms on Redis: every step is one Lua script over one product's keys.

Keys of a product's room (``P`` is the configurable prefix, ``Q`` = ``P:{p:<productId>}:q``,
in the product's slot: a script of the room runs on a Redis Cluster too)::

    Q:meta     hash: seed, drawn (1 once the line is drawn), cursor (tickets the line has
               passed), late (late arrivals), joined, admitted, ordered, expired, left,
               leftw (tickets that left while waiting, not yet passed), soldout (0/1),
               allowance and at (the admission rate's bucket)
    Q:line     sorted set ticketId -> score: the draw score (early) or LATE + n (late)
    Q:users    hash userId -> the user's current ticketId
    Q:tickets  hash ticketId -> userId
    Q:st       hash ticketId -> L (left) | O (ordered) | E (expired) | <ms> (admitted until);
               a waiting ticket has no entry
    Q:live     sorted set ticketId -> admitted until (ms): the turns that are on

The line never loses an entry and, once drawn, only grows at its end: a ticket's rank is its
place for good, and the tickets below ``cursor`` are exactly those admitted or skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

from flashorder.adapters._redis import keys
from flashorder.adapters._redis.batch import Client, ScriptBatcher
from flashorder.adapters._redis.errors import text, translated
from flashorder.domain.model import ProductId, UserId
from flashorder.domain.queue import LATE, AdmissionTerms, QueueState, Ticket, TicketStatus

_SUFFIXES = ("meta", "line", "users", "tickets", "st", "live")

# Every script gets the six keys in this order; ``view`` and ``state`` are shared.
_COMMON = """
local META, LINE, USERS, TICKETS, ST, LIVE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local function view(t, now)
  local user = redis.call('HGET', TICKETS, t)
  if not user then return false end
  local st = redis.call('HGET', ST, t)
  local m = redis.call('HMGET', META, 'drawn', 'cursor', 'soldout')
  local status, untl = 'WAITING', -1
  if st == 'L' then status = 'LEFT'
  elseif st == 'O' then status = 'ORDERED'
  elseif st == 'E' then status = 'EXPIRED'
  elseif st then
    untl = tonumber(st)
    if untl > now then status = 'ADMITTED' else status = 'EXPIRED' end
  elseif m[3] == '1' then status = 'SOLD_OUT' end
  local pos, ahead = -1, -1
  if m[1] == '1' then
    local rank = redis.call('ZRANK', LINE, t)
    pos = rank + 1
    if status == 'WAITING' or status == 'SOLD_OUT' then
      ahead = math.max(0, rank - tonumber(m[2] or '0'))
    else
      ahead = 0
    end
  end
  return {t, user, status, pos, ahead, untl}
end
local function state()
  local m = redis.call('HMGET', META, 'drawn', 'cursor', 'joined', 'admitted', 'ordered',
    'expired', 'left', 'leftw', 'soldout', 'seed')
  local cursor = tonumber(m[2] or '0')
  local waiting = redis.call('ZCARD', LINE) - cursor - tonumber(m[8] or '0')
  return {m[1] or '0', cursor, tonumber(m[3] or '0'), waiting, tonumber(m[4] or '0'),
    redis.call('ZCARD', LIVE), tonumber(m[5] or '0'), tonumber(m[6] or '0'),
    tonumber(m[7] or '0'), m[9] or '0', m[10] or ''}
end
"""

# ARGV: userId, new ticketId, seed, now, starts. Returns {1 new | 0 existing, view}.
_JOIN = (
    _COMMON
    + """
local user, now = ARGV[1], tonumber(ARGV[4])
local old = redis.call('HGET', USERS, user)
if old then
  local st = redis.call('HGET', ST, old)
  if st ~= 'L' and st ~= 'E' and not (st and st ~= 'O' and tonumber(st) <= now) then
    return {0, view(old, now)}
  end
end
redis.call('HSETNX', META, 'seed', ARGV[3])
local score
if now < tonumber(ARGV[5]) and redis.call('HGET', META, 'drawn') ~= '1' then
  local seed = redis.call('HGET', META, 'seed')
  score = tonumber(string.sub(redis.sha1hex(seed .. ':' .. user), 1, 13), 16)
else
  score = LATE + redis.call('HINCRBY', META, 'late', 1)
end
local t = ARGV[2]
redis.call('ZADD', LINE, string.format('%.0f', score), t)
redis.call('HSET', USERS, user, t)
redis.call('HSET', TICKETS, t, user)
redis.call('HINCRBY', META, 'joined', 1)
return {1, view(t, now)}
""".replace("LATE", str(LATE))
)

# ARGV: ticketId, now. Returns the view, or false for an unknown ticket.
_LEAVE = (
    _COMMON
    + """
local t, now = ARGV[1], tonumber(ARGV[2])
if not redis.call('HGET', TICKETS, t) then return false end
local st = redis.call('HGET', ST, t)
if not st then
  redis.call('HSET', ST, t, 'L')
  redis.call('HINCRBY', META, 'left', 1)
  redis.call('HINCRBY', META, 'leftw', 1)
elseif st ~= 'L' and st ~= 'O' and st ~= 'E' then
  redis.call('HSET', ST, t, 'L')
  redis.call('ZREM', LIVE, t)
  redis.call('HINCRBY', META, 'left', 1)
end
return view(t, now)
"""
)

_TICKET = _COMMON + "return view(ARGV[1], tonumber(ARGV[2]))"
_STATE = _COMMON + "return state()"

# ARGV: now, starts, available, perSecond (-1: none), window (-1: none), token ms, units per
# turn, burst ms, then the users whose order was seen. Returns the state.
_ADVANCE = (
    _COMMON
    + """
local now, starts = tonumber(ARGV[1]), tonumber(ARGV[2])
if now < starts then return state() end
redis.call('HSET', META, 'drawn', '1')
for i = 9, #ARGV do
  local t = redis.call('HGET', USERS, ARGV[i])
  if t then
    local st = redis.call('HGET', ST, t)
    if st and st ~= 'L' and st ~= 'O' and st ~= 'E' then
      redis.call('HSET', ST, t, 'O')
      redis.call('ZREM', LIVE, t)
      redis.call('HINCRBY', META, 'ordered', 1)
    end
  end
end
local passed = redis.call('ZRANGEBYSCORE', LIVE, '-inf', now)
for _, t in ipairs(passed) do redis.call('HSET', ST, t, 'E') end
if #passed > 0 then
  redis.call('ZREMRANGEBYSCORE', LIVE, '-inf', now)
  redis.call('HINCRBY', META, 'expired', #passed)
end
local available = tonumber(ARGV[3])
redis.call('HSET', META, 'soldout', available <= 0 and '1' or '0')
local live = redis.call('ZCARD', LIVE)
local room = math.ceil(available / tonumber(ARGV[7])) - live
local window = tonumber(ARGV[5])
if window >= 0 then room = math.min(room, window - live) end
local rate = tonumber(ARGV[4])
local allowance = 0
if rate > 0 then
  local b = redis.call('HMGET', META, 'allowance', 'at')
  local at = tonumber(b[2] or ARGV[2])
  -- A clock behind the others' (another host) adds nothing rather than taking back.
  allowance = tonumber(b[1] or '0') + math.max(0, now - at) * rate / 1000
  allowance = math.min(allowance, math.max(rate * tonumber(ARGV[8]) / 1000, 1))
  room = math.min(room, math.floor(allowance))
  redis.call('HSET', META, 'at', string.format('%.0f', math.max(now, at)))
end
local admitted = 0
if room > 0 then
  local cursor = tonumber(redis.call('HGET', META, 'cursor') or '0')
  local untl = string.format('%.0f', now + tonumber(ARGV[6]))
  local skipped = 0
  while admitted < room do
    local batch = redis.call('ZRANGE', LINE, cursor, cursor + (room - admitted) + 63)
    if #batch == 0 then break end
    for _, t in ipairs(batch) do
      cursor = cursor + 1
      if redis.call('HGET', ST, t) then
        skipped = skipped + 1
      else
        redis.call('HSET', ST, t, untl)
        redis.call('ZADD', LIVE, untl, t)
        admitted = admitted + 1
        if admitted == room then break end
      end
    end
  end
  redis.call('HSET', META, 'cursor', cursor)
  redis.call('HINCRBY', META, 'admitted', admitted)
  if skipped > 0 then redis.call('HINCRBY', META, 'leftw', -skipped) end
end
if rate > 0 then
  redis.call('HSET', META, 'allowance', tostring(allowance - admitted))
end
return state()
"""
)


class RedisQueueStore:
    """``QueueStore`` on Redis (standalone or Cluster)."""

    def __init__(
        self, client: Client, *, prefix: str = "fo", batcher: ScriptBatcher | None = None
    ) -> None:
        self._prefix = prefix
        batcher = batcher or ScriptBatcher(client)
        self._join = batcher.register(_JOIN)
        self._leave = batcher.register(_LEAVE)
        self._ticket = batcher.register(_TICKET)
        self._state = batcher.register(_STATE)
        self._advance = batcher.register(_ADVANCE)

    def _keys(self, product_id: ProductId) -> list[str]:
        base = keys.queue(self._prefix, product_id)
        return [f"{base}:{suffix}" for suffix in _SUFFIXES]

    async def join(
        self,
        product_id: ProductId,
        user_id: UserId,
        *,
        ticket_id: str,
        seed: str,
        now_ms: int,
        starts_ms: int,
    ) -> tuple[Ticket, bool]:
        with translated():
            new, view = await self._join(
                self._keys(product_id), [user_id, ticket_id, seed, now_ms, starts_ms]
            )
        return _ticket(product_id, view), int(new) == 1

    async def ticket(self, product_id: ProductId, ticket_id: str, *, now_ms: int) -> Ticket | None:
        with translated():
            view = await self._ticket(self._keys(product_id), [ticket_id, now_ms])
        return _ticket(product_id, view) if view else None

    async def leave(self, product_id: ProductId, ticket_id: str, *, now_ms: int) -> Ticket | None:
        with translated():
            view = await self._leave(self._keys(product_id), [ticket_id, now_ms])
        return _ticket(product_id, view) if view else None

    async def advance(
        self, product_id: ProductId, terms: AdmissionTerms, ordered: Sequence[UserId] = ()
    ) -> QueueState:
        args: list[str | int | float] = [
            terms.now_ms,
            terms.starts_ms,
            terms.available,
            -1 if terms.per_second is None else terms.per_second,
            -1 if terms.window is None else terms.window,
            terms.token_ms,
            terms.units_per_turn,
            terms.burst_ms,
            *ordered,
        ]
        with translated():
            reply = await self._advance(self._keys(product_id), args)
        return _state(reply)

    async def state(self, product_id: ProductId) -> QueueState | None:
        with translated():
            reply = await self._state(self._keys(product_id), [])
        state = _state(reply)
        return state if state.joined else None


def _ticket(product_id: ProductId, view: Sequence[object]) -> Ticket:
    ticket_id, user, status, position, ahead, until = view
    return Ticket(
        ticket_id=text(ticket_id),
        product_id=product_id,
        user_id=text(user),
        status=TicketStatus(text(status)),
        position=None if int(str(position)) < 0 else int(str(position)),
        ahead=None if int(str(ahead)) < 0 else int(str(ahead)),
        admitted_until_ms=None if int(str(until)) < 0 else int(str(until)),
    )


def _state(reply: Sequence[object]) -> QueueState:
    drawn, cursor, joined, waiting, admitted, live, ordered, expired, left, soldout, seed = reply
    return QueueState(
        drawn=text(drawn) == "1",
        cursor=int(str(cursor)),
        joined=int(str(joined)),
        waiting=int(str(waiting)),
        admitted=int(str(admitted)),
        live=int(str(live)),
        ordered=int(str(ordered)),
        expired=int(str(expired)),
        left=int(str(left)),
        sold_out=text(soldout) == "1",
        seed=text(seed),
    )

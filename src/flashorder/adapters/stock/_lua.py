"""Lua shared by both Redis stock gates: what does not depend on where reservations live."""

from __future__ import annotations

#: KEYS: avail. ARGV: delta. Returns {0, new count}, {1} (no count) or {2, count} (below 0).
ADJUST = """
local v = redis.call('GET', KEYS[1])
if not v then return {1} end
if tonumber(v) + tonumber(ARGV[1]) < 0 then return {2, tonumber(v)} end
return {0, redis.call('INCRBY', KEYS[1], ARGV[1])}
"""

#: The end of a ``correct`` script. Expects the locals ``held`` (units in flight), ``users``
#: (userId -> units in flight), ``available`` (the database's figure), ``cap`` (how far a
#: raise may go, -1: no limit), ``rebuild``, ``dry``, ``first_pair`` (ARGV index of the
#: first userId, count pair), ``avail_key`` and ``bought_key``. Sets the count to the
#: database's figure minus what is in flight and, when rebuilding, the per-user counts to
#: the database's plus theirs in flight; leaves ``raw``, ``before``, ``target``, ``after``
#: and ``rebuilt`` (-1: not rebuilt) for the caller's answer.
CORRECT_COUNT = """
local target = available - held
local raw = redis.call('GET', avail_key)
local before = tonumber(raw or '0')
local after = target
if raw and cap >= 0 and target - before > cap then after = before + cap end
local rebuilt = -1
if rebuild then
  for i = first_pair, #ARGV, 2 do
    users[ARGV[i]] = (users[ARGV[i]] or 0) + tonumber(ARGV[i + 1])
  end
  local old = {}
  local flat = redis.call('HGETALL', bought_key)
  for i = 1, #flat, 2 do old[flat[i]] = tonumber(flat[i + 1]) end
  rebuilt = 0
  for user, q in pairs(users) do
    if q > 0 and old[user] ~= q then rebuilt = rebuilt + 1 end
  end
  for user, q in pairs(old) do
    if (users[user] or 0) <= 0 then rebuilt = rebuilt + 1 end
  end
end
if not dry then
  if not raw or after ~= before then
    redis.call('SET', avail_key, string.format('%d', after))
  end
  if rebuild then
    redis.call('DEL', bought_key)
    for user, q in pairs(users) do
      if q > 0 then redis.call('HSET', bought_key, user, string.format('%d', q)) end
    end
  end
end
"""

"""The stock gate sharded by product, for Redis Cluster: each script stays in one slot.

The standalone gate reserves every line of an order in one script, which needs every
product in one slot. Here each product has a slot of its own, so a reservation is a short
saga of single-slot steps, and an order ledger says what each order took:

    P:{r:<n>}:order:<orderId>   the ledger entry: hash state R (reserved) | C (confirmed) |
                                X (released), user, q:<productId> -> quantity
    P:{r:<n>}:pending           sorted set orderId -> begin time (ms, Redis clock); the
                                entries in state R
    P:{p:<id>}:avail            string counter, what can still be reserved
    P:{p:<id>}:bought           hash userId -> units held by live reservations
    P:{p:<id>}:held             hash orderId -> units of unconfirmed lines (in flight)
    P:{p:<id>}:held-by          hash orderId -> userId of those lines
    P:{p:<id>}:line:<orderId>   hash: state R | C | X, user, q: one order's line
    P:{p:<id>}:users-known      set when reconciliation rebuilt the per-user counts

(``n`` is a hash of the order id, ``keys.ledger``.) Every script declares all of its keys.

A reservation, in this order:

1. **Begin**: the ledger entry is written, with every line, and the order joins ``pending``.
   Written before any stock is taken, so whatever is taken afterwards is findable.
2. **Take**, one script per product (all sent at once): each checks its count and the
   user's limit and takes, or refuses. A line that exists already is not taken twice.
3. All taken: done. A refusal: the lines taken are **undone** (given back, their records
   deleted), then the ledger entry is dropped, and the refusal is raised, so that nothing
   is left and the same order may be tried again (as after priming a missing count). A
   Redis error in the middle: nothing more is tried; the entry stays pending.

Releasing reads the entry, releases each line (a line never taken is written as released,
so that a take still on its way cannot take afterwards), then marks the entry X.
Confirming marks the entries C and then the lines C (two rounds, one call per slot each).

If the process dies anywhere in between, the entry is in ``pending``: reconciliation finds
it after ``older_than``, confirms it if its order is live in the database and releases it
otherwise, which gives back every line that was taken and writes off the others. The
buyer of an order cut short never got a 201, so from their side the order did not happen;
their retry carries the same Idempotency-Key.

A Redis failover can lose the entry itself (its master acknowledged it and died before its
replica had it) while a product's master kept the line taken after it. No entry lists that
line, so nothing above would ever give it back: ``correct`` does (``_give_back_orphans``),
for a line of an order the database does not hold, with no entry, taken longer than
``orphan_after`` ago (its key's remaining TTL tells when).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

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

# KEYS: order, pending. ARGV: orderId, userId, ttl, then productId_i, qty_i.
# Returns the state of an entry that exists already, else 'N' (new).
_BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if state then return state end
local fields = {'state', 'R', 'user', ARGV[2]}
for i = 4, #ARGV, 2 do
  fields[#fields + 1] = 'q:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[3])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
return 'N'
"""

# KEYS: avail, bought, held, held-by, line. ARGV: orderId, userId, qty, max (-1: none), ttl.
# Returns {0} taken (or taken before), {1} no count, {2} sold out, {3, max} limit reached.
_TAKE = """
if redis.call('EXISTS', KEYS[5]) == 1 then return {0} end
local avail = redis.call('GET', KEYS[1])
if not avail then return {1} end
local qty, max = tonumber(ARGV[3]), tonumber(ARGV[4])
if tonumber(avail) < qty then return {2} end
if max >= 0 then
  local bought = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
  if bought + qty > max then return {3, max} end
end
redis.call('DECRBY', KEYS[1], qty)
redis.call('HINCRBY', KEYS[2], ARGV[2], qty)
redis.call('HSET', KEYS[3], ARGV[1], qty)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[5], 'state', 'R', 'user', ARGV[2], 'q', qty)
redis.call('EXPIRE', KEYS[5], ARGV[5])
return {0}
"""

# KEYS: avail, bought, held, held-by, line. ARGV: orderId, ttl, undo (0|1).
# Gives a live line's units back. Release (undo 0) leaves the line as X, and writes an X for
# a line never taken; undo (a refused reservation's own steps) deletes the record instead,
# so that the order may be reserved again. Returns 1 when units went back.
_GIVE_BACK = """
local state = redis.call('HGET', KEYS[5], 'state')
if state == 'R' or state == 'C' then
  local user = redis.call('HGET', KEYS[5], 'user')
  local qty = tonumber(redis.call('HGET', KEYS[5], 'q'))
  -- A missing counter is primed from the database later, which already counts this
  -- release; creating it here from one line would invent a wrong count.
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], qty) end
  if redis.call('HINCRBY', KEYS[2], user, -qty) <= 0 then redis.call('HDEL', KEYS[2], user) end
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[5])
elseif state ~= 'X' then
  redis.call('HSET', KEYS[5], 'state', 'X')
  redis.call('EXPIRE', KEYS[5], ARGV[2])
end
if state == 'R' or state == 'C' then return 1 end
return 0
"""

# KEYS: order, pending. ARGV: orderId, drop (0|1). Ends an entry: drop deletes it (a refused
# reservation), otherwise it is marked X. Returns 1 if it was live (R or C).
_END = """
local state = redis.call('HGET', KEYS[1], 'state')
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
elseif state then
  redis.call('HSET', KEYS[1], 'state', 'X')
end
if state == 'R' or state == 'C' then return 1 end
return 0
"""

# KEYS: pending, order_i. ARGV: orderId_i. Marks live entries C; returns, per order, the
# number of its products and their ids (0 for an entry that is gone or released).
_CONFIRM_ORDERS = """
local out = {}
for i = 2, #KEYS do
  local flat = redis.call('HGETALL', KEYS[i])
  local state, products = nil, {}
  for j = 1, #flat, 2 do
    local field = flat[j]
    if field == 'state' then state = flat[j + 1]
    elseif string.sub(field, 1, 2) == 'q:' then products[#products + 1] = string.sub(field, 3) end
  end
  if state == 'R' or state == 'C' then
    if state == 'R' then redis.call('HSET', KEYS[i], 'state', 'C') end
    redis.call('ZREM', KEYS[1], ARGV[i - 1])
    out[#out + 1] = #products
    for _, p in ipairs(products) do out[#out + 1] = p end
  else
    out[#out + 1] = 0
  end
end
return out
"""

# KEYS: held, held-by, line_i. ARGV: orderId_i. The lines are paid for: out of flight.
_CONFIRM_LINES = """
for i = 3, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == 'R' then
    redis.call('HSET', KEYS[i], 'state', 'C')
  end
  redis.call('HDEL', KEYS[1], ARGV[i - 2])
  redis.call('HDEL', KEYS[2], ARGV[i - 2])
end
return 0
"""


_PENDING = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'WITHSCORES')
"""

# KEYS: avail, held, users-known. Returns {has count, count, users known, orderId_1, qty_1, …}.
_VIEW = """
local raw = redis.call('GET', KEYS[1])
local out = {raw and 1 or 0, tonumber(raw or '0'), redis.call('EXISTS', KEYS[3])}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  out[#out + 1] = flat[i]
  out[#out + 1] = tonumber(flat[i + 1])
end
return out
"""

# KEYS: avail, bought, held, held-by, users-known.
# ARGV: database available, raise cap (-1: none), dry run (0|1), n, committed orderId_1..n,
#       rebuild (0|1), then userId, count pairs.
# As the standalone gate's: the in-flight sum and the write are one atomic step.
_CORRECT = (
    """
local n = tonumber(ARGV[4])
local committed = {}
for i = 1, n do committed[ARGV[4 + i]] = true end
local rebuild = ARGV[5 + n] == '1'
local held, users = 0, {}
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do
  if not committed[flat[i]] then
    local q = tonumber(flat[i + 1])
    local user = redis.call('HGET', KEYS[4], flat[i])
    held = held + q
    if user then users[user] = (users[user] or 0) + q end
  end
end
local available, cap, dry = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local first_pair, avail_key, bought_key = 6 + n, KEYS[1], KEYS[2]
"""
    + CORRECT_COUNT
    + """
if not dry then
  -- Lines of live orders are paid for: out of flight for good. (Their confirmation was
  -- lost: the process died first, or a failover dropped the ledger's write.)
  for id in pairs(committed) do
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
  end
  if rebuild then redis.call('SET', KEYS[5], '1') end
end
return {raw and 1 or 0, before, target, after, held, rebuilt}
"""
)


class ShardedStockGate(RedisCounts):
    """``ReconcilableStockGate`` whose every script stays in one slot (see the module
    docstring); for Redis Cluster, and correct on one Redis too."""

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "fo",
        reservation_ttl: float = 7 * 24 * 3600.0,
        orphan_after: float = 120.0,
        batcher: ScriptBatcher | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_s = max(1, int(reservation_ttl))
        self._orphan_after_ms = max(0, int(orphan_after * 1000))
        # Every step rides in the process's shared pipelines, one per node (_redis.batch).
        batcher = batcher or ScriptBatcher(client)
        self._begin = batcher.register(_BEGIN)
        self._take = batcher.register(_TAKE)
        self._give_back = batcher.register(_GIVE_BACK)
        self._end = batcher.register(_END)
        self._confirm_orders = batcher.register(_CONFIRM_ORDERS)
        self._confirm_lines = batcher.register(_CONFIRM_LINES)
        self._adjust = batcher.register(ADJUST)
        self._pending = batcher.register(_PENDING)
        self._view = batcher.register(_VIEW)
        self._correct = batcher.register(_CORRECT)

    # --- keys -------------------------------------------------------------------------

    def _order(self, order_id: str) -> list[str]:
        """The ledger entry of an order and its shard's pending set."""
        base = keys.ledger(self._prefix, order_id)
        return [f"{base}:order:{order_id}", f"{base}:pending"]

    def _p(self, product_id: str, name: str) -> str:
        return f"{keys.product(self._prefix, product_id)}:{name}"

    def _count_key(self, product_id: str) -> str:
        return self._p(product_id, "avail")

    def _line(self, product_id: str, order_id: str) -> list[str]:
        """The keys of one order's line of a product, as the take and give-back scripts
        declare them."""
        return [
            self._p(product_id, "avail"),
            self._p(product_id, "bought"),
            self._p(product_id, "held"),
            self._p(product_id, "held-by"),
            self._p(product_id, f"line:{order_id}"),
        ]

    # --- the saga ---------------------------------------------------------------------

    async def reserve(
        self, order_id: OrderId, user_id: UserId, lines: Sequence[ReservationLine]
    ) -> None:
        # Product order: the refusal reported, when several products refuse, is the first.
        merged = sorted(merged_lines(lines), key=lambda line: line.product_id)
        quantities: list[str | int] = []
        for line in merged:
            quantities += [line.product_id, line.quantity]
        with translated():
            state = text(
                await self._begin(
                    keys=self._order(order_id), args=[order_id, user_id, self._ttl_s, *quantities]
                )
            )
        if state in ("C", "X"):
            # Confirmed or released before: reserving again takes nothing (as the port says).
            return
        answers = await asyncio.gather(
            *(
                self._take(
                    keys=self._line(line.product_id, order_id),
                    args=[
                        order_id,
                        user_id,
                        line.quantity,
                        _NO_LIMIT if line.max_per_user is None else line.max_per_user,
                        self._ttl_s,
                    ],
                )
                for line in merged
            ),
            return_exceptions=True,
        )
        codes: list[list[Any]] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                # Which steps ran is unknown: the entry stays pending, and reconciliation
                # releases it (or confirms it, should a retry commit the order).
                with translated():
                    raise answer
            codes.append(answer)
        refused = [(line, code) for line, code in zip(merged, codes, strict=True) if int(code[0])]
        if not refused:
            return
        taken = [line for line, code in zip(merged, codes, strict=True) if int(code[0]) == _OK]
        await self._undo(order_id, taken)
        line, refusal = refused[0]
        if int(refusal[0]) == _UNKNOWN:
            raise StockUnknown(line.product_id)
        if int(refusal[0]) == _SOLD_OUT:
            raise errors.SoldOut(line.product_id)
        raise errors.LimitReached(line.product_id, int(refusal[1]))

    async def _undo(self, order_id: OrderId, taken: Sequence[ReservationLine]) -> None:
        """Give back what a refused reservation took, then drop its entry."""
        with translated():
            await asyncio.gather(
                *(
                    self._give_back(keys=self._line(line.product_id, order_id),
                                    args=[order_id, self._ttl_s, 1])
                    for line in taken
                )
            )  # fmt: skip
            await self._end(keys=self._order(order_id), args=[order_id, 1])

    async def confirm(self, *order_ids: OrderId) -> None:
        if not order_ids:
            return
        by_shard: dict[str, list[OrderId]] = defaultdict(list)
        for order_id in order_ids:
            by_shard[keys.ledger(self._prefix, order_id)].append(order_id)
        with translated():
            answers = await asyncio.gather(
                *(
                    self._confirm_orders(
                        keys=[f"{shard}:pending", *(self._order(o)[0] for o in orders)],
                        args=list(orders),
                    )
                    for shard, orders in by_shard.items()
                )
            )
            by_product: dict[str, list[OrderId]] = defaultdict(list)
            for orders, answer in zip(by_shard.values(), answers, strict=True):
                at = 0
                for order_id in orders:
                    count = int(answer[at])
                    for product in answer[at + 1 : at + 1 + count]:
                        by_product[text(product)].append(order_id)
                    at += 1 + count
            await asyncio.gather(
                *(
                    self._confirm_lines(
                        keys=[
                            self._p(product_id, "held"),
                            self._p(product_id, "held-by"),
                            *(self._p(product_id, f"line:{o}") for o in orders),
                        ],
                        args=list(orders),
                    )
                    for product_id, orders in by_product.items()
                )
            )

    async def release(self, order_id: OrderId) -> bool:
        order_key = self._order(order_id)[0]
        with translated():
            stored = await self._client.hgetall(order_key)
            entry = {text(k): text(v) for k, v in stored.items()}
            if entry.get("state") not in ("R", "C"):
                return False
            products = [field[2:] for field in entry if field.startswith("q:")]
            # Every line before the entry: an entry marked X with a line still taken would
            # be lost to reconciliation.
            await asyncio.gather(
                *(
                    self._give_back(keys=self._line(product_id, order_id),
                                    args=[order_id, self._ttl_s, 0])
                    for product_id in products
                )
            )  # fmt: skip
            return int(await self._end(keys=self._order(order_id), args=[order_id, 0])) == 1

    # --- counts -----------------------------------------------------------------------

    async def set_user_count(self, product_id: ProductId, user_id: UserId, quantity: int) -> None:
        with translated():
            if quantity > 0:
                await self._client.hset(self._p(product_id, "bought"), user_id, str(quantity))
            else:
                await self._client.hdel(self._p(product_id, "bought"), user_id)

    # --- reconciliation ---------------------------------------------------------------

    async def pending(self, older_than_seconds: float) -> list[OrderId]:
        age_ms = max(0, int(older_than_seconds * 1000))
        shards = [keys.ledger_shard(self._prefix, n) for n in range(keys.LEDGER_SHARDS)]
        with translated():
            answers: list[Any] = await asyncio.gather(
                *(self._pending(keys=[f"{shard}:pending"], args=[age_ms]) for shard in shards)
            )
        # Oldest first across the shards, as the port promises.
        found = [
            (int(flat[i + 1]), text(flat[i])) for flat in answers for i in range(0, len(flat), 2)
        ]
        return [OrderId(order_id) for _, order_id in sorted(found)]

    async def view(self, product_id: ProductId) -> GateView:
        view_keys = [
            self._p(product_id, "avail"),
            self._p(product_id, "held"),
            self._p(product_id, "users-known"),
        ]
        with translated():
            result = await self._view(keys=view_keys)
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
        correct_keys = [
            self._p(product_id, "avail"),
            self._p(product_id, "bought"),
            self._p(product_id, "held"),
            self._p(product_id, "held-by"),
            self._p(product_id, "users-known"),
        ]
        if not dry_run:
            await self._give_back_orphans(product_id, committed)
        cap = -1 if raise_by_at_most is None else max(0, raise_by_at_most)
        args: list[str | int] = [available, cap, int(dry_run), len(committed), *committed]
        args.append(int(user_counts is not None))
        for user_id, quantity in (user_counts or {}).items():
            args += [user_id, quantity]
        with translated():
            result = await self._correct(keys=correct_keys, args=args)
        had, before, target, after, held, rebuilt = (int(v) for v in result)
        return GateCorrection(
            before=before if had else None,
            target=target,
            after=after,
            in_flight=held,
            users_rebuilt=None if rebuilt < 0 else rebuilt,
        )

    async def _give_back_orphans(
        self, product_id: ProductId, committed: Collection[OrderId]
    ) -> None:
        """Give back the lines of the product whose ledger entry a failover lost (see the
        module docstring): not committed, no entry, taken over ``orphan_after`` ago.

        Safe against the write path: an entry is written before any take and outlives its
        lines (an undo deletes the lines first; a release marks both), so a line without an
        entry is one whose entry was lost; and an order older than ``orphan_after`` has no
        request left that could still commit it (as for stale entries, ``reconcile``)."""
        held = self._p(product_id, "held")
        with translated():
            suspects = [
                OrderId(text(order_id))
                for order_id in await self._client.hkeys(held)
                if text(order_id) not in committed
            ]
            if not suspects:
                return
            entries = await asyncio.gather(
                *(self._client.exists(self._order(order_id)[0]) for order_id in suspects)
            )
            lost = [o for o, found in zip(suspects, entries, strict=True) if not int(found)]
            if not lost:
                return
            left = await asyncio.gather(
                *(self._client.pttl(self._p(product_id, f"line:{o}")) for o in lost)
            )
            taken_ms = self._ttl_s * 1000
            orphans = [
                o
                for o, ttl in zip(lost, left, strict=True)
                if int(ttl) > 0 and taken_ms - int(ttl) >= self._orphan_after_ms
            ]
            await asyncio.gather(
                *(
                    self._give_back(keys=self._line(product_id, order_id),
                                    args=[order_id, self._ttl_s, 0])
                    for order_id in orphans
                )
            )  # fmt: skip

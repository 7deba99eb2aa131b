"""Every Redis key of the service, named here, with the hash tag that places it in Redis Cluster.

Redis Cluster runs a script only when all its keys live in one slot, and the slot of a key
is decided by its tag (the part in braces). So the tags decide what can be done atomically:

    {user:<userId>}  the user's idempotency keys, and the lock strategy's buyer lock: one
                     slot per buyer
    {rate}           every rate-limit bucket: one script takes from all of a request's
                     buckets (its user's, its address's) or from none
    {p:<productId>}  a product's count, per-user counts and reservation lines (sharded gate),
                     and the product's waiting room (one script admits a batch)
    {r:<n>}          one of ``LEDGER_SHARDS`` shards of the sharded gate's order ledger
    {stock}          the standalone gate: every product in one slot, for one Redis only

``P`` below is the adapters' configurable prefix (``fo`` by default).
"""

from __future__ import annotations

import zlib

#: Shards of the order ledger: enough that their slots spread over every master of a
#: cluster, few enough that reconciliation reads them all in one round per master.
LEDGER_SHARDS = 64


def lock(prefix: str, name: str) -> str:
    """``P:lock:{<name>}``; the user lock's name is ``user:<userId>``, hence the user's tag."""
    return f"{prefix}:lock:{{{name}}}"


def lock_channel(prefix: str, name: str) -> str:
    return f"{prefix}:lock-released:{{{name}}}"


def idempotency(prefix: str, user_id: str, key: str) -> str:
    """``P:idem:{user:<userId>}:<key>``: in the slot of the user's lock."""
    return f"{prefix}:idem:{{user:{user_id}}}:{key}"


def rate(prefix: str, bucket: str) -> str:
    """``P:rate:{rate}:<bucket>``. A request's buckets (user and client address) are taken
    all-or-nothing by one script, which a cluster runs only on keys of one slot: so every
    bucket shares the tag ``{rate}`` and one master serves the rate limits (a take is one
    short script, as the standalone ``{stock}`` gate's)."""
    return f"{prefix}:rate:{{rate}}:{bucket}"


def standalone_stock(prefix: str) -> str:
    """The standalone gate's base, ``P:{stock}``: one slot, so one script can reserve every
    line of an order. Fine on one Redis; on a cluster it would put the whole shop on one
    master, which is why a cluster runs the sharded gate."""
    return f"{prefix}:{{stock}}"


def product(prefix: str, product_id: str) -> str:
    """The sharded gate's base for one product, ``P:{p:<productId>}``."""
    return f"{prefix}:{{p:{product_id}}}"


def ledger(prefix: str, order_id: str) -> str:
    """The sharded gate's ledger shard of an order, ``P:{r:<n>}``: a stable function of the
    order id, so any process finds the order's entry."""
    return ledger_shard(prefix, zlib.crc32(order_id.encode()) % LEDGER_SHARDS)


def ledger_shard(prefix: str, shard: int) -> str:
    return f"{prefix}:{{r:{shard}}}"


def queue(prefix: str, product_id: str) -> str:
    """A product's waiting room, ``P:{p:<productId>}:q``: in the product's slot."""
    return f"{prefix}:{{p:{product_id}}}:q"

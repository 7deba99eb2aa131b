"""What the Redis adapters do when redis-py's cluster client meets a failover, on the test
run's own Redis Cluster: every failure is the documented 503 (``Unavailable``), and a script
that the client runs twice (its first answer lost) is not taken for another caller's call.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from flashorder.adapters._redis.batch import ScriptBatcher
from flashorder.adapters._redis.cluster import cluster_client
from flashorder.adapters.idempotency.redis import RedisIdempotencyCache
from flashorder.adapters.locks.redis import RedisLocks
from flashorder.adapters.rate_limit.redis import RedisRateLimiter
from flashorder.adapters.stock.redis_cluster import ShardedStockGate
from flashorder.application.ports import Bucket, ReservationLine
from flashorder.domain import errors
from flashorder.domain.model import OrderId, ProductId, UserId

pytestmark = pytest.mark.services


def _nodes(url: str) -> list[tuple[str, int]]:
    listed = url.removeprefix("redis+cluster://").rstrip("/").split(",")
    return [(node.rsplit(":", 1)[0], int(node.rsplit(":", 1)[1])) for node in listed]


@pytest.fixture
async def client(redis_cluster_url: str) -> AsyncIterator[RedisCluster]:
    built = cluster_client(
        _nodes(redis_cluster_url),
        max_connections=200,
        retry=Retry(NoBackoff(), retries=2),
        socket_timeout=5,
        socket_connect_timeout=2,
    )
    try:
        yield built
    finally:
        await built.aclose()


async def test_calls_whose_connections_the_client_closes_under_them_fail_as_unavailable(
    client: RedisCluster,
) -> None:
    """On a failover error redis-py's cluster client closes every node's connections, those
    other commands hold included (``aclose``). Each call caught that way, at whatever step it
    is, fails as ``Unavailable`` or succeeds on the client's retry; never with what the
    half-closed socket raises (an AttributeError, a RuntimeError: a 500)."""
    batcher = ScriptBatcher(client)
    gate = ShardedStockGate(client, batcher=batcher)
    limiter = RedisRateLimiter(client, batcher=batcher)
    idempotency = RedisIdempotencyCache(client, batcher=batcher)
    run = secrets.token_hex(4)
    products = [ProductId(f"{run}-p{n}") for n in range(8)]
    for pid in products:
        await gate.put(pid, 1_000_000)

    async def one(n: int) -> None:
        user = UserId(f"{run}-u{n}")
        match n % 4:
            case 0:
                await gate.available(products[n % 8])
            case 1:
                await limiter.take([Bucket(f"{run}:{user}", 100, 100)])
            case 2:
                await idempotency.begin(user, secrets.token_hex(6), "fp")
            case _:
                order = OrderId(f"{run}-o{n}")
                await gate.reserve(order, user, [ReservationLine(products[n % 8], 1, None)])

    seen: Counter[str] = Counter()
    for round_ in range(60):
        calls = [asyncio.ensure_future(one(round_ * 40 + n)) for n in range(40)]
        # Each round closes the connections at another step of the calls' way.
        for _ in range(round_ % 9):
            await asyncio.sleep(0)
        await client.aclose()
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            seen[type(outcome).__name__ if isinstance(outcome, BaseException) else "ok"] += 1

    assert set(seen) <= {"ok", "Unavailable"}, seen
    assert seen["ok"] > 0


@pytest.fixture
def first_script_answer_lost(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    """The first script call that Redis runs from now on loses its answer: the connection
    breaks before it comes back, as when a master dies. The cluster client then sends the
    call again (its retry), so Redis runs it twice. Returns the calls so lost."""
    real = ClusterNode.execute_command
    lost: list[tuple[object, ...]] = []

    async def execute_command(self: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        result = await real(self, *args, **kwargs)
        if args[0] == "EVALSHA" and not lost:
            lost.append(args)
            raise RedisConnectionError("the connection broke before the answer came")
        return result

    monkeypatch.setattr(ClusterNode, "execute_command", execute_command)
    return lost


async def test_a_lock_whose_taking_was_sent_twice_is_held_by_its_caller(
    client: RedisCluster, first_script_answer_lost: list[tuple[object, ...]]
) -> None:
    """The lock the first run took is the caller's own: the second run must not take it
    for another holder's and wait it out (a 409 duplicate-in-flight after the wait, and
    the buyer's lock held for a whole lease)."""
    locks = RedisLocks(client, default_wait=0.5)
    try:
        async with locks.hold(f"user:{secrets.token_hex(4)}"):
            pass
    finally:
        await locks.close()
    assert len(first_script_answer_lost) == 1


async def test_an_idempotency_key_whose_claim_was_sent_twice_is_claimed_by_its_caller(
    client: RedisCluster, first_script_answer_lost: list[tuple[object, ...]]
) -> None:
    """As for locks: the claim the second run finds is its own, so the request goes on
    instead of meeting itself as a duplicate in flight (a 409)."""
    cache = RedisIdempotencyCache(client)
    user, key = UserId(f"u-{secrets.token_hex(4)}"), secrets.token_hex(8)

    assert await cache.begin(user, key, "fp") is None

    assert len(first_script_answer_lost) == 1
    # Another request with the key still finds it in flight.
    with pytest.raises(errors.DuplicateInFlight):
        await cache.begin(user, key, "fp")

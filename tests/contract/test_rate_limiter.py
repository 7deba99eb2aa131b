"""The RateLimiter contract, run against the Redis token buckets and their in-memory twin."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from flashorder.adapters.rate_limit.memory import MemoryRateLimiter
from flashorder.adapters.rate_limit.redis import RedisRateLimiter
from flashorder.application.ports import Bucket, RateLimiter
from flashorder.domain import errors
from tests import redis_cluster


@pytest.fixture(params=["redis", "cluster", "memory"])
async def limiter(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    prefix = f"test-{uuid.uuid4().hex}"
    client = redis_cluster.contract_client(request, redis_url)
    try:
        yield RedisRateLimiter(client, prefix=prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def bucket(rate: float = 10.0, burst: int = 3) -> Bucket:
    return Bucket(f"user:{uuid.uuid4().hex[:8]}", rate, burst)


async def test_a_fresh_bucket_gives_its_burst_at_once_then_refuses(limiter: RateLimiter) -> None:
    b = bucket(rate=1.0, burst=3)

    taken = [await limiter.take([b]) for _ in range(3)]
    refused = await limiter.take([b])

    assert taken == [0, 0, 0]
    assert 0.9 <= refused <= 1.0


async def test_the_wait_is_how_long_until_the_next_token(limiter: RateLimiter) -> None:
    b = bucket(rate=0.5, burst=1)
    await limiter.take([b])

    wait = await limiter.take([b])

    # Two seconds a token, less what refilled between the takes (generous for a slow machine).
    assert 1.0 <= wait <= 2.0


async def test_a_bucket_refills_at_its_rate(limiter: RateLimiter) -> None:
    b = bucket(rate=1.0, burst=3)
    for _ in range(3):
        await limiter.take([b])
    assert await limiter.take([b]) > 0

    # 1.2 tokens: one to take, and a second only if the next take came 0.8 s late.
    await asyncio.sleep(1.2)

    assert await limiter.take([b]) == 0
    assert await limiter.take([b]) > 0


async def test_a_bucket_never_holds_more_than_its_burst(limiter: RateLimiter) -> None:
    b = bucket(rate=2.0, burst=2)
    await limiter.take([b])

    # 3 tokens, were there room; the third take fails unless it came 0.5 s late.
    await asyncio.sleep(1.5)

    assert [await limiter.take([b]) for _ in range(2)] == [0, 0]
    assert await limiter.take([b]) > 0


async def test_buckets_are_independent(limiter: RateLimiter) -> None:
    busy, idle = bucket(rate=1.0, burst=1), bucket(rate=1.0, burst=1)
    await limiter.take([busy])

    assert await limiter.take([busy]) > 0
    assert await limiter.take([idle]) == 0


async def test_several_buckets_answer_the_longest_wait_and_take_nothing_when_one_refuses(
    limiter: RateLimiter,
) -> None:
    empty, roomy = bucket(rate=1.0, burst=1), bucket(rate=0.5, burst=2)
    await limiter.take([empty])

    wait = await limiter.take([empty, roomy])

    assert 0.9 <= wait <= 1.0
    # The refused take cost the roomy bucket nothing: both its tokens are still there.
    assert await limiter.take([roomy]) == 0
    assert await limiter.take([roomy]) == 0
    assert await limiter.take([roomy]) > 0
    assert await limiter.take([]) == 0


async def test_a_user_refused_by_their_own_bucket_never_drains_the_shared_address_bucket(
    limiter: RateLimiter,
) -> None:
    # Behind a load balancer every buyer shares one address bucket.
    shared = Bucket(f"ip:{uuid.uuid4().hex[:8]}", 0.01, 5)
    greedy = Bucket(f"user:{uuid.uuid4().hex[:8]}", 0.01, 1)
    assert await limiter.take([shared, greedy]) == 0

    refused = await asyncio.gather(*(limiter.take([shared, greedy]) for _ in range(100)))

    assert all(wait > 0 for wait in refused)
    # The other buyers still find the four tokens the greedy one could not take.
    others = [Bucket(f"user:{uuid.uuid4().hex[:8]}", 0.01, 1) for _ in range(5)]
    assert [await limiter.take([shared, other]) for other in others][:4] == [0, 0, 0, 0]
    assert await limiter.take([shared, others[4]]) > 0


async def test_concurrent_takes_over_two_buckets_take_from_both_or_neither(
    limiter: RateLimiter,
) -> None:
    shared = Bucket(f"ip:{uuid.uuid4().hex[:8]}", 0.01, 10)
    users = [Bucket(f"user:{uuid.uuid4().hex[:8]}", 0.01, 2) for _ in range(20)]

    waits = await asyncio.gather(*(limiter.take([shared, users[n % 20]]) for n in range(200)))

    # 10 admitted in all (the shared burst); each took one token from its user as well.
    assert sum(wait == 0 for wait in waits) == 10
    assert await limiter.take([shared]) > 0
    admitted_users = {n % 20 for n, wait in enumerate(waits) if wait == 0}
    for n, user in enumerate(users):
        left = 2 - sum(1 for m, wait in enumerate(waits) if wait == 0 and m % 20 == n)
        assert [await limiter.take([user]) == 0 for _ in range(2)].count(True) == left, (
            n,
            admitted_users,
        )


async def test_200_concurrent_takes_from_a_bucket_of_10_get_exactly_10(
    limiter: RateLimiter,
) -> None:
    b = bucket(rate=0.01, burst=10)

    waits = await asyncio.gather(*(limiter.take([b]) for _ in range(200)))

    assert sum(wait == 0 for wait in waits) == 10


async def test_an_idle_redis_bucket_expires_once_it_would_be_full(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    client = Redis.from_url(redis_url)
    try:
        b = bucket(rate=10.0, burst=5)
        await RedisRateLimiter(client, prefix=prefix).take([b])
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        assert len(keys) == 1
        # One hash tag for every bucket: a take's buckets are one script's keys.
        assert keys[0] == f"{prefix}:rate:{{rate}}:{b.key}".encode()
        # One token short of full refills in 0.1 s; the key lives that plus a second.
        assert 0 < await client.pttl(keys[0]) <= 1_100
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _script_calls(client: Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {
        name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
        for name in ("evalsha", "script|exists", "script|load")
    }


async def test_a_redis_take_is_one_evalsha_for_all_its_buckets_and_survives_a_script_flush(
    redis_url: str,
) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    client = Redis.from_url(redis_url)
    try:
        limiter = RedisRateLimiter(client, prefix=prefix)
        a, b = bucket(rate=0.01, burst=2), bucket(rate=0.01, burst=2)
        await client.script_flush()

        assert await limiter.take([a, b]) == 0  # NOSCRIPT, loaded, sent again: one token each
        before = await _script_calls(client)
        assert await limiter.take([a, b]) == 0
        after = await _script_calls(client)

        # The second take was one EVALSHA and nothing else: no SCRIPT EXISTS, no load.
        assert after["evalsha"] - before["evalsha"] == 1
        assert after["script|exists"] == before["script|exists"]
        assert after["script|load"] == before["script|load"]
        # Each bucket paid one token per take, the retried one included: both are empty now.
        assert await limiter.take([a]) > 0
        assert await limiter.take([b]) > 0
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_an_unreachable_redis_raises_unavailable() -> None:
    client = Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), retries=0),
    )
    try:
        with pytest.raises(errors.Unavailable) as raised:
            await RedisRateLimiter(client).take([bucket()])
        assert raised.value.dependency == "redis"
    finally:
        await client.aclose()

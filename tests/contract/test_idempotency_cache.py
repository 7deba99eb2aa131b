"""The IdempotencyCache contract, run against the Redis cache and its in-memory twin."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from flashorder.adapters.idempotency.memory import MemoryIdempotencyCache
from flashorder.adapters.idempotency.redis import RedisIdempotencyCache
from flashorder.application.ports import IdempotencyCache, StoredResponse
from flashorder.domain import errors
from flashorder.domain.model import UserId
from tests import redis_cluster

SHORT = 0.3


@dataclass(frozen=True)
class Caches:
    """Caches over one store: with the default times, and with one of them cut to ``SHORT``."""

    cache: IdempotencyCache
    short_lease: IdempotencyCache
    short_retention: IdempotencyCache


@pytest.fixture(params=["redis", "cluster", "memory"])
async def caches(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Caches]:
    if request.param == "memory":
        yield Caches(
            cache=MemoryIdempotencyCache(),
            short_lease=MemoryIdempotencyCache(inflight_lease=SHORT),
            short_retention=MemoryIdempotencyCache(retention=SHORT),
        )
        return
    prefix = f"test-{uuid.uuid4().hex}"
    client = redis_cluster.contract_client(request, redis_url)
    try:
        yield Caches(
            cache=RedisIdempotencyCache(client, prefix=prefix),
            short_lease=RedisIdempotencyCache(client, prefix=prefix, inflight_lease=SHORT),
            short_retention=RedisIdempotencyCache(client, prefix=prefix, retention=SHORT),
        )
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def cache(caches: Caches) -> IdempotencyCache:
    return caches.cache


def user() -> UserId:
    return UserId(f"user-{uuid.uuid4().hex[:8]}")


def key() -> str:
    return str(uuid.uuid4())


def answer(fingerprint: str) -> StoredResponse:
    return StoredResponse(
        fingerprint=fingerprint,
        status_code=201,
        body={"orderId": uuid.uuid4().hex, "items": [{"quantity": 1}], "note": "주문 完了"},
    )


async def test_the_first_request_with_a_key_owns_it(cache: IdempotencyCache) -> None:
    assert await cache.begin(user(), key(), "fp") is None


async def test_a_second_request_while_the_first_is_in_flight_is_refused(
    cache: IdempotencyCache,
) -> None:
    u, k = user(), key()
    await cache.begin(u, k, "fp")

    with pytest.raises(errors.DuplicateInFlight):
        await cache.begin(u, k, "fp")


async def test_a_retry_after_the_first_finished_gets_the_stored_answer(
    cache: IdempotencyCache,
) -> None:
    u, k, stored = user(), key(), answer("fp")
    await cache.begin(u, k, "fp")
    await cache.finish(u, k, stored)

    assert await cache.begin(u, k, "fp") == stored
    assert await cache.begin(u, k, "fp") == stored


async def test_a_different_request_with_a_finished_key_is_refused(
    cache: IdempotencyCache,
) -> None:
    u, k = user(), key()
    await cache.begin(u, k, "fp")
    await cache.finish(u, k, answer("fp"))

    with pytest.raises(errors.IdempotencyKeyReused):
        await cache.begin(u, k, "other")


async def test_a_different_request_with_an_in_flight_key_is_refused_as_reuse(
    cache: IdempotencyCache,
) -> None:
    u, k = user(), key()
    await cache.begin(u, k, "fp")

    with pytest.raises(errors.IdempotencyKeyReused):
        await cache.begin(u, k, "other")


async def test_keys_belong_to_one_user(cache: IdempotencyCache) -> None:
    k = key()
    await cache.begin(user(), k, "fp")

    assert await cache.begin(user(), k, "other") is None


async def test_abandoning_frees_the_key(cache: IdempotencyCache) -> None:
    u, k = user(), key()
    await cache.begin(u, k, "fp")

    await cache.abandon(u, k)

    assert await cache.begin(u, k, "other") is None


async def test_abandoning_keeps_a_finished_answer(cache: IdempotencyCache) -> None:
    u, k, stored = user(), key(), answer("fp")
    await cache.begin(u, k, "fp")
    await cache.finish(u, k, stored)

    await cache.abandon(u, k)

    assert await cache.begin(u, k, "fp") == stored


async def test_an_in_flight_claim_ends_with_its_lease(caches: Caches) -> None:
    cache, u, k = caches.short_lease, user(), key()
    await cache.begin(u, k, "fp")

    await asyncio.sleep(SHORT + 0.1)

    assert await cache.begin(u, k, "fp") is None


async def test_a_finished_answer_is_kept_for_the_retention_only(caches: Caches) -> None:
    cache, u, k = caches.short_retention, user(), key()
    await cache.begin(u, k, "fp")
    await cache.finish(u, k, answer("fp"))

    await asyncio.sleep(SHORT + 0.1)

    assert await cache.begin(u, k, "other") is None


async def test_50_concurrent_requests_with_one_key_let_exactly_one_through(
    cache: IdempotencyCache,
) -> None:
    u, k = user(), key()

    async def attempt() -> str:
        try:
            claimed = await cache.begin(u, k, "fp")
        except errors.DuplicateInFlight:
            return "duplicate"
        return "owner" if claimed is None else "replay"

    outcomes = await asyncio.gather(*(attempt() for _ in range(50)))

    assert outcomes.count("owner") == 1
    assert outcomes.count("duplicate") == 49


async def test_an_unreachable_redis_raises_unavailable() -> None:
    client = Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), retries=0),
    )
    cache = RedisIdempotencyCache(client)
    u, k = user(), key()
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: cache.begin(u, k, "fp"),
            lambda: cache.finish(u, k, answer("fp")),
            lambda: cache.abandon(u, k),
        ]
        for call in calls:
            with pytest.raises(errors.Unavailable):
                await call()
    finally:
        await client.aclose()

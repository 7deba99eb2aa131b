"""The script batcher against a real Redis: shared pipelines, each call its own answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from flashorder.adapters._redis.batch import ScriptBatcher

# Adds ARGV[1] to the counter KEYS[1]; fails (a Lua error) when ARGV[1] is "boom".
_ADD = """
if ARGV[1] == 'boom' then return redis.error_reply('boom') end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
async def key(client: Redis) -> AsyncIterator[str]:
    """A counter of this test's own, deleted afterwards."""
    name = f"test-batch-{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        await client.delete(name)


async def test_concurrent_calls_share_one_pipeline_and_each_gets_its_own_answer(
    client: Redis, key: str
) -> None:
    batcher = ScriptBatcher(client)
    add = batcher.register(_ADD)

    answers = await asyncio.gather(*(add(keys=[key], args=[1]) for _ in range(50)))

    assert sorted(answers) == list(range(1, 51))  # each call ran once, atomically
    assert batcher.pipelines == 1
    assert int(await client.get(key) or 0) == 50


async def test_a_lone_call_goes_out_directly(client: Redis, key: str) -> None:
    batcher = ScriptBatcher(client)
    add = batcher.register(_ADD)

    assert await add(keys=[key], args=[3]) == 3
    assert await add(keys=[key], args=[4]) == 7
    assert batcher.pipelines == 0


async def test_calls_after_a_script_flush_load_the_script_and_still_run_once(
    client: Redis, key: str
) -> None:
    add = ScriptBatcher(client).register(_ADD)
    await client.script_flush()

    answers = await asyncio.gather(*(add(keys=[key], args=[2]) for _ in range(10)))

    assert sorted(answers) == list(range(2, 21, 2))
    assert int(await client.get(key) or 0) == 20


async def test_a_failing_script_fails_its_call_alone(client: Redis, key: str) -> None:
    add = ScriptBatcher(client).register(_ADD)

    answers = await asyncio.gather(
        add(keys=[key], args=[1]),
        add(keys=[key], args=["boom"]),
        add(keys=[key], args=[1]),
        return_exceptions=True,
    )

    assert answers[0] == 1
    assert answers[2] == 2
    assert isinstance(answers[1], ResponseError)


async def test_a_cancelled_caller_leaves_the_others_their_answers(client: Redis, key: str) -> None:
    add = ScriptBatcher(client).register(_ADD)

    calls = [asyncio.create_task(add(keys=[key], args=[1])) for _ in range(5)]
    calls[2].cancel()
    answers = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(answers[2], asyncio.CancelledError)
    assert all(isinstance(a, int) for n, a in enumerate(answers) if n != 2)


async def test_an_unreachable_redis_fails_every_call_with_an_error_of_its_own() -> None:
    redis = Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), retries=0),
    )
    try:
        add = ScriptBatcher(redis).register(_ADD)
        answers = await asyncio.gather(
            *(add(keys=["k"], args=[1]) for _ in range(3)), return_exceptions=True
        )
    finally:
        await redis.aclose()

    assert all(isinstance(a, RedisError) for a in answers)
    assert len({id(a) for a in answers}) == 3

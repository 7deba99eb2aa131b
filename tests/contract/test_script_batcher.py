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
    # Redis lost its scripts: the lone call loads it and runs once.
    await client.script_flush()
    assert await add(keys=[key], args=[5]) == 12
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


_ECHO = "return ARGV"


async def test_arguments_reach_the_script_as_redis_encodes_them(client: Redis) -> None:
    echo = ScriptBatcher(client).register(_ECHO)
    args: list[str | bytes | int | float] = ["é", 7, -2, 2.5, b"\x00\xff", ""]

    # Two calls: a pipeline, packed by the batcher.
    answers = await asyncio.gather(echo(args=args), echo(args=["x"]))

    assert answers[0] == [b"\xc3\xa9", b"7", b"-2", b"2.5", b"\x00\xff", b""]
    assert answers[1] == [b"x"]
    # As redis-py refuses them: a boolean is not an argument.
    with pytest.raises(RedisError):
        await asyncio.gather(echo(args=[True]), echo(args=["x"]))


async def test_after_a_failed_script_the_connection_stays_in_step(client: Redis, key: str) -> None:
    add = ScriptBatcher(client).register(_ADD)

    first = await asyncio.gather(
        add(keys=[key], args=["boom"]), add(keys=[key], args=[1]), return_exceptions=True
    )
    second = await asyncio.gather(add(keys=[key], args=[10]), add(keys=[key], args=[100]))

    assert isinstance(first[0], ResponseError)
    assert first[1] == 1
    assert list(second) == [11, 111]  # each reply read by its own call, none left over


async def test_a_connection_cut_by_the_server_is_replaced_and_the_batch_sent_again(
    redis_url: str, client: Redis, key: str
) -> None:
    name = f"batch-{uuid.uuid4().hex[:12]}"
    redis = Redis.from_url(redis_url, client_name=name, retry=Retry(NoBackoff(), retries=1))
    try:
        add = ScriptBatcher(redis).register(_ADD)
        await asyncio.gather(add(keys=[key], args=[1]), add(keys=[key], args=[1]))
        for entry in await client.client_list():
            if entry.get("name") == name:
                await client.client_kill_filter(_id=entry["id"])

        answers = await asyncio.gather(add(keys=[key], args=[1]), add(keys=[key], args=[1]))
    finally:
        await redis.aclose()

    assert sorted(answers) == [3, 4]
    assert int(await client.get(key) or 0) == 4


async def test_replies_later_than_the_socket_timeout_fail_the_batch_and_free_the_connection(
    redis_url: str, key: str
) -> None:
    redis = Redis.from_url(redis_url, socket_timeout=0.2, retry=Retry(NoBackoff(), retries=0))
    # Holds Redis for about 0.5 s, past the client's 0.2 s.
    slow = "local t = redis.call('TIME'); local until_ = t[1] * 1e6 + t[2] + 500000\n" + (
        "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= until_\n"
        "return redis.call('INCRBY', KEYS[1], 1)"
    )
    try:
        batcher = ScriptBatcher(redis)
        spin, add = batcher.register(slow), batcher.register(_ADD)
        # Loaded first: a NOSCRIPT would send the slow call again on its own.
        await redis.script_load(slow)
        await redis.script_load(_ADD)
        answers = await asyncio.gather(
            spin(keys=[key]), add(keys=[key], args=[1]), return_exceptions=True
        )
        await asyncio.sleep(0.5)  # Redis is done with the slow script

        after = await asyncio.gather(add(keys=[key], args=[10]), add(keys=[key], args=[10]))
    finally:
        await redis.aclose()

    assert all(isinstance(a, RedisError) for a in answers), answers
    # The late replies were not read as the next batch's: the connection was closed.
    assert sorted(after) == [12, 22]

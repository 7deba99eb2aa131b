"""The Locks contract, run against the Redis locks and their in-memory twin."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from flashorder.adapters._redis.batch import Client
from flashorder.adapters.locks.memory import MemoryLocks
from flashorder.adapters.locks.redis import RedisLocks
from flashorder.application.ports import Locks
from flashorder.domain import errors
from tests import redis_cluster

# Far above every latency asserted below: a waiter that acquires faster was woken by the
# release itself, not by its fallback poll.
POLL = 2.0
#: A waiter woken by the release takes milliseconds; one that waited for its next poll takes
#: POLL. A bound well between the two proves the wake-up without timing a loaded machine.
WOKEN = POLL / 4
DEFAULT_WAIT = 0.5


@dataclass(frozen=True)
class Rig:
    locks: Locks
    #: The same locks as seen from another process (for the twin: the same object).
    peer: Locks
    #: Takes a lock for a holder that then vanishes: nothing renews or releases it.
    vanish: Callable[[str, float], Awaitable[None]]


def _client(url: str, **options: object) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url, max_connections=32, timeout=10, socket_timeout=5, **options
    )
    return Redis.from_pool(pool)


@pytest.fixture(params=["redis", "cluster", "memory"])
async def rig(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Rig]:
    if request.param == "memory":
        twin = MemoryLocks(default_wait=DEFAULT_WAIT, max_retry_interval=POLL)

        async def vanish_in_memory(name: str, lease: float) -> None:
            assert twin.take_without_owner(name, lease)

        yield Rig(locks=twin, peer=twin, vanish=vanish_in_memory)
        return
    prefix = f"test-{uuid.uuid4().hex}"
    clients: list[Client] = (
        [_client(redis_url), _client(redis_url)]
        if request.param == "redis"
        else [redis_cluster.client(request.getfixturevalue("redis_cluster_url")) for _ in "ab"]
    )
    for c in clients:
        # A cluster client learns the slot map on its first command: before the timing starts.
        await c.ping()
    locks, peer = (
        RedisLocks(c, prefix=prefix, default_wait=DEFAULT_WAIT, max_retry_interval=POLL)
        for c in clients
    )

    async def vanish_in_redis(name: str, lease: float) -> None:
        assert await clients[0].set(locks.key(name), "vanished", px=int(lease * 1000), nx=True)

    try:
        yield Rig(locks=locks, peer=peer, vanish=vanish_in_redis)
    finally:
        await locks.close()
        await peer.close()
        keys = [key async for key in clients[0].scan_iter(match=f"{prefix}:*")]
        if keys:
            await clients[0].delete(*keys)
        for client in clients:
            await client.aclose()


def name() -> str:
    return f"user:{uuid.uuid4().hex}"


async def _is_free(locks: Locks, lock: str) -> bool:
    try:
        async with locks.hold(lock, wait=0):
            return True
    except errors.DuplicateInFlight:
        return False


async def _handoff_delay(
    holder: Locks,
    waiter: Locks,
    lock: str,
    while_waiting: Callable[[], Awaitable[object]] | None = None,
) -> float:
    """Seconds from the holder letting go to the parked waiter holding the lock."""
    loop = asyncio.get_running_loop()
    holding, let_go = asyncio.Event(), asyncio.Event()

    async def hold() -> float:
        async with holder.hold(lock):
            holding.set()
            await let_go.wait()
        return loop.time()

    async def wait() -> float:
        await holding.wait()
        async with waiter.hold(lock, wait=5):
            return loop.time()

    holding_task, waiting_task = asyncio.create_task(hold()), asyncio.create_task(wait())
    await asyncio.sleep(0.3)  # the waiter is parked, its first retries long done
    if while_waiting is not None:
        await while_waiting()
    let_go.set()
    released_at = await holding_task
    return await waiting_task - released_at


async def test_a_free_lock_is_taken_at_once(rig: Rig) -> None:
    lock = name()
    loop = asyncio.get_running_loop()
    started = loop.time()

    async with rig.locks.hold(lock, wait=0):
        # No wait at all (a poll would be POLL): generous for a loaded machine.
        assert loop.time() - started < WOKEN


async def test_the_holder_excludes_everyone_else_until_it_lets_go(rig: Rig) -> None:
    lock = name()

    async with rig.locks.hold(lock):
        assert not await _is_free(rig.peer, lock)
        assert not await _is_free(rig.locks, lock)

    assert await _is_free(rig.peer, lock)


async def test_locks_with_different_names_are_independent(rig: Rig) -> None:
    async with rig.locks.hold(name(), wait=0), rig.peer.hold(name(), wait=0):
        pass


async def test_an_error_in_the_body_propagates_and_lets_go_of_the_lock(rig: Rig) -> None:
    lock = name()

    with pytest.raises(LookupError):
        async with rig.locks.hold(lock):
            raise LookupError("boom")

    assert await _is_free(rig.peer, lock)


async def test_waiting_past_the_timeout_raises_duplicate_in_flight(rig: Rig) -> None:
    lock = name()
    loop = asyncio.get_running_loop()

    async with rig.locks.hold(lock):
        started = loop.time()
        with pytest.raises(errors.DuplicateInFlight, match=lock):
            async with rig.peer.hold(lock, wait=0.2):
                pytest.fail("acquired a held lock")
        assert 0.18 <= loop.time() - started < 1.0


async def test_without_a_wait_the_configured_default_applies(rig: Rig) -> None:
    lock = name()
    loop = asyncio.get_running_loop()

    async with rig.locks.hold(lock):
        started = loop.time()
        with pytest.raises(errors.DuplicateInFlight):
            async with rig.peer.hold(lock):
                pytest.fail("acquired a held lock")
        assert DEFAULT_WAIT - 0.02 <= loop.time() - started < DEFAULT_WAIT + 0.5


async def test_a_waiter_is_woken_as_soon_as_the_holder_lets_go(rig: Rig) -> None:
    assert await _handoff_delay(rig.locks, rig.peer, name()) < WOKEN


async def test_200_concurrent_read_modify_writes_under_one_lock_lose_no_update(
    rig: Rig,
) -> None:
    lock = name()
    counter = 0

    async def increment(locks: Locks) -> None:
        nonlocal counter
        async with locks.hold(lock, wait=30):
            seen = counter
            await asyncio.sleep(0)
            counter = seen + 1

    await asyncio.gather(*(increment(rig.locks if i % 2 else rig.peer) for i in range(200)))

    assert counter == 200


async def test_the_lease_is_renewed_while_the_body_runs(rig: Rig) -> None:
    lock = name()

    async with rig.locks.hold(lock, lease=0.3):
        await asyncio.sleep(1.0)
        assert not await _is_free(rig.peer, lock)


async def test_the_lock_of_a_vanished_holder_frees_itself_when_its_lease_ends(
    rig: Rig,
) -> None:
    lock = name()
    loop = asyncio.get_running_loop()
    await rig.vanish(lock, 0.3)
    started = loop.time()

    async with rig.peer.hold(lock, wait=3):
        waited = loop.time() - started

    # Freed by the lease (0.3 s), not found by a poll (POLL).
    assert 0.25 <= waited < 0.3 + WOKEN


async def test_a_waiter_that_gives_up_does_not_hold_up_the_next(rig: Rig) -> None:
    lock = name()
    loop = asyncio.get_running_loop()
    holding = asyncio.Event()
    let_go = asyncio.Event()

    async def holder() -> float:
        async with rig.locks.hold(lock):
            holding.set()
            await let_go.wait()
        return loop.time()

    async def patient() -> float:
        await holding.wait()
        async with rig.peer.hold(lock, wait=5):
            return loop.time()

    async def impatient() -> None:
        await holding.wait()
        async with rig.peer.hold(lock, wait=60):
            pytest.fail("acquired a held lock")

    holding_task = asyncio.create_task(holder())
    gives_up = asyncio.create_task(impatient())
    waits = asyncio.create_task(patient())
    await asyncio.sleep(0.2)
    gives_up.cancel()
    let_go.set()
    released_at = await holding_task
    acquired_at = await waits

    assert gives_up.cancelled()
    assert acquired_at - released_at < WOKEN


# --- the Redis adapter itself -----------------------------------------------------------------


@pytest.fixture
async def redis_locks(redis_url: str) -> AsyncIterator[tuple[RedisLocks, Redis]]:
    prefix = f"test-{uuid.uuid4().hex}"
    client = _client(redis_url, decode_responses=True, client_name=prefix)
    locks = RedisLocks(client, prefix=prefix, max_retry_interval=POLL)
    try:
        yield locks, client
    finally:
        await locks.close()
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_holder_never_deletes_a_lock_it_no_longer_owns(
    redis_locks: tuple[RedisLocks, Redis], caplog: pytest.LogCaptureFixture
) -> None:
    locks, client = redis_locks
    lock = name()

    with caplog.at_level(logging.WARNING):
        async with locks.hold(lock):
            # Our lease ran out and someone else took the lock meanwhile.
            await client.set(locks.key(lock), "someone-else", px=5000)

    assert await client.get(locks.key(lock)) == "someone-else"
    assert "lock.lost_before_release" in caplog.messages


async def test_a_renewal_that_finds_the_lock_lost_warns_and_lets_the_body_finish(
    redis_locks: tuple[RedisLocks, Redis], caplog: pytest.LogCaptureFixture
) -> None:
    locks, client = redis_locks
    lock = name()
    finished = False

    with caplog.at_level(logging.WARNING):
        async with locks.hold(lock, lease=0.3):
            await client.set(locks.key(lock), "someone-else", px=5000)
            await asyncio.sleep(0.25)
            finished = True

    assert finished
    assert "lock.lost_before_renewal" in caplog.messages


async def test_all_waiters_of_one_instance_share_one_pubsub_connection(
    redis_url: str,
) -> None:
    prefix, tag = f"test-{uuid.uuid4().hex}", f"locks-{uuid.uuid4().hex[:12]}"
    holder_client, waiter_client = _client(redis_url), _client(redis_url, client_name=tag)
    holder = RedisLocks(holder_client, prefix=prefix)
    waiters = RedisLocks(waiter_client, prefix=prefix)
    names = [name() for _ in range(5)]
    holding, let_go = asyncio.Event(), asyncio.Event()

    async def hold_all() -> None:
        async with AsyncExitStack() as stack:
            for lock in names:
                await stack.enter_async_context(holder.hold(lock))
            holding.set()
            await let_go.wait()

    try:
        holder_task = asyncio.create_task(hold_all())
        await holding.wait()
        waiting = [asyncio.create_task(_hold_briefly(waiters, names[i % 5])) for i in range(100)]
        # Until every waiter is parked and subscribed: then all five names share one connection.
        for _ in range(100):
            pubsubs = [
                c
                for c in await waiter_client.client_list()
                if c.get("name") == tag and "P" in c.get("flags", "")
            ]
            assert len(pubsubs) <= 1
            if pubsubs and int(pubsubs[0]["sub"]) == 5:
                break
            await asyncio.sleep(0.05)
        let_go.set()
        await holder_task
        await asyncio.gather(*waiting)

        assert len(pubsubs) == 1
        assert int(pubsubs[0]["sub"]) == 5
    finally:
        await holder.close()
        await waiters.close()
        for client in (holder_client, waiter_client):
            await client.aclose()


async def _hold_briefly(locks: Locks, lock: str) -> None:
    async with locks.hold(lock, wait=10):
        await asyncio.sleep(0)


async def test_waiters_are_woken_again_after_the_pubsub_connection_was_killed(
    redis_locks: tuple[RedisLocks, Redis], caplog: pytest.LogCaptureFixture
) -> None:
    locks, client = redis_locks
    killed = 0

    async def kill_the_feed() -> None:
        nonlocal killed
        me = await client.client_info()
        for peer in await client.client_list():
            if peer["name"] == me["name"] and "P" in peer["flags"]:
                killed += await client.client_kill_filter(_id=peer["id"])
        await asyncio.sleep(0.7)  # the feed reconnects and subscribes again

    delay = await _handoff_delay(locks, locks, name(), while_waiting=kill_the_feed)

    assert killed == 1
    assert "lock.feed_interrupted" in caplog.messages
    assert delay < WOKEN


async def test_the_feed_survives_connection_health_checks(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A health check inside a SUBSCRIBE sent beside the listener's read broke the socket.
    client = _client(redis_url, health_check_interval=0.05)
    locks = RedisLocks(client, prefix=f"test-{uuid.uuid4().hex}", max_retry_interval=POLL)
    try:
        for _ in range(3):
            assert await _handoff_delay(locks, locks, name()) < WOKEN
            await asyncio.sleep(0.1)  # idle and unsubscribed past the interval
    finally:
        await locks.close()
        await client.aclose()

    assert "lock.feed_interrupted" not in caplog.messages


async def test_an_unreachable_redis_raises_unavailable() -> None:
    client = Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), retries=0),
    )
    locks = RedisLocks(client)
    try:
        with pytest.raises(errors.Unavailable):
            async with locks.hold(name()):
                pytest.fail("held a lock without Redis")
    finally:
        await locks.close()
        await client.aclose()

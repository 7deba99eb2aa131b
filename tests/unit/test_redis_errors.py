"""Redis failures reach the application as ``Unavailable``, whatever the client raises."""

from __future__ import annotations

import socket

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from flashorder.adapters._redis.cluster import ClusterConnection, cluster_client
from flashorder.adapters._redis.errors import translated
from flashorder.adapters.idempotency.redis import RedisIdempotencyCache
from flashorder.adapters.locks.redis import RedisLocks
from flashorder.adapters.rate_limit.redis import RedisRateLimiter
from flashorder.adapters.stock.redis_cluster import ShardedStockGate
from flashorder.application.ports import Bucket, ReservationLine
from flashorder.domain import errors
from flashorder.domain.model import OrderId, ProductId, UserId


def test_a_redis_error_is_unavailable() -> None:
    with pytest.raises(errors.Unavailable), translated():
        raise RedisConnectionError("Error 111 connecting to 10.77.0.129:7000.")


@pytest.mark.parametrize(
    "raised",
    [
        RedisClusterException("Redis Cluster cannot be connected. Please provide at least one"),
        SlotNotCoveredError("Slot 866 not covered by the cluster."),
    ],
)
def test_the_cluster_clients_own_failures_are_unavailable(raised: Exception) -> None:
    # Not RedisErrors: before, they went through as they were, a 500.
    with pytest.raises(errors.Unavailable), translated():
        raise raised


def test_another_error_is_not_taken_for_a_redis_failure() -> None:
    with pytest.raises(RuntimeError, match="coroutine"), translated():
        raise RuntimeError("coroutine ignored GeneratorExit")


async def test_a_write_on_a_connection_closed_under_the_command_is_a_connection_error() -> None:
    # What redis-py's cluster client leaves a command whose connection it closed (aclose on
    # a failover error): before, AttributeError ('NoneType' object has no attribute
    # 'writelines'), which its retry and translated() let through as a 500.
    connection = ClusterConnection(host="10.0.0.1", port=7000)
    assert connection._writer is None
    with pytest.raises(RedisConnectionError, match="closed under the command"):
        await connection._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_every_adapter_on_a_cluster_no_node_answers_is_unavailable() -> None:
    # The cluster client cannot build its slot map: RedisClusterException, from every call.
    client = cluster_client(
        [("127.0.0.1", _closed_port())],
        max_connections=4,
        retry=Retry(NoBackoff(), retries=0),
        socket_timeout=1,
        socket_connect_timeout=1,
    )
    gate = ShardedStockGate(client)
    locks = RedisLocks(client, default_wait=0.1)
    user = UserId("u1")
    try:
        calls = [
            gate.available(ProductId("p1")),
            gate.reserve(OrderId("o1"), user, [ReservationLine(ProductId("p1"), 1, None)]),
            gate.release(OrderId("o1")),
            RedisRateLimiter(client).take([Bucket("user:u1", 10, 10)]),
            RedisIdempotencyCache(client).begin(user, "key", "fp"),
        ]
        for call in calls:
            with pytest.raises(errors.Unavailable):
                await call
        with pytest.raises(errors.Unavailable):
            async with locks.hold("user:u1"):
                pass
    finally:
        await locks.close()
        await client.aclose()

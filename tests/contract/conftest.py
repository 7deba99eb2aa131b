"""Fixtures of the contract suites: a migrated database per backend for each module (the
engine and unit of work on it are the root conftest's); the stock gate on Redis (one, and a cluster)
and in memory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from flashorder.adapters.stock.memory import MemoryStockGate
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.adapters.stock.redis_cluster import ShardedStockGate
from flashorder.application.ports import ReconcilableStockGate
from tests import redis_cluster
from tests.support.sql import BACKENDS, migrated_database
from tests.support.stock import drop_keys, redis_client


@pytest.fixture(scope="module", params=BACKENDS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mariadb_url: str
) -> Iterator[str]:
    """One database per backend for the module's tests: they use ids of their own."""
    folder = tmp_path_factory.mktemp("contract")
    with migrated_database(request.param, folder=folder, mariadb_url=mariadb_url) as url:
        yield url


@pytest.fixture(params=["redis", "sharded", "cluster", "memory"])
async def gate(
    request: pytest.FixtureRequest, redis_url: str
) -> AsyncIterator[ReconcilableStockGate]:
    if request.param == "memory":
        yield MemoryStockGate()
        return
    prefix = f"test-{uuid.uuid4().hex}"
    # The sharded gate runs on one Redis too ("sharded"), and is what a cluster runs.
    client = (
        redis_cluster.client(request.getfixturevalue("redis_cluster_url"))
        if request.param == "cluster"
        else redis_client(redis_url)
    )
    try:
        yield (
            RedisStockGate(client, prefix=prefix)
            if request.param == "redis"
            else ShardedStockGate(client, prefix=prefix)
        )
    finally:
        await drop_keys(client, prefix)
        await client.aclose()

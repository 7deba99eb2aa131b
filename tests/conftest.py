"""Where the real services of the test run live (``make test`` starts them), and the fixtures
every suite shares.

Tests that need the services fail (never skip) when they are down: a skipped race proves
nothing. Shared code that is not a fixture lives in ``tests/support``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from tests.redis_cluster import RedisCluster


@pytest.fixture(scope="session")
def mariadb_url() -> str:
    """A MariaDB server URL without a database name; tests create their own databases."""
    return os.environ.get(
        "FLASHORDER_TEST_MARIADB_URL", "mysql+asyncmy://flashorder:flashorder@127.0.0.1:3306"
    )


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("FLASHORDER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return os.environ.get("FLASHORDER_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the suite's ``database`` (each suite's conftest says which), built in the
    test's own event loop, with room for the races' concurrent transactions."""
    built = make_engine(database, pool_size=20)
    yield built
    await built.dispose()


@pytest.fixture
def uow(engine: AsyncEngine) -> SqlUnitOfWorkFactory:
    return SqlUnitOfWorkFactory(engine)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A Redis Cluster of three masters of this test run's own, on free ports (a few seconds
    to start, once): the contract suites run the Redis adapters on it too."""
    cluster = RedisCluster()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()

"""Where the real services of the test run live. ``make test`` starts them.

Tests that need them fail (never skip) when they are down: a skipped race proves nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

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

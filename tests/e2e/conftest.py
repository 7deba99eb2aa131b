"""The API under test, two ways: embedded in-process, and the full stack over real HTTP.

The full stack is real processes: ``flashorder serve --workers 2``, ``flashorder relay`` and
``flashorder projector`` on MariaDB, Redis and Kafka, with a database and topics of its own.
The clients are in ``tests/support/api.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder_bench.stack import Stack
from tests.support.api import Api, HttpApi, InProcessApi, embedded
from tests.support.served import Served
from tests.support.served import served as serve


@pytest.fixture
async def embedded_api(tmp_path: Path) -> AsyncIterator[InProcessApi]:
    async with embedded(tmp_path) as api:
        yield api


@pytest.fixture(scope="session")
def stack(
    mariadb_url: str, redis_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The full stack, once per test session: two API workers, a relay and a projector."""
    running = Stack(
        mariadb_url=mariadb_url,
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        logs=tmp_path_factory.mktemp("stack"),
        redis_db=1,
    )
    try:
        running.up()
        yield running
    finally:
        running.down()


@pytest.fixture
async def stack_api(stack: Stack) -> AsyncIterator[HttpApi]:
    engine = make_engine(stack.database_url, pool_size=5)
    redis = Redis.from_url(stack.redis_url)
    connector = aiohttp.TCPConnector(limit=400)
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            yield HttpApi(session, stack.base, engine, RedisStockGate(redis))
    finally:
        await redis.aclose()
        await engine.dispose()


@pytest.fixture(params=["embedded", pytest.param("stack", marks=pytest.mark.services)])
def api(request: pytest.FixtureRequest) -> Api:
    """Each API test runs against the embedded default and the full stack."""
    fixture: Api = request.getfixturevalue(f"{request.param}_api")
    return fixture


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``flashorder serve`` over real HTTP, once per session (tests/support/served.py)."""
    with serve(tmp_path_factory.mktemp("served")) as running:
        yield running

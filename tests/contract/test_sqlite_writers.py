"""SQLite's one writer, within one process: every writer waits its turn in order, and nothing
that only reads takes a turn. (MariaDB has row locks; these rules do not apply to it.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.engine import begin_writing, make_engine
from flashorder.adapters.sql.migrate import migrate
from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from flashorder.bootstrap import build
from flashorder.config import Settings
from flashorder.domain.model import ProductId


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'writers.db'}"
    migrate(url)
    return url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    found = Settings(database_url=None, redis_url=None, kafka_bootstrap=None, data_dir=tmp_path)
    migrate(found.effective_database_url)
    return found


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    built = make_engine(database, pool_size=8)
    try:
        yield built
    finally:
        await built.dispose()


async def test_writers_of_every_kind_take_their_turns_in_the_order_they_came(
    engine: AsyncEngine,
) -> None:
    uow = SqlUnitOfWorkFactory(engine)
    order: list[str] = []

    async def by_unit_of_work(name: str) -> None:
        async with uow() as work:
            order.append(name)
            await work.commit()

    async def by_plain_transaction(name: str) -> None:
        async with begin_writing(engine) as conn:
            order.append(name)
            await conn.execute(text("SELECT 1"))

    async with uow() as holder:
        # Queued behind the holder, alternating kinds: SQLite's busy handler alone would let
        # the plain transactions poll and lose their turns to the units of work.
        waiters = []
        for i in range(6):
            work = by_plain_transaction if i % 2 else by_unit_of_work
            waiters.append(asyncio.create_task(work(f"w{i}")))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert order == [], "nobody writes while the holder's transaction is open"
        await holder.commit()
    async with asyncio.timeout(10):
        await asyncio.gather(*waiters)
    assert order == [f"w{i}" for i in range(6)]


async def test_the_readiness_probe_answers_while_a_writer_holds_the_database(
    settings: Settings,
) -> None:
    async with build(settings, background=False) as service:
        holder = SqlUnitOfWorkFactory(service.engine)()
        async with holder:
            await holder.products.get(ProductId("nothing-here"))
            async with asyncio.timeout(1.5):
                checks = await service.readiness()
            await holder.commit()
    assert checks["database"] == "ok"

"""The OutboxRelayStore contract on SQLite and MariaDB.

The tests of one module share a database, so each starts by publishing whatever an earlier
test left unpublished.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.outbox import SqlOutboxRelayStore
from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from flashorder.domain.events import ORDER_CREATED, Event
from flashorder.domain.model import ProductId, UserId, stock_changed
from tests.support.sql import (
    new_id,
    new_order,
    new_product,
    now,
)


@pytest.fixture
async def store(engine: AsyncEngine) -> SqlOutboxRelayStore:
    store = SqlOutboxRelayStore(engine)
    while True:
        async with store.claim(1000) as batch:
            if not batch.events:
                return store


def is_mariadb(engine: AsyncEngine) -> bool:
    return engine.dialect.name != "sqlite"


async def record(uow: SqlUnitOfWorkFactory, count: int) -> list[Event]:
    """Commit ``count`` events, one unit of work each, and return them in commit order."""
    events = []
    for _ in range(count):
        order = new_order(UserId(new_id("user")), [(ProductId(new_id("prd")), 1)])
        events += order.events
        async with uow() as work:
            await work.orders.add(order)
            await work.commit()
    return events


async def test_claim_hands_out_events_oldest_first_then_marks_them_published(
    store: SqlOutboxRelayStore, uow: SqlUnitOfWorkFactory
) -> None:
    events = await record(uow, 5)
    assert await store.backlog() == 5
    async with store.claim(3) as batch:
        assert list(batch.events) == events[:3]
    assert await store.backlog() == 2
    async with store.claim(3) as batch:
        assert list(batch.events) == events[3:]
    async with store.claim(3) as batch:
        assert list(batch.events) == []
    assert await store.backlog() == 0


async def test_events_come_out_exactly_as_they_went_in(
    store: SqlOutboxRelayStore, uow: SqlUnitOfWorkFactory
) -> None:
    product = new_product()
    order = new_order(UserId(new_id("user")), [(product.product_id, 3)])
    events = [*order.events, stock_changed(product, at=now())]
    async with uow() as work:
        await work.orders.add(order)
        work.record(*events[1:])
        await work.commit()
    async with store.claim(10) as batch:
        claimed = list(batch.events)
    assert claimed == events
    assert claimed[0].type == ORDER_CREATED
    assert claimed[0].payload == order.snapshot()
    assert claimed[0].occurred_at.utcoffset() == timedelta(0)


async def test_a_failed_publish_leaves_the_events_for_the_next_claim(
    store: SqlOutboxRelayStore, uow: SqlUnitOfWorkFactory
) -> None:
    events = await record(uow, 2)
    with pytest.raises(ConnectionError):  # noqa: PT012 - the claim's body is what fails
        async with store.claim(10) as batch:
            assert list(batch.events) == events
            raise ConnectionError("broker down")
    assert await store.backlog() == 2
    async with store.claim(10) as batch:
        assert list(batch.events) == events


async def test_rolled_back_work_leaves_nothing_to_publish(
    store: SqlOutboxRelayStore, uow: SqlUnitOfWorkFactory
) -> None:
    order = new_order(UserId(new_id("user")), [(ProductId(new_id("prd")), 1)])
    async with uow() as work:
        await work.orders.add(order)
        work.record(stock_changed(new_product(), at=now()))
    assert await store.backlog() == 0
    async with store.claim(10) as batch:
        assert list(batch.events) == []


async def test_purge_deletes_only_published_events_older_than_the_cutoff(
    store: SqlOutboxRelayStore, uow: SqlUnitOfWorkFactory
) -> None:
    await record(uow, 3)
    async with store.claim(10) as batch:
        assert len(batch.events) == 3
    waiting = await record(uow, 2)
    assert await store.purge(now() - timedelta(hours=1)) == 0
    assert await store.purge(now() + timedelta(seconds=1)) >= 3
    assert await store.purge(now() + timedelta(seconds=1)) == 0
    assert await store.backlog() == 2
    async with store.claim(10) as batch:
        assert list(batch.events) == waiting


async def test_concurrent_claims_take_disjoint_batches(
    store: SqlOutboxRelayStore, uow: SqlUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    if not is_mariadb(engine):
        pytest.skip("embedded mode runs one relay: SQLite claims do not lock rows")
    events = await record(uow, 6)
    # The first relay still holds its rows while the second claims: the second skips them.
    async with store.claim(3) as first, store.claim(10) as second:
        assert list(first.events) == events[:3]
        assert list(second.events) == events[3:]
    assert await store.backlog() == 0


@pytest.mark.slow
async def test_relays_racing_over_the_outbox_publish_every_event_once(
    store: SqlOutboxRelayStore, uow: SqlUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    if not is_mariadb(engine):
        pytest.skip("embedded mode runs one relay: SQLite claims do not lock rows")
    events = await record(uow, 120)
    published: list[Event] = []

    async def relay() -> None:
        while True:
            async with store.claim(7) as batch:
                if not batch.events:
                    return
                # A slow broker: the other relays must work around the rows held here.
                await asyncio.sleep(0.005)
                published.extend(batch.events)

    async with asyncio.TaskGroup() as relays:
        for _ in range(4):
            relays.create_task(relay())
    counts = Counter(e.event_id for e in published)
    assert set(counts) == {e.event_id for e in events}
    assert max(counts.values()) == 1
    assert await store.backlog() == 0


async def test_an_events_trace_context_is_stored_with_its_row_and_claimed_with_it(
    store: SqlOutboxRelayStore, uow: SqlUnitOfWorkFactory
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    order = new_order(UserId(new_id("user")), [(ProductId(new_id("prd")), 1)])
    order.events[:] = [replace(e, traceparent=traceparent) for e in order.events]
    traced_id = order.events[0].event_id
    untraced = await record(uow, 1)
    async with uow() as work:
        await work.orders.add(order)
        await work.commit()
    async with store.claim(10) as batch:
        claimed = {e.event_id: e.traceparent for e in batch.events}
    assert claimed[traced_id] == traceparent
    assert claimed[untraced[0].event_id] is None

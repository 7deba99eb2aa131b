"""The event bus contract (EventPublisher + EventConsumer), run against Kafka and its twin.

The Kafka topics are shared with every other test and process: each test uses its own
consumer groups, started at the end of the topics, and counts only the events it published.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

import pytest

from flashorder.adapters.events.kafka_consumer import KafkaEventConsumer
from flashorder.adapters.events.kafka_publisher import KafkaEventPublisher
from flashorder.adapters.events.memory import MemoryEventBus
from flashorder.adapters.events.topics import ensure_topics
from flashorder.application.ports import EventConsumer, EventPublisher
from flashorder.domain.events import ORDER_CANCELLED, ORDER_CREATED, STOCK_CHANGED, Event


class ConsumerFactory(Protocol):
    def __call__(self, group_id: str) -> AbstractAsyncContextManager[EventConsumer]: ...


@dataclass
class Bus:
    publisher: EventPublisher
    consumer: ConsumerFactory


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.services)])
async def bus(request: pytest.FixtureRequest, kafka_bootstrap: str) -> AsyncIterator[Bus]:
    if request.param == "memory":
        memory = MemoryEventBus()

        @asynccontextmanager
        async def memory_consumer(group_id: str) -> AsyncIterator[EventConsumer]:
            async with memory.consumer(group_id) as consumer:
                yield consumer

        yield Bus(memory, memory_consumer)
        return

    await ensure_topics(kafka_bootstrap)  # a no-op once they exist

    @asynccontextmanager
    async def kafka_consumer(group_id: str) -> AsyncIterator[EventConsumer]:
        # A new group starts at the end of the topics (history belongs to other tests),
        # pinned before the test publishes so that no event of the test is skipped.
        async with KafkaEventConsumer(
            kafka_bootstrap, group_id=group_id, start_from="latest", timeout=10.0
        ) as consumer:
            await consumer.pin_start()
            yield consumer

    async with KafkaEventPublisher(kafka_bootstrap, timeout=10.0) as publisher:
        yield Bus(publisher, kafka_consumer)


def group() -> str:
    return f"test-{uuid.uuid4().hex}"


def order_events(n: int) -> list[Event]:
    """``n`` created orders, then every third of them cancelled."""
    at = datetime(2024, 7, 1, 12, 0, 0, 123456, tzinfo=UTC)
    created = []
    for i in range(n):
        order_id = str(uuid.uuid4())
        created.append(
            Event(
                type=ORDER_CREATED,
                aggregate_id=order_id,
                aggregate_version=1,
                occurred_at=at + timedelta(seconds=i),
                payload={"orderId": order_id, "status": "CREATED", "items": [{"n": i}]},
            )
        )
    cancelled = [
        Event(
            type=ORDER_CANCELLED,
            aggregate_id=e.aggregate_id,
            aggregate_version=2,
            occurred_at=e.occurred_at + timedelta(minutes=1),
            payload={**e.payload, "status": "CANCELLED"},
        )
        for e in created[::3]
    ]
    return created + cancelled


async def collect(
    consumer: EventConsumer,
    ids: Collection[UUID],
    *,
    keep: Collection[UUID] = (),
    deadline: float = 30.0,
) -> list[Event]:
    """Fetch until every one of ``ids`` came (or the deadline), then until the consumer is
    caught up (an empty fetch). Returns the fetched events of ``ids`` and ``keep``, duplicates
    included, in fetch order."""
    wanted = set(ids)
    kept = wanted | set(keep)
    seen: list[Event] = []
    give_up = time.monotonic() + deadline
    while not wanted.issubset(e.event_id for e in seen) and time.monotonic() < give_up:
        batch = await consumer.fetch(500, 0.5)
        seen.extend(e for e in batch if e.event_id in kept)
    while batch := await consumer.fetch(500, 0.5):
        seen.extend(e for e in batch if e.event_id in kept)
    return seen


# --- delivery ----------------------------------------------------------------------------


async def test_published_events_are_fetched_exactly_as_published(bus: Bus) -> None:
    async with bus.consumer(group()) as consumer:
        sent = order_events(5)
        sent.append(
            Event(
                type=STOCK_CHANGED,
                aggregate_id="PRD_1",
                aggregate_version=7,
                occurred_at=datetime(2024, 7, 1, tzinfo=UTC),
                payload={"productId": "PRD_1", "stock": 10, "available": 0, "ratio": 0.5},
            )
        )
        await bus.publisher.publish(sent)

        got = await collect(consumer, [e.event_id for e in sent])

    assert sorted(got, key=lambda e: str(e.event_id)) == sorted(sent, key=lambda e: str(e.event_id))


async def test_events_of_one_aggregate_and_type_are_fetched_in_publish_order(bus: Bus) -> None:
    # Each event type has its own topic, so only events of one type keep their order; the
    # read model relies on aggregate versions, not on the order across types.
    at = datetime.now(UTC)
    products = [f"PRD_{uuid.uuid4().hex}" for _ in range(20)]
    sent = [
        Event(STOCK_CHANGED, p, v, at, {"productId": p, "stock": v, "available": v})
        for v in range(1, 4)
        for p in products
    ]
    async with bus.consumer(group()) as consumer:
        await bus.publisher.publish(sent[:30])
        await bus.publisher.publish(sent[30:])

        got = await collect(consumer, [e.event_id for e in sent])

    versions: dict[str, list[int]] = {}
    for e in got:
        versions.setdefault(e.aggregate_id, []).append(e.aggregate_version)
    assert len(got) == len(sent)
    assert versions == {p: [1, 2, 3] for p in products}


async def test_fetch_returns_at_most_max_events(bus: Bus) -> None:
    async with bus.consumer(group()) as consumer:
        await bus.publisher.publish(order_events(30))
        await asyncio.sleep(0.5)

        batch = await consumer.fetch(7, 5.0)

    assert 1 <= len(batch) <= 7


async def test_fetch_waits_at_most_its_timeout_for_events(bus: Bus) -> None:
    async with bus.consumer(group()) as consumer:
        started = time.monotonic()
        batch = await consumer.fetch(100, 0.3)
        took = time.monotonic() - started

    # This test published nothing; on the shared topics another process might have.
    assert took < 3.0
    if not batch:
        assert took >= 0.25


async def test_a_publish_with_an_unknown_event_type_is_refused_whole(bus: Bus) -> None:
    good = order_events(1)
    bad = Event(
        type="order.exploded",
        aggregate_id="x",
        aggregate_version=1,
        occurred_at=datetime.now(UTC),
        payload={},
    )
    async with bus.consumer(group()) as consumer:
        with pytest.raises(ValueError, match="no topic"):
            await bus.publisher.publish([*good, bad])
        marker = order_events(1)  # published after the refused batch: fetched after it too
        await bus.publisher.publish(marker)
        got = await collect(consumer, [e.event_id for e in marker], keep=[e.event_id for e in good])

    assert sorted(e.aggregate_version for e in got) == [1, 2]
    assert {e.event_id for e in got} == {e.event_id for e in marker}


# --- at-least-once -----------------------------------------------------------------------


async def test_events_fetched_but_not_committed_are_fetched_again_by_the_next_member(
    bus: Bus,
) -> None:
    g = group()
    sent = order_events(50)
    ids = [e.event_id for e in sent]
    async with bus.consumer(g) as first:
        await bus.publisher.publish(sent)
        assert len(await collect(first, ids)) == len(sent)
        # No commit: the member "crashes" after fetching.

    async with bus.consumer(g) as second:
        again = await collect(second, ids)

    assert Counter(e.event_id for e in again) == Counter(ids)


async def test_committed_events_are_not_fetched_again_by_the_next_member(bus: Bus) -> None:
    g = group()
    before, after = order_events(20), order_events(20)
    async with bus.consumer(g) as first:
        await bus.publisher.publish(before)
        assert len(await collect(first, [e.event_id for e in before])) == len(before)
        await first.commit()

    await bus.publisher.publish(after)
    async with bus.consumer(g) as second:
        got = await collect(second, [e.event_id for e in after], keep=[e.event_id for e in before])

    assert {e.event_id for e in got} == {e.event_id for e in after}


async def test_a_new_group_does_not_share_the_commits_of_another(bus: Bus) -> None:
    sent = order_events(10)
    ids = [e.event_id for e in sent]
    async with bus.consumer(group()) as one, bus.consumer(group()) as other:
        await bus.publisher.publish(sent)
        assert len(await collect(one, ids)) == len(sent)
        await one.commit()

        assert len(await collect(other, ids)) == len(sent)


# --- lag ---------------------------------------------------------------------------------


async def test_lag_counts_published_events_until_they_are_committed(bus: Bus) -> None:
    async with bus.consumer(group()) as consumer:
        sent = order_events(25)
        await bus.publisher.publish(sent)

        assert await consumer.lag() >= len(sent)

        await collect(consumer, [e.event_id for e in sent])
        assert await consumer.lag() >= len(sent), "fetched is not applied: still lag"

        # Other writers to the shared topics may add events meanwhile: drain them too.
        for _ in range(10):
            while await consumer.fetch(500, 0.5):
                pass
            await consumer.commit()
            if await consumer.lag() == 0:
                break
        assert await consumer.lag() == 0

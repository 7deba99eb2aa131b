"""The Kafka publisher and consumer against the real broker.

The topics are shared with every other test and process: each test uses its own consumer
groups, pinned at the end of the topics before it publishes, and counts only its own events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import OutOfOrderSequenceNumber

from flashorder.adapters.events.kafka_consumer import KafkaEventConsumer
from flashorder.adapters.events.kafka_publisher import KafkaEventPublisher
from flashorder.adapters.events.topics import TOPICS, ensure_topics
from flashorder.application.ports import JsonObject
from flashorder.application.projector import ProjectorStats, run_projector
from flashorder.domain import errors
from flashorder.domain.events import ORDER_CREATED, STOCK_CHANGED, Event
from flashorder.domain.model import OrderId, ProductId, UserId

pytestmark = pytest.mark.services


@pytest.fixture
async def bootstrap(kafka_bootstrap: str) -> str:
    await ensure_topics(kafka_bootstrap)
    return kafka_bootstrap


@pytest.fixture
async def publisher(bootstrap: str) -> AsyncIterator[KafkaEventPublisher]:
    async with KafkaEventPublisher(bootstrap, timeout=10.0) as p:
        yield p


@asynccontextmanager
async def member(bootstrap: str, group_id: str) -> AsyncIterator[KafkaEventConsumer]:
    async with KafkaEventConsumer(bootstrap, group_id=group_id, start_from="latest") as c:
        await c.pin_start()
        yield c


def group() -> str:
    return f"test-{uuid.uuid4().hex}"


def created(n: int) -> list[Event]:
    at = datetime.now(UTC)
    events = []
    for i in range(n):
        order_id = str(uuid.uuid4())
        events.append(Event(ORDER_CREATED, order_id, 1, at, {"orderId": order_id, "n": i}))
    return events


async def fetch_until(
    consumer: KafkaEventConsumer,
    ids: Collection[UUID],
    *,
    keep: Collection[UUID] = (),
    deadline: float = 60.0,
) -> list[Event]:
    """Fetch until all ``ids`` came, then until caught up (an empty fetch); returns the
    fetched events of ``ids`` and ``keep``, duplicates included."""
    wanted = set(ids)
    kept = wanted | set(keep)
    got: list[Event] = []
    give_up = time.monotonic() + deadline
    while not wanted.issubset(e.event_id for e in got) and time.monotonic() < give_up:
        got.extend(e for e in await consumer.fetch(500, 0.5) if e.event_id in kept)
    while batch := await consumer.fetch(500, 0.5):
        got.extend(e for e in batch if e.event_id in kept)
    return got


# --- the wire form -------------------------------------------------------------------------


async def test_an_event_travels_keyed_by_its_aggregate_as_the_json_envelope(
    bootstrap: str, publisher: KafkaEventPublisher
) -> None:
    product_id = f"PRD_{uuid.uuid4().hex}"
    at = datetime(2024, 7, 1, 12, 0, 0, 500, tzinfo=UTC)
    events = [
        Event(STOCK_CHANGED, product_id, v, at, {"productId": product_id, "stock": v})
        for v in (1, 2, 3)
    ]
    # No group: it is assigned every partition of the topic and starts at their ends.
    raw = AIOKafkaConsumer(STOCK_CHANGED, bootstrap_servers=bootstrap, auto_offset_reset="latest")
    await raw.start()
    try:
        for tp in raw.assignment():
            await raw.position(tp)  # resolve "the end" now, before publishing

        await publisher.publish(events)

        records: list[Any] = []
        give_up = time.monotonic() + 30
        while len(records) < 3 and time.monotonic() < give_up:
            for batch in (await raw.getmany(timeout_ms=500)).values():
                records.extend(r for r in batch if r.key == product_id.encode())
    finally:
        await raw.stop()

    assert len(records) == 3
    assert len({r.partition for r in records}) == 1, "one key, one partition"
    assert [r.offset for r in records] == sorted(r.offset for r in records)
    first = records[0]
    assert first.topic == STOCK_CHANGED
    assert dict(first.headers) == {"eventId": str(events[0].event_id).encode()}
    assert orjson.loads(first.value) == {
        "eventId": str(events[0].event_id),
        "type": "stock.changed",
        "occurredAt": "2024-07-01T12:00:00.000500Z",
        "aggregateId": product_id,
        "aggregateVersion": 1,
        "payload": {"productId": product_id, "stock": 1},
    }
    assert [orjson.loads(r.value)["aggregateVersion"] for r in records] == [1, 2, 3]


async def test_a_topic_prefix_keeps_deployments_sharing_a_broker_apart(
    bootstrap: str, publisher: KafkaEventPublisher
) -> None:
    prefix = "flashorder-test-prefix."
    await ensure_topics(bootstrap, prefix=prefix)
    ours, theirs = created(20), created(20)
    async with (
        KafkaEventPublisher(bootstrap, topic_prefix=prefix) as prefixed,
        KafkaEventConsumer(
            bootstrap, group_id=group(), start_from="latest", topic_prefix=prefix
        ) as consumer,
    ):
        await consumer.pin_start()
        await publisher.publish(theirs)
        await prefixed.publish(ours)

        got = await fetch_until(
            consumer, [e.event_id for e in ours], keep=[e.event_id for e in theirs]
        )

    assert {e.event_id for e in got} == {e.event_id for e in ours}


# --- delivery ------------------------------------------------------------------------------


async def test_events_published_concurrently_are_each_consumed_once_by_a_group(
    bootstrap: str, publisher: KafkaEventPublisher
) -> None:
    events = created(2000)
    async with member(bootstrap, group()) as consumer:
        await asyncio.gather(*(publisher.publish(events[i : i + 50]) for i in range(0, 2000, 50)))

        got = await fetch_until(consumer, [e.event_id for e in events])
        await consumer.commit()

    counts = Counter(e.event_id for e in got)
    assert len(counts) == 2000
    assert set(counts.values()) == {1}


async def test_a_new_member_gets_again_what_a_stopped_member_fetched_but_did_not_commit(
    bootstrap: str, publisher: KafkaEventPublisher
) -> None:
    g = group()
    events = created(300)
    ids = {e.event_id for e in events}
    async with member(bootstrap, g) as first:
        await publisher.publish(events)
        committed: list[Event] = []
        while not committed:
            committed = [e for e in await first.fetch(100, 1.0) if e.event_id in ids]
        await first.commit()
        uncommitted = await fetch_until(first, ids - {e.event_id for e in committed})
        # Stopped without committing: as if the process died after fetching.

    async with member(bootstrap, g) as second:
        committed_ids = {e.event_id for e in committed}
        again = await fetch_until(second, ids - committed_ids, keep=committed_ids)

    assert {e.event_id for e in uncommitted} <= {e.event_id for e in again}
    assert {e.event_id for e in again} == ids - committed_ids


async def test_two_members_of_a_group_split_the_partitions_and_apply_each_event_once(
    bootstrap: str, publisher: KafkaEventPublisher
) -> None:
    g = group()
    events = created(2000)
    ids = {e.event_id for e in events}
    applied: dict[UUID, str] = {}  # an idempotent "read model": by event id
    fetched: Counter[str] = Counter()

    async def run(name: str, consumer: KafkaEventConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = [e for e in await consumer.fetch(200, 0.3) if e.event_id in ids]
            fetched[name] += len(batch)
            for e in batch:
                applied.setdefault(e.event_id, name)
            await consumer.commit()

    async with member(bootstrap, g) as a, member(bootstrap, g) as b:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(run("a", a, stop))
            tasks.create_task(run("b", b, stop))
            await publisher.publish(events)
            give_up = time.monotonic() + 60
            while len(applied) < len(ids) and time.monotonic() < give_up:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            stop.set()

    assert set(applied) == ids
    assert fetched["a"] > 0, "both members got partitions"
    assert fetched["b"] > 0, "both members got partitions"
    assert Counter(applied.values()).keys() == {"a", "b"}


class DictReadModel:
    """Idempotent by event id, like the real read model."""

    def __init__(self) -> None:
        self.applied: dict[UUID, Event] = {}

    async def apply(self, events: Sequence[Event]) -> int:
        new = {e.event_id: e for e in events if e.event_id not in self.applied}
        self.applied.update(new)
        return len(new)

    async def order(self, order_id: OrderId) -> JsonObject | None:
        return None

    async def orders_of(
        self, user_id: UserId, *, cursor: str | None, limit: int
    ) -> tuple[list[JsonObject], str | None]:
        return [], None

    async def product_sales(self, product_id: ProductId) -> Mapping[str, int] | None:
        return None


async def test_the_projector_drains_the_topics_into_the_read_model_and_reports_no_lag(
    bootstrap: str, publisher: KafkaEventPublisher
) -> None:
    events = created(1000)
    ids = {e.event_id for e in events}
    read_model = DictReadModel()
    stats = ProjectorStats(name="test-projector")
    stop = asyncio.Event()
    async with member(bootstrap, group()) as consumer:
        task = asyncio.create_task(
            run_projector(consumer, read_model, stop=stop, stats=stats, report_every=0.2)
        )
        await publisher.publish(events)
        give_up = time.monotonic() + 60
        while not (ids <= read_model.applied.keys() and stats.lag_events == 0):
            assert time.monotonic() < give_up, f"applied {len(read_model.applied)}, {stats}"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 15.0)

    assert stats.applied_total >= len(events)
    # The final report, made after the last commit.
    assert stats.lag_events == 0
    assert stats.lag_seconds == 0.0


# --- failures ------------------------------------------------------------------------------


async def test_publishing_to_an_unreachable_broker_raises_unavailable_within_its_timeout() -> None:
    started = time.monotonic()
    # Entering does not fail: a relay may start before the broker.
    async with KafkaEventPublisher("127.0.0.1:1", timeout=2.0) as publisher:
        with pytest.raises(errors.Unavailable):
            await publisher.publish(created(1))
        with pytest.raises(errors.Unavailable):
            await publisher.start()

    assert time.monotonic() - started < 8.0


async def test_a_consumer_of_an_unreachable_broker_raises_unavailable_within_its_timeout() -> None:
    started = time.monotonic()
    async with KafkaEventConsumer("127.0.0.1:1", group_id=group(), timeout=2.0) as consumer:
        with pytest.raises(errors.Unavailable):
            await consumer.fetch(10, 0.1)
        with pytest.raises(errors.Unavailable):
            await consumer.lag()
        await consumer.commit()  # nothing fetched: nothing to commit, no error
    with pytest.raises(errors.Unavailable):
        await ensure_topics("127.0.0.1:1", timeout=2.0)

    assert time.monotonic() - started < 10.0


async def test_a_producer_that_lost_its_sequence_is_rebuilt_and_publishing_resumes(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiokafka issue #1017: after OutOfOrderSequenceNumber the idempotent producer can refuse
    # everything until it is rebuilt. Simulated by making the live producer fail that way.
    async with (
        KafkaEventPublisher(bootstrap, timeout=5.0) as publisher,
        member(bootstrap, group()) as consumer,
    ):
        broken = publisher._producer
        assert broken is not None

        async def out_of_order(*args: object, **kwargs: object) -> None:
            raise OutOfOrderSequenceNumber()

        monkeypatch.setattr(broken, "send", out_of_order)
        with pytest.raises(errors.Unavailable):
            await publisher.publish(created(1))

        events = created(10)
        await publisher.publish(events)
        got = await fetch_until(consumer, [e.event_id for e in events])

    assert publisher.rebuilds == 1
    assert len(got) == 10


async def test_a_producer_that_keeps_timing_out_is_rebuilt(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with KafkaEventPublisher(bootstrap, timeout=0.5, max_timeouts=2) as publisher:
        await publisher.publish(created(1))
        stalled = publisher._producer
        assert stalled is not None

        async def hang(*args: object, **kwargs: object) -> None:
            await asyncio.sleep(3600)

        monkeypatch.setattr(stalled, "send", hang)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(errors.Unavailable):
                await publisher.publish(created(1))
            assert time.monotonic() - started < 2.0
        await publisher.publish(created(1))

    assert publisher.rebuilds == 1


async def test_topics_are_ensured_by_several_processes_at_once(kafka_bootstrap: str) -> None:
    results: Sequence[list[str]] = await asyncio.gather(
        *(ensure_topics(kafka_bootstrap) for _ in range(4))
    )

    assert all(set(r) <= set(TOPICS) for r in results)

"""The outbox relay, on typed fakes of the outbox store and the publisher."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from flashorder.application.ports import EventPublisher, OutboxBatch, OutboxRelayStore
from flashorder.application.relay import Relay, relay_once, run_relay
from flashorder.domain import errors
from flashorder.domain.events import ORDER_CREATED, Event

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


class FakeOutbox:
    """Rows in insertion order; a claim marks its rows sent only if its body returns."""

    def __init__(self) -> None:
        self.rows: list[Event] = []
        self.sent: set[UUID] = set()
        self.claims = 0
        self.purged_before: list[datetime] = []

    def add(self, events: Sequence[Event]) -> None:
        self.rows.extend(events)

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        self.claims += 1
        batch = [e for e in self.rows if e.event_id not in self.sent][:limit]
        yield OutboxBatch(batch)
        self.sent.update(e.event_id for e in batch)

    async def purge(self, older_than: datetime) -> int:
        self.purged_before.append(older_than)
        return 0

    async def backlog(self) -> int:
        return sum(e.event_id not in self.sent for e in self.rows)


class FakePublisher:
    """Acknowledges everything, except while ``down`` or for the next ``fail_next`` calls."""

    def __init__(self, *, fail_next: int = 0) -> None:
        self.published: list[Event] = []
        self.calls = 0
        self.fail_next = fail_next
        self.down = False

    async def publish(self, events: Sequence[Event]) -> None:
        self.calls += 1
        if self.down or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise errors.Unavailable("kafka", "fake outage")
        self.published.extend(events)


def _typed(store: OutboxRelayStore, publisher: EventPublisher) -> None:
    """The fakes satisfy the ports (checked by mypy)."""


_typed(FakeOutbox(), FakePublisher())


def events(n: int) -> list[Event]:
    return [
        Event(ORDER_CREATED, str(uuid.uuid4()), 1, NOW + timedelta(seconds=i), {"n": i})
        for i in range(n)
    ]


async def wait_until(condition: object, timeout: float = 2.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# --- one batch -----------------------------------------------------------------------------


async def test_relay_once_publishes_the_oldest_batch_and_marks_it_sent() -> None:
    store, publisher = FakeOutbox(), FakePublisher()
    store.add(rows := events(5))

    assert await relay_once(store, publisher, batch_size=3) == 3

    assert publisher.published == rows[:3]
    assert await store.backlog() == 2


async def test_relay_once_keeps_the_rows_when_the_publisher_is_unavailable() -> None:
    store, publisher = FakeOutbox(), FakePublisher(fail_next=1)
    store.add(rows := events(3))

    assert await relay_once(store, publisher, batch_size=10) == 0
    assert await store.backlog() == 3

    assert await relay_once(store, publisher, batch_size=10) == 3
    assert publisher.published == rows


async def test_relay_once_with_an_empty_outbox_publishes_nothing() -> None:
    store, publisher = FakeOutbox(), FakePublisher()

    assert await relay_once(store, publisher, batch_size=10) == 0
    assert publisher.calls == 0


# --- the loop --------------------------------------------------------------------------------


async def test_the_relay_publishes_everything_in_order_in_batches() -> None:
    store, publisher = FakeOutbox(), FakePublisher()
    store.add(rows := events(25))
    stop = asyncio.Event()

    task = asyncio.create_task(run_relay(store, publisher, stop=stop, batch_size=10))
    await wait_until(lambda: len(publisher.published) == 25)
    stop.set()
    await asyncio.wait_for(task, 1.0)

    assert publisher.published == rows


async def test_the_relay_returns_soon_after_stop_is_set() -> None:
    store, publisher = FakeOutbox(), FakePublisher()
    stop = asyncio.Event()
    task = asyncio.create_task(run_relay(store, publisher, stop=stop, idle_sleep=30.0))
    await asyncio.sleep(0.05)

    stop.set()

    # Far sooner than the idle sleep it was in (30 s), with room for a loaded machine.
    await asyncio.wait_for(task, 5.0)


async def test_the_relay_stops_while_backing_off_from_an_outage() -> None:
    store, publisher = FakeOutbox(), FakePublisher()
    publisher.down = True
    store.add(events(1))
    stop = asyncio.Event()
    relay = Relay(store, publisher, max_backoff=30.0)
    task = asyncio.create_task(relay.run(stop))
    await wait_until(lambda: publisher.calls >= 3)

    stop.set()

    # Far sooner than the back-off it was in (up to 30 s).
    await asyncio.wait_for(task, 5.0)


async def test_rows_kept_through_an_outage_are_published_later_in_order_exactly_once() -> None:
    store, publisher = FakeOutbox(), FakePublisher()
    stop = asyncio.Event()
    relay = Relay(store, publisher, batch_size=4, idle_sleep=0.01, max_backoff=0.02)
    task = asyncio.create_task(relay.run(stop))
    store.add(first := events(6))
    await wait_until(lambda: len(publisher.published) == 6)

    publisher.down = True
    store.add(during := events(9))
    await wait_until(lambda: relay.failures_total >= 3)
    assert publisher.published == first

    publisher.down = False
    await wait_until(lambda: len(publisher.published) == 15)
    stop.set()
    await asyncio.wait_for(task, 1.0)

    assert publisher.published == first + during


async def test_the_relay_backs_off_while_the_publisher_is_unavailable() -> None:
    store, publisher = FakeOutbox(), FakePublisher()
    publisher.down = True
    store.add(events(1))
    stop = asyncio.Event()
    relay = Relay(store, publisher, idle_sleep=0.001, max_backoff=0.2)
    task = asyncio.create_task(relay.run(stop))

    await asyncio.sleep(0.6)
    stop.set()
    await asyncio.wait_for(task, 5.0)

    # Doubling from 50 ms up to 200 ms: 0.05 + 0.1 + 0.2 + 0.2 … a handful of tries, where
    # polling at idle_sleep would have made hundreds (bounded for a sleep that overran 2x).
    assert 2 <= publisher.calls <= 20


async def test_rows_committed_while_the_relay_idles_go_out_at_the_next_poll() -> None:
    store, publisher = FakeOutbox(), FakePublisher()
    stop = asyncio.Event()
    relay = Relay(store, publisher, idle_sleep=0.05)
    task = asyncio.create_task(relay.run(stop))
    await wait_until(lambda: store.claims >= 1)

    store.add(rows := events(2))
    await wait_until(lambda: publisher.published == rows, timeout=0.5)

    stop.set()
    await asyncio.wait_for(task, 1.0)


async def test_the_relay_purges_rows_older_than_the_retention_periodically() -> None:
    store, publisher = FakeOutbox(), FakePublisher()
    stop = asyncio.Event()
    relay = Relay(
        store,
        publisher,
        idle_sleep=0.01,
        purge_every=0.05,
        retention=timedelta(hours=2),
        clock=lambda: NOW,
    )
    task = asyncio.create_task(relay.run(stop))

    await wait_until(lambda: len(store.purged_before) >= 3)
    stop.set()
    await asyncio.wait_for(task, 1.0)

    assert set(store.purged_before) == {NOW - timedelta(hours=2)}


async def test_an_error_that_is_not_an_outage_is_not_swallowed() -> None:
    class BrokenPublisher(FakePublisher):
        async def publish(self, events: Sequence[Event]) -> None:
            raise ValueError("no topic for event types ['order.exploded']")

    store = FakeOutbox()
    store.add(events(1))

    with pytest.raises(ValueError, match="no topic"):
        await asyncio.wait_for(Relay(store, BrokenPublisher()).run(asyncio.Event()), 1.0)
    assert await store.backlog() == 1

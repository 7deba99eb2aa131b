"""The projector loop, on typed fakes of the consumer and the read model."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prometheus_client import CollectorRegistry

from flashorder.application.ports import EventConsumer, JsonObject, ReadModel
from flashorder.application.projector import ProjectorStats, register_metrics, run_projector
from flashorder.domain import errors
from flashorder.domain.events import ORDER_CREATED, Event
from flashorder.domain.model import OrderId, ProductId, UserId

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


class FakeConsumer:
    """A log with a committed offset; every call is written to the shared ``journal``."""

    def __init__(self, log: list[Event], journal: list[str], *, committed: int = 0) -> None:
        self.log = log
        self.journal = journal
        self.committed = committed
        self.position = committed
        self.commit_fails = 0
        #: Events in the topics this member cannot fetch (another member's partitions).
        self.elsewhere = 0

    async def fetch(self, max_events: int, timeout: float) -> Sequence[Event]:
        batch = self.log[self.position : self.position + max_events]
        if not batch:
            await asyncio.sleep(min(timeout, 0.01))
            return []
        self.position += len(batch)
        self.journal.append(f"fetch {len(batch)}")
        return batch

    async def commit(self) -> None:
        if self.commit_fails > 0:
            self.commit_fails -= 1
            raise errors.Unavailable("kafka", "fake commit failure")
        self.journal.append(f"commit {self.position}")
        self.committed = self.position

    async def lag(self) -> int:
        return len(self.log) - self.committed + self.elsewhere


class FakeReadModel:
    """Idempotent by event id; fails the next ``fail_next`` applies."""

    def __init__(self, journal: list[str], *, fail_next: int = 0) -> None:
        self.journal = journal
        self.fail_next = fail_next
        self.applied: dict[UUID, Event] = {}
        self.attempts: list[list[UUID]] = []

    async def apply(self, events: Sequence[Event]) -> int:
        self.attempts.append([e.event_id for e in events])
        if self.fail_next > 0:
            self.fail_next -= 1
            self.journal.append("apply failed")
            raise errors.Unavailable("database", "fake outage")
        new = [e for e in events if e.event_id not in self.applied]
        self.applied.update((e.event_id, e) for e in new)
        self.journal.append(f"apply {len(events)}")
        return len(new)

    async def order(self, order_id: OrderId) -> JsonObject | None:
        return None

    async def orders_of(
        self, user_id: UserId, *, cursor: str | None, limit: int
    ) -> tuple[list[JsonObject], str | None]:
        return [], None

    async def product_sales(self, product_id: ProductId) -> Mapping[str, int] | None:
        return None


def _typed(consumer: EventConsumer, read_model: ReadModel) -> None:
    """The fakes satisfy the ports (checked by mypy)."""


_typed(FakeConsumer([], []), FakeReadModel([]))


def events(n: int, *, start: datetime = NOW) -> list[Event]:
    return [
        Event(ORDER_CREATED, str(uuid.uuid4()), 1, start + timedelta(seconds=i), {"n": i})
        for i in range(n)
    ]


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def running(
    consumer: FakeConsumer,
    read_model: FakeReadModel,
    stop: asyncio.Event,
    *,
    batch_size: int = 500,
    stats: ProjectorStats | None = None,
    report: Callable[[ProjectorStats], Awaitable[None]] | None = None,
    report_every: float = 1.0,
    clock: Callable[[], datetime] = lambda: NOW,
) -> asyncio.Task[ProjectorStats]:
    return asyncio.create_task(
        run_projector(
            consumer,
            read_model,
            stop=stop,
            batch_size=batch_size,
            max_backoff=0.02,
            stats=stats,
            report=report,
            report_every=report_every,
            clock=clock,
        )
    )


# --- apply, then commit ------------------------------------------------------------------


async def test_the_projector_commits_each_batch_only_after_applying_it() -> None:
    journal: list[str] = []
    consumer, read_model = FakeConsumer(events(7), journal), FakeReadModel(journal)
    stop = asyncio.Event()
    task = running(consumer, read_model, stop, batch_size=3)

    await wait_until(lambda: consumer.committed == 7)
    stop.set()
    await asyncio.wait_for(task, 1.0)

    assert journal == [
        "fetch 3", "apply 3", "commit 3",
        "fetch 3", "apply 3", "commit 6",
        "fetch 1", "apply 1", "commit 7",
    ]  # fmt: skip
    assert len(read_model.applied) == 7


async def test_a_failed_apply_is_retried_with_the_same_batch_and_nothing_committed_before() -> None:
    journal: list[str] = []
    consumer = FakeConsumer(events(4), journal)
    read_model = FakeReadModel(journal, fail_next=3)
    stop = asyncio.Event()
    task = running(consumer, read_model, stop, batch_size=10)

    await wait_until(lambda: consumer.committed == 4)
    stop.set()
    await asyncio.wait_for(task, 1.0)

    assert journal == [
        "fetch 4",
        "apply failed",
        "apply failed",
        "apply failed",
        "apply 4",
        "commit 4",
    ]
    assert len({tuple(a) for a in read_model.attempts}) == 1, "always the same batch"


async def test_a_projector_stopped_while_apply_fails_leaves_the_batch_for_the_next_one() -> None:
    journal: list[str] = []
    log = events(5)
    consumer = FakeConsumer(log, journal)
    read_model = FakeReadModel(journal, fail_next=1_000)
    stop = asyncio.Event()
    task = running(consumer, read_model, stop)
    await wait_until(lambda: len(read_model.attempts) >= 2)

    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert consumer.committed == 0

    # "Restart": a new member starts at the committed offset and applies the batch.
    read_model.fail_next = 0
    again = FakeConsumer(log, journal, committed=consumer.committed)
    stop = asyncio.Event()
    task = running(again, read_model, stop)
    await wait_until(lambda: again.committed == 5)
    stop.set()
    await asyncio.wait_for(task, 1.0)

    assert set(read_model.applied) == {e.event_id for e in log}


async def test_a_failed_commit_does_not_stop_the_projector() -> None:
    journal: list[str] = []
    consumer = FakeConsumer(events(6), journal)
    consumer.commit_fails = 1
    read_model = FakeReadModel(journal)
    stop = asyncio.Event()
    task = running(consumer, read_model, stop, batch_size=3)

    await wait_until(lambda: consumer.committed == 6)
    stop.set()
    await asyncio.wait_for(task, 1.0)

    assert len(read_model.applied) == 6


async def test_the_projector_returns_soon_after_stop_is_set_when_idle() -> None:
    journal: list[str] = []
    stop = asyncio.Event()
    task = running(FakeConsumer([], journal), FakeReadModel(journal), stop)
    await asyncio.sleep(0.05)

    stop.set()

    await asyncio.wait_for(task, 1.0)


# --- stats and lag -------------------------------------------------------------------------


async def test_the_projector_reports_its_progress_and_lag() -> None:
    journal: list[str] = []
    log = events(5, start=NOW - timedelta(seconds=30))
    consumer = FakeConsumer(log, journal)
    read_model = FakeReadModel(journal)
    reports: list[tuple[int, int, float]] = []

    async def report(stats: ProjectorStats) -> None:
        reports.append((stats.applied_total, stats.lag_events, stats.lag_seconds))

    stop = asyncio.Event()
    stats = ProjectorStats(name="projector-test", started_at=NOW)
    task = running(consumer, read_model, stop, stats=stats, report=report, report_every=0.01)
    await wait_until(lambda: consumer.committed == 5 and bool(reports) and reports[-1][1] == 0)

    # Events wait that the projector has not applied: lag, aged from the newest applied one.
    consumer.elsewhere = 3
    await wait_until(lambda: reports[-1][1] == 3)
    stop.set()
    result = await asyncio.wait_for(task, 1.0)

    assert result is stats
    assert stats.applied_total == 5
    assert stats.batches_total == 1
    assert stats.last_batch_at == NOW
    assert stats.lag_events == 3
    assert stats.lag_seconds == 26.0  # the newest applied event occurred at NOW - 26 s
    assert reports[-1] == (5, 3, 26.0)


def test_lag_seconds_is_zero_when_nothing_waits() -> None:
    stats = ProjectorStats(name="p", started_at=NOW - timedelta(minutes=1))
    stats.record_lag(0, NOW)
    assert stats.lag_seconds == 0.0

    # Behind but nothing applied yet: counted from the projector's start, a lower bound.
    stats.record_lag(10, NOW)
    assert stats.lag_seconds == 60.0


def test_the_stats_are_exposed_as_prometheus_metrics_on_the_given_registry() -> None:
    registry = CollectorRegistry()
    stats = ProjectorStats(name="p1", started_at=NOW)
    register_metrics(stats, registry)
    stats.record_batch(events(4), NOW)
    stats.record_lag(2, NOW + timedelta(seconds=10))

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, {"projector": "p1"})

    assert value("flashorder_projector_events_applied_total") == 4
    assert value("flashorder_projector_lag_events") == 2
    assert value("flashorder_projector_lag_seconds") == 7.0  # newest event at NOW + 3 s
    assert value("flashorder_projector_last_batch_timestamp_seconds") == NOW.timestamp()

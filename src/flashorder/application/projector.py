"""The projector: applies the event stream to the read model.

Invariant: the consumer commits a batch only after ``read_model.apply`` returned for it.
A crash or a failed write in between leaves the batch uncommitted, to be applied again;
``apply`` is idempotent (by event id, guarded by aggregate version), so applying twice is
harmless and nothing is ever skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from flashorder.application.ports import EventConsumer, ReadModel
from flashorder.application.tracing import NO_TRACER, Tracer
from flashorder.domain.errors import Unavailable
from flashorder.domain.events import Event

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class ProjectorStats:
    """What one projector reports: progress, and how far the read model is behind.

    ``lag_seconds`` is how old the newest applied event is while events wait (0 once
    drained). Before this projector applied anything it counts from ``started_at``: a lower
    bound on how stale the read model is.
    """

    name: str
    started_at: datetime = field(default_factory=_utcnow)
    applied_total: int = 0
    batches_total: int = 0
    last_batch_at: datetime | None = None
    newest_event_at: datetime | None = None
    lag_events: int = 0
    lag_seconds: float = 0.0
    updated_at: datetime | None = None

    def record_batch(self, events: Sequence[Event], at: datetime) -> None:
        self.applied_total += len(events)
        self.batches_total += 1
        self.last_batch_at = at
        newest = max(e.occurred_at for e in events)
        if self.newest_event_at is None or newest > self.newest_event_at:
            self.newest_event_at = newest

    def record_lag(self, lag_events: int, at: datetime) -> None:
        self.lag_events = lag_events
        if lag_events <= 0:
            self.lag_seconds = 0.0
        else:
            since = self.newest_event_at or self.started_at
            self.lag_seconds = max(0.0, (at - since).total_seconds())
        self.updated_at = at


class ProjectorCollector(Collector):
    """Prometheus view of a ``ProjectorStats``, read at scrape time.

    Register it on the registry the process serves (``registry.register(...)``).
    """

    def __init__(self, stats: ProjectorStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        s = self._stats
        labels = ["projector"]
        applied = CounterMetricFamily(
            "flashorder_projector_events_applied",
            "Events applied to the read model.",
            labels=labels,
        )
        applied.add_metric([s.name], s.applied_total)
        lag = GaugeMetricFamily(
            "flashorder_projector_lag_events", "Events not yet applied.", labels=labels
        )
        lag.add_metric([s.name], s.lag_events)
        lag_s = GaugeMetricFamily(
            "flashorder_projector_lag_seconds", "Age of the read model while behind.", labels=labels
        )
        lag_s.add_metric([s.name], s.lag_seconds)
        last = GaugeMetricFamily(
            "flashorder_projector_last_batch_timestamp_seconds",
            "When the last batch was applied (Unix time).",
            labels=labels,
        )
        last.add_metric([s.name], s.last_batch_at.timestamp() if s.last_batch_at else 0.0)
        return [applied, lag, lag_s, last]


def register_metrics(stats: ProjectorStats, registry: CollectorRegistry) -> None:
    registry.register(ProjectorCollector(stats))


async def run_projector(
    consumer: EventConsumer,
    read_model: ReadModel,
    *,
    stop: asyncio.Event,
    batch_size: int = 500,
    fetch_timeout: float = 0.5,
    max_backoff: float = 5.0,
    stats: ProjectorStats | None = None,
    report: Callable[[ProjectorStats], Awaitable[None]] | None = None,
    report_every: float = 1.0,
    clock: Clock = _utcnow,
    tracer: Tracer = NO_TRACER,
) -> ProjectorStats:
    """Fetch, apply, commit, until ``stop`` is set; returns the stats.

    Every ``report_every`` seconds the lag is measured and ``report`` (if given) is called
    with the stats, e.g. to write them where other processes can read them.
    """
    stats = stats or ProjectorStats(name="projector", started_at=clock())
    reporter = _Reporter(consumer, stats, report, clock)
    # A bug in either task ends both, loudly (an ExceptionGroup); Unavailable never does.
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(
            _consume(
                consumer,
                read_model,
                stop,
                batch_size,
                fetch_timeout,
                max_backoff,
                stats,
                clock,
                tracer,
            )
        )
        tasks.create_task(reporter.run(stop, report_every))
    # After the last commit, so the final report shows where this projector left off.
    await reporter.once()
    return stats


async def _consume(
    consumer: EventConsumer,
    read_model: ReadModel,
    stop: asyncio.Event,
    batch_size: int,
    fetch_timeout: float,
    max_backoff: float,
    stats: ProjectorStats,
    clock: Clock,
    tracer: Tracer,
) -> None:
    backoff = _Backoff(max_backoff)
    while not stop.is_set():
        try:
            batch = await consumer.fetch(batch_size, fetch_timeout)
        except Unavailable as exc:
            log.warning("projector.fetch_failed", extra={"error": exc.detail})
            await _sleep_unless(stop, backoff.next())
            continue
        backoff.reset()
        if not batch:
            continue
        # The same batch is retried in place: the consumer may not fetch anything else
        # before this one is committed, or its commit would cover events never applied.
        while True:
            try:
                await _apply(read_model, batch, tracer)
                break
            except Unavailable as exc:
                log.warning(
                    "projector.apply_failed", extra={"error": exc.detail, "events": len(batch)}
                )
                await _sleep_unless(stop, backoff.next())
                if stop.is_set():
                    return  # uncommitted: the next member of the group applies it
        backoff.reset()
        stats.record_batch(batch, clock())
        try:
            await consumer.commit()
        except Unavailable as exc:
            # Applied but not committed: the group fetches these again and applying them
            # twice changes nothing.
            log.warning("projector.commit_failed", extra={"error": exc.detail})


class _Reporter:
    def __init__(
        self,
        consumer: EventConsumer,
        stats: ProjectorStats,
        report: Callable[[ProjectorStats], Awaitable[None]] | None,
        clock: Clock,
    ) -> None:
        self._consumer = consumer
        self._stats = stats
        self._report = report
        self._clock = clock

    async def run(self, stop: asyncio.Event, every: float) -> None:
        while not stop.is_set():
            started = time.monotonic()
            await self.once()
            await _sleep_unless(stop, every - (time.monotonic() - started))

    async def once(self) -> None:
        try:
            self._stats.record_lag(await self._consumer.lag(), self._clock())
        except Unavailable as exc:
            log.warning("projector.lag_unknown", extra={"error": exc.detail})
        if self._report is not None:
            try:
                await self._report(self._stats)
            except Unavailable as exc:
                log.warning("projector.report_failed", extra={"error": exc.detail})


class _Backoff:
    def __init__(self, ceiling: float) -> None:
        self._ceiling = ceiling
        self._delay = 0.0

    def next(self) -> float:
        self._delay = min(self._ceiling, max(0.05, 2 * self._delay))
        return self._delay

    def reset(self) -> None:
        self._delay = 0.0


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def _apply(read_model: ReadModel, events: Sequence[Event], tracer: Tracer) -> None:
    if tracer.enabled:
        # Each event's span continues the trace its message carried (the relay's publish).
        with tracer.each_event("projector.apply", events):
            await read_model.apply(events)
    else:
        await read_model.apply(events)


class DirectProjection:
    """An ``EventPublisher`` that applies events straight to the read model.

    The embedded default's broker: the relay marks outbox rows sent only once the read model
    has them, so a crash between the two loses nothing (the rows are relayed again, and
    ``apply`` is idempotent).
    """

    def __init__(self, read_model: ReadModel, *, tracer: Tracer = NO_TRACER) -> None:
        self._read_model = read_model
        self._tracer = tracer

    async def publish(self, events: Sequence[Event]) -> None:
        await _apply(self._read_model, events, self._tracer)

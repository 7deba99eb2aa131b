"""The outbox relay: moves committed events from the outbox to the broker.

Invariant: a row is marked sent only after the broker acknowledged its event (the claim
commits only when its body returns), so a crash or an outage at any point leaves the row to
be published again: at-least-once, never lost. Rows are claimed oldest first, so an outage
delays events without reordering them. Several relays may run at once (the store claims
with SKIP LOCKED); events of one order may then reach the broker out of order across
batches, which the read model tolerates (it is guarded by aggregate version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram

from flashorder.application.ports import EventPublisher, OutboxRelayStore
from flashorder.application.tracing import NO_TRACER, Tracer
from flashorder.domain.errors import Unavailable

log = logging.getLogger(__name__)


class RelayMetrics:
    """The relay's Prometheus metrics: throughput, failures and batch time. The relay's lag
    is the outbox's age, which the API exports from the database
    (``flashorder_outbox_oldest_age_seconds``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "flashorder_relay_events_published_total",
            "Events published to the broker by this relay",
            registry=registry,
        )
        self.failures = Counter(
            "flashorder_relay_failures_total",
            "Batches that failed (broker or database unavailable) and will be retried",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "flashorder_relay_batch_duration_seconds",
            "Time to claim, publish and mark one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )


async def _relay_batch(
    store: OutboxRelayStore, publisher: EventPublisher, batch_size: int, tracer: Tracer
) -> int:
    async with store.claim(batch_size) as batch:
        if batch.events:
            if tracer.enabled:
                # A span per event, in the trace of the request that wrote it; the message
                # carries the new span, so the projector's apply is its child.
                with tracer.each_event("outbox.publish", batch.events) as events:
                    await publisher.publish(events)
            else:
                await publisher.publish(batch.events)
        return len(batch.events)


async def relay_once(
    store: OutboxRelayStore,
    publisher: EventPublisher,
    *,
    batch_size: int,
    tracer: Tracer = NO_TRACER,
) -> int:
    """Publish one batch of the oldest unpublished events; returns how many.

    When the store or the publisher is unavailable, the rows stay and it returns 0.
    """
    try:
        return await _relay_batch(store, publisher, batch_size, tracer)
    except Unavailable as exc:
        log.warning("relay.unavailable", extra={"error": exc.detail})
        return 0


class Relay:
    """The relay loop. ``run(stop)`` until ``stop`` is set.

    It polls: after a batch smaller than ``batch_size`` it waits ``idle_sleep`` seconds, so a
    committed event reaches the broker within about that long.
    """

    def __init__(
        self,
        store: OutboxRelayStore,
        publisher: EventPublisher,
        *,
        batch_size: int = 500,
        idle_sleep: float = 0.1,
        max_backoff: float = 5.0,
        purge_every: float = 60.0,
        retention: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tracer: Tracer = NO_TRACER,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self._store = store
        self._tracer = tracer
        self._metrics = metrics
        self._publisher = publisher
        self._batch_size = batch_size
        self._idle_sleep = idle_sleep
        self._max_backoff = max_backoff
        self._purge_every = purge_every
        self._retention = retention
        self._clock = clock
        self.published_total = 0
        self.failures_total = 0

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        next_purge = time.monotonic()
        while not stop.is_set():
            started = time.perf_counter()
            try:
                n = await _relay_batch(self._store, self._publisher, self._batch_size, self._tracer)
            except Unavailable as exc:
                self.failures_total += 1
                if self._metrics is not None:
                    self._metrics.failures.inc()
                backoff = min(self._max_backoff, max(2 * backoff, self._idle_sleep, 0.05))
                log.warning("relay.unavailable", extra={"error": exc.detail, "retry_in": backoff})
                await _wait(stop, backoff)
                continue
            if backoff:
                log.info("relay.recovered")
                backoff = 0.0
            self.published_total += n
            if self._metrics is not None and n:
                self._metrics.published.inc(n)
                self._metrics.batch_seconds.observe(time.perf_counter() - started)

            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self._purge_every
                await self._purge()

            # A full batch means more are probably waiting: go again without a pause.
            if n < self._batch_size:
                await _wait(stop, self._idle_sleep)

    async def _purge(self) -> None:
        try:
            purged = await self._store.purge(self._clock() - self._retention)
        except Unavailable as exc:
            log.warning("relay.purge_failed", extra={"error": exc.detail})
            return
        if purged:
            log.info("relay.purged", extra={"rows": purged})


async def run_relay(
    store: OutboxRelayStore,
    publisher: EventPublisher,
    *,
    stop: asyncio.Event,
    batch_size: int = 500,
    idle_sleep: float = 0.1,
    purge_every: float = 60.0,
    retention: timedelta = timedelta(hours=24),
    tracer: Tracer = NO_TRACER,
    metrics: RelayMetrics | None = None,
) -> None:
    """Run a ``Relay`` until ``stop`` is set."""
    relay = Relay(
        store,
        publisher,
        batch_size=batch_size,
        idle_sleep=idle_sleep,
        purge_every=purge_every,
        retention=retention,
        tracer=tracer,
        metrics=metrics,
    )
    await relay.run(stop)


async def _wait(stop: asyncio.Event, timeout: float) -> None:
    """Return when ``stop`` is set or after ``timeout`` seconds."""
    if stop.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await stop.wait()

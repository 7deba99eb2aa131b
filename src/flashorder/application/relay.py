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

from flashorder.application.ports import EventPublisher, OutboxRelayStore
from flashorder.domain.errors import Unavailable

log = logging.getLogger(__name__)


async def _relay_batch(store: OutboxRelayStore, publisher: EventPublisher, batch_size: int) -> int:
    async with store.claim(batch_size) as batch:
        if batch.events:
            await publisher.publish(batch.events)
        return len(batch.events)


async def relay_once(store: OutboxRelayStore, publisher: EventPublisher, *, batch_size: int) -> int:
    """Publish one batch of the oldest unpublished events; returns how many.

    When the store or the publisher is unavailable, the rows stay and it returns 0.
    """
    try:
        return await _relay_batch(store, publisher, batch_size)
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
    ) -> None:
        self._store = store
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
            try:
                n = await _relay_batch(self._store, self._publisher, self._batch_size)
            except Unavailable as exc:
                self.failures_total += 1
                backoff = min(self._max_backoff, max(2 * backoff, self._idle_sleep, 0.05))
                log.warning("relay.unavailable", extra={"error": exc.detail, "retry_in": backoff})
                await _wait(stop, backoff)
                continue
            if backoff:
                log.info("relay.recovered")
                backoff = 0.0
            self.published_total += n

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
) -> None:
    """Run a ``Relay`` until ``stop`` is set."""
    relay = Relay(
        store,
        publisher,
        batch_size=batch_size,
        idle_sleep=idle_sleep,
        purge_every=purge_every,
        retention=retention,
    )
    await relay.run(stop)


async def _wait(stop: asyncio.Event, timeout: float) -> None:
    """Return when ``stop`` is set or after ``timeout`` seconds."""
    if stop.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await stop.wait()

"""``EventPublisher`` on Kafka: an idempotent producer, keyed by aggregate id.

The key puts every event of one order into one partition, where Kafka keeps them in order;
the idempotent producer (acks=all) keeps its own retries from writing a record twice.
Duplicates can still come from the outbox (a relay that dies after the broker acknowledged
but before its rows were marked sent): consumers dedupe on ``eventId``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from flashorder.adapters.events.codec import encode_event
from flashorder.adapters.events.topics import TOPICS, topic_for
from flashorder.domain import errors
from flashorder.domain.events import Event

log = logging.getLogger(__name__)

# aiokafka issue #1017: after OutOfOrderSequenceNumber an idempotent producer can refuse every
# later send until it is rebuilt (a new producer id resets the sequence numbers). The same
# stall can show up only as timeouts, so a run of them also gets the producer rebuilt.
_FATAL_FOR_PRODUCER = (OutOfOrderSequenceNumber, UnknownProducerId, ProducerFenced)


class KafkaEventPublisher:
    """Publish events to their topics (named by ``event.type``); all acknowledged or Unavailable.

    Use as ``async with KafkaEventPublisher(...)``, or call ``start``/``stop``. Entering the
    context does not fail while Kafka is down: ``publish`` (re)connects by itself and raises
    Unavailable until it can, so a relay may start before the broker.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout: float = 10.0,
        linger_ms: int = 5,
        compression: str | None = None,
        client_id: str = "flashorder-relay",
        max_timeouts: int = 3,
        topic_prefix: str = "",
    ) -> None:
        self._bootstrap = bootstrap
        self._topic_prefix = topic_prefix
        self._timeout = timeout
        self._linger_ms = linger_ms
        self._compression = compression
        self._client_id = client_id
        self._max_timeouts = max_timeouts
        self._producer: AIOKafkaProducer | None = None
        self._timeouts_in_a_row = 0
        self._lock = asyncio.Lock()
        self.rebuilds = 0

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except errors.Unavailable as exc:
            log.warning("kafka.producer_not_started", extra={"error": exc.detail})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect. Raises Unavailable when the broker does not answer within the timeout."""
        await self._ready()

    async def stop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await self._close(producer)

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        unknown = {e.type for e in events} - set(TOPICS)
        if unknown:
            # The broker creates no topics: an unknown type would only time out, later.
            raise ValueError(f"no topic for event types {sorted(unknown)}")
        producer = await self._ready()
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._timeout):
                for e in events:
                    futures.append(
                        await producer.send(
                            topic_for(e.type, self._topic_prefix),
                            value=encode_event(e),
                            key=e.aggregate_id.encode(),
                            headers=_headers(e),
                        )
                    )
                # Sent first, awaited together: the producer batches records per partition.
                await asyncio.gather(*futures)
        except (TimeoutError, KafkaTimeoutError) as exc:
            self._timeouts_in_a_row += 1
            if self._timeouts_in_a_row >= self._max_timeouts:
                await self._discard(producer, f"{self._timeouts_in_a_row} timeouts in a row")
            raise errors.Unavailable(
                "kafka", f"no acknowledgement within {self._timeout}s"
            ) from exc
        except _FATAL_FOR_PRODUCER as exc:
            await self._discard(producer, repr(exc))
            raise errors.Unavailable("kafka", repr(exc)) from exc
        except (KafkaError, OSError) as exc:
            raise errors.Unavailable("kafka", repr(exc)) from exc
        finally:
            _consume_exceptions(futures)
        self._timeouts_in_a_row = 0

    async def _ready(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=self._linger_ms,
                compression_type=self._compression,
                max_batch_size=256 * 1024,
                request_timeout_ms=int(self._timeout * 1000),
            )
            try:
                async with asyncio.timeout(self._timeout):
                    await producer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                # A producer that failed to start still holds a client: close it.
                await self._close(producer)
                raise errors.Unavailable("kafka", f"cannot connect: {exc!r}") from exc
            self._producer = producer
            self._timeouts_in_a_row = 0
            return producer

    async def _discard(self, producer: AIOKafkaProducer, reason: str) -> None:
        async with self._lock:
            # Another publish may have rebuilt it already; drop only the broken one.
            if self._producer is not producer:
                return
            self._producer = None
            self.rebuilds += 1
        log.warning("kafka.producer_rebuilt", extra={"reason": reason})
        await self._close(producer)

    async def _close(self, producer: AIOKafkaProducer) -> None:
        # stop() flushes what is still queued; batches expire after the request timeout, so
        # twice that is ample. A broken producer that still hangs is abandoned.
        try:
            async with asyncio.timeout(2 * self._timeout):
                await producer.stop()
        except (KafkaError, OSError, TimeoutError):
            log.warning("kafka.producer_stop_failed", exc_info=True)


def _headers(e: Event) -> list[tuple[str, bytes]]:
    headers = [("eventId", str(e.event_id).encode())]
    if e.traceparent is not None:
        # W3C trace context in the message's headers, as the Kafka semantic conventions
        # of OpenTelemetry carry it: the consumer's span continues the producer's.
        headers.append(("traceparent", e.traceparent.encode()))
    return headers


def _consume_exceptions(futures: list[asyncio.Future[Any]]) -> None:
    # Delivery futures abandoned by a timeout fail later; mark their errors as seen so asyncio
    # does not report "exception was never retrieved".
    for fut in futures:
        fut.add_done_callback(_retrieve)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()

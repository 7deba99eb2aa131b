"""``EventConsumer`` on Kafka: one member of a consumer group over every event topic.

Offsets are committed only when the caller says the fetched events are applied, never
automatically: a crash between fetch and commit means the group fetches them again
(at-least-once), which the idempotent read model absorbs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType
from typing import Literal, Self

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from flashorder.adapters.events.codec import MalformedEvent, decode_event
from flashorder.adapters.events.topics import topic_names
from flashorder.domain import errors
from flashorder.domain.events import Event

log = logging.getLogger(__name__)

DEFAULT_GROUP = "flashorder-projector"


def _traceparent(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    for key, value in headers or ():
        if key == "traceparent":
            return value.decode("latin-1")
    return None


class KafkaEventConsumer:
    """A consumer-group member reading every event topic; see ``EventConsumer``.

    Use as ``async with KafkaEventConsumer(...)``, or call ``start``/``stop``. Entering the
    context does not fail while Kafka is down: every call (re)connects first and raises
    Unavailable until it can, so a projector may start before the broker. ``start_from`` is
    where a group with no committed offsets begins: ``"earliest"`` (the whole retained
    history, what a projector wants) or ``"latest"``.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        group_id: str = DEFAULT_GROUP,
        start_from: Literal["earliest", "latest"] = "earliest",
        timeout: float = 10.0,
        client_id: str = "flashorder-projector",
        topic_prefix: str = "",
        fetch_wait_ms: int = 200,
    ) -> None:
        self._bootstrap = bootstrap
        #: How long a fetch waits for 64 KiB of events (batching against lag).
        self._fetch_wait_ms = fetch_wait_ms
        self._topics = topic_names(topic_prefix)
        self._timeout = timeout
        self._client_id = client_id
        self._start_from = start_from
        # Built in start(): aiokafka binds its clients to the running loop.
        self._client: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()
        self.group_id = group_id
        self.malformed = 0

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except errors.Unavailable as exc:
            log.warning(
                "kafka.consumer_not_started", extra={"group": self.group_id, "error": exc.detail}
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect and join the group (returns once partitions are assigned).

        The topics must exist (``ensure_topics``). Raises Unavailable.
        """
        await self._started()

    async def _started(self) -> AIOKafkaConsumer:
        async with self._starting:
            if self._client is None:
                self._client = await self._connect()
            return self._client

    async def _connect(self) -> AIOKafkaConsumer:
        client = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset=self._start_from,
            request_timeout_ms=int(self._timeout * 1000),
            fetch_min_bytes=65536,
            fetch_max_wait_ms=self._fetch_wait_ms,
        )
        try:
            async with asyncio.timeout(self._timeout):
                await client.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            # A consumer that failed to start still holds a client: close it.
            await self._close(client)
            raise errors.Unavailable(
                "kafka", f"cannot join group {self.group_id}: {exc!r}"
            ) from exc
        return client

    async def stop(self) -> None:
        """Leave the group. Uncommitted events will be fetched again by the group."""
        client, self._client = self._client, None
        if client is not None:
            await self._close(client)

    async def _close(self, client: AIOKafkaConsumer) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await client.stop()
        except (KafkaError, OSError, TimeoutError):
            log.warning("kafka.consumer_stop_failed", extra={"group": self.group_id}, exc_info=True)

    async def pin_start(self) -> None:
        """Commit the current start position of every partition assigned to this member.

        With ``start_from="latest"`` and a new group, this fixes "now" as the group's start:
        every event published after it returns will be fetched, even by a member that joins
        later. Raises Unavailable.
        """
        consumer = await self._started()
        try:
            async with asyncio.timeout(self._timeout):
                for tp in consumer.assignment():
                    # Resolves the reset policy for a partition the group never committed.
                    await consumer.position(tp)
                await consumer.commit()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise errors.Unavailable("kafka", f"cannot pin start offsets: {exc!r}") from exc

    async def fetch(self, max_events: int, timeout: float) -> list[Event]:
        consumer = await self._started()
        try:
            # getmany waits at most timeout_ms for data; the outer bound covers the rest
            # (a coordinator error it re-raises, a slow partition reassignment).
            async with asyncio.timeout(timeout + self._timeout):
                batches = await consumer.getmany(
                    timeout_ms=int(timeout * 1000), max_records=max_events
                )
        except (KafkaError, OSError, TimeoutError) as exc:
            raise errors.Unavailable("kafka", f"fetch failed: {exc!r}") from exc
        events: list[Event] = []
        for records in batches.values():
            for record in records:
                try:
                    event = decode_event(record.value)
                except MalformedEvent:
                    # A message we cannot read would stall the group forever if it blocked
                    # the commit; it is skipped (and committed past) loudly instead.
                    self.malformed += 1
                    log.error(
                        "kafka.malformed_event",
                        extra={
                            "topic": record.topic,
                            "partition": record.partition,
                            "offset": record.offset,
                        },
                        exc_info=True,
                    )
                    continue
                traceparent = _traceparent(record.headers)
                if traceparent is not None:
                    event = replace(event, traceparent=traceparent)
                events.append(event)
        return events

    async def commit(self) -> None:
        consumer = self._client
        if consumer is None or not consumer.assignment():
            # Not connected, or nothing assigned (a rebalance is under way): nothing fetched
            # by this member can be committed.
            return
        try:
            async with asyncio.timeout(self._timeout):
                await consumer.commit()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise errors.Unavailable("kafka", f"commit failed: {exc!r}") from exc

    async def lag(self) -> int:
        """Events the whole group has not committed, over every partition of the topics.

        The same figure from every member, whatever the assignment: a reader of several
        members' reports takes the largest recent one, it does not add them up.
        """
        consumer = await self._started()
        try:
            async with asyncio.timeout(self._timeout):
                tps = [
                    TopicPartition(topic, p)
                    for topic in self._topics
                    for p in sorted(consumer.partitions_for_topic(topic) or ())
                ]
                if not tps:
                    return 0
                ends = await consumer.end_offsets(tps)
                committed = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
                uncommitted = [tp for tp, c in zip(tps, committed, strict=True) if c is None]
                starts = (
                    await consumer.beginning_offsets(uncommitted)
                    if uncommitted and self._start_from == "earliest"
                    else {}
                )
        except (KafkaError, OSError, TimeoutError) as exc:
            raise errors.Unavailable("kafka", f"cannot measure lag: {exc!r}") from exc
        total = 0
        for tp, done in zip(tps, committed, strict=True):
            # A group with no commit on a partition starts at its reset point: the beginning
            # (all retained events are lag) or the end (none are).
            start = done if done is not None else starts.get(tp, ends[tp])
            total += max(0, ends[tp] - start)
        return total

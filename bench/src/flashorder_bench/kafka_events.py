"""What Kafka holds of a run: every ``order.created`` event of the run's products, read from
the start of the (prefixed) topic by a fresh consumer group, up to the end offsets taken when
the reading began (the events are drained by then). The topic and the envelope are the
documented ones (docs/events.md): topic ``{prefix}order.created``, JSON envelopes with
``eventId``, ``aggregateId`` and the order as ``payload``."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

ORDER_CREATED = "order.created"


@dataclass
class CreatedEvents:
    """``order.created`` events by order id: the distinct event ids, and the messages read
    (more messages than ids means at-least-once redeliveries, which consumers dedupe)."""

    event_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    messages: int = 0


def _ours(payload: object, product_prefix: str) -> bool:
    if not isinstance(payload, dict):
        return False
    items = payload.get("items")
    return isinstance(items, list) and any(
        isinstance(i, dict) and str(i.get("productId", "")).startswith(product_prefix)
        for i in items
    )


async def created_events(
    bootstrap: str, *, topic_prefix: str, product_prefix: str, timeout: float = 120.0
) -> CreatedEvents:
    topic = f"{topic_prefix}{ORDER_CREATED}"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"flashorder-bench-check-{secrets.token_hex(4)}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="flashorder-bench-check",
    )
    found = CreatedEvents()
    async with asyncio.timeout(timeout):
        await consumer.start()
        try:
            # The group's only member: the first fetches trigger the assignment of every
            # partition, read from the start (auto_offset_reset).
            consumer.subscribe([topic])
            while not consumer.assignment():
                _count_batch(found, await consumer.getmany(timeout_ms=500), product_prefix)
            ends = await consumer.end_offsets(list(consumer.assignment()))
            left = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
            while left:
                batch = await consumer.getmany(*left, timeout_ms=1000, max_records=5000)
                _count_batch(found, batch, product_prefix)
                for tp in list(left):
                    if await consumer.position(tp) >= ends[tp]:
                        left.discard(tp)
        finally:
            await consumer.stop()
    return found


def _count_batch(
    found: CreatedEvents,
    batch: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    product_prefix: str,
) -> None:
    for records in batch.values():
        for record in records:
            _count(found, record.value, product_prefix)


def _count(found: CreatedEvents, value: bytes | None, product_prefix: str) -> None:
    if value is None:
        return
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if not isinstance(envelope, dict) or not _ours(envelope.get("payload"), product_prefix):
        return
    found.messages += 1
    found.event_ids[str(envelope.get("aggregateId"))].add(str(envelope.get("eventId")))

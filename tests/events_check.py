"""Promise 3 and 5 of docs/design.md, checked against a full stack's own topics and tables.

- ``published``: every event in a stack's topics, read from the beginning by a fresh consumer
  group (so no projector's progress hides anything), duplicates included; each record's
  value is checked against the published schema of its type (docs/schemas, by ``$id``).
- ``check_events``: exactly one ``order.created`` per committed order and one
  ``order.cancelled`` per cancelled one, nothing for an order the database does not hold,
  and every outbox row on the broker. Copies of one event id are at-least-once delivery and
  are allowed only where a test provoked them (a relay killed between ack and mark).
- ``wait_converged``: the read model equals the write model once ``/readyz`` shows no lag.
- ``read_lag``: how long an order took from the write side to the read model.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.events.codec import decode_event
from flashorder.adapters.events.topics import topic_names
from flashorder.domain.events import ORDER_CANCELLED, ORDER_CREATED, Event
from flashorder_bench import checks, stores
from flashorder_bench.stores import WriteModel
from tests.event_schemas import event_errors
from tests.support.api import HttpApi

# --- the topics ------------------------------------------------------------------------------


async def published(bootstrap: str, prefix: str, *, timeout: float = 60.0) -> list[Event]:
    """Every event in the topics of ``prefix``, up to their ends as they are now."""
    consumer = AIOKafkaConsumer(
        *topic_names(prefix),
        bootstrap_servers=bootstrap,
        group_id=f"events-check-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    events: list[Event] = []
    invalid: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            # Returns once this sole member of the new group has every partition.
            await consumer.start()
            partitions = sorted(consumer.assignment())
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            while not await _at_ends(consumer, ends):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    # A record that is not an envelope fails the check: only the stack writes here.
                    events.extend(decode_event(r.value) for r in records)
                    invalid.extend(
                        f"{r.topic}@{r.offset}: {problem}"
                        for r in records
                        for problem in event_errors(orjson.loads(r.value))
                    )
    finally:
        await consumer.stop()
    assert not invalid, f"{len(invalid)} schema violations, e.g. {invalid[:5]}"
    return events


async def _at_ends(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


# --- the write model -------------------------------------------------------------------------


async def write_model(engine: AsyncEngine) -> WriteModel:
    """Every order, its lines and the outbox, as the bench's checks read them."""
    return await stores.load_write_model(engine, with_outbox=True)


# --- the events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFigures:
    records: int
    created: int
    cancelled: int
    redelivered: int  # records beyond the first of their event id


def check_events(
    events: Sequence[Event], written: WriteModel, *, redelivery_allowed: bool = False
) -> EventFigures:
    """Assert that the topics hold exactly the committed changes, each under one event id."""
    copies = Counter(e.event_id for e in events)
    repeated = {eid: n for eid, n in copies.items() if n > 1}
    if not redelivery_allowed:
        assert not repeated, f"{len(repeated)} event ids published more than once: {repeated}"

    unique = {e.event_id: e for e in events}
    on_broker = {str(eid) for eid in unique}
    unpublished = written.outbox.keys() - on_broker
    assert not unpublished, f"{len(unpublished)} outbox rows never published"
    unknown = on_broker - written.outbox.keys()
    assert not unknown, f"{len(unknown)} events published that no transaction committed"

    ids_of: dict[str, dict[str, set[str]]] = {
        ORDER_CREATED: defaultdict(set),
        ORDER_CANCELLED: defaultdict(set),
    }
    for e in unique.values():
        if e.type not in ids_of:
            continue
        ids_of[e.type][e.aggregate_id].add(str(e.event_id))
        assert e.payload["orderId"] == e.aggregate_id, e
        assert e.payload["version"] == e.aggregate_version, e
        expected = "CREATED" if e.type == ORDER_CREATED else "CANCELLED"
        assert e.payload["status"] == expected, e

    created, cancelled = ids_of[ORDER_CREATED], ids_of[ORDER_CANCELLED]
    phantom = (created.keys() | cancelled.keys()) - written.orders.keys()
    assert not phantom, f"events for {len(phantom)} orders that are not in the database"
    missing = written.orders.keys() - created.keys()
    assert not missing, f"{len(missing)} committed orders have no order.created"
    twice = {oid: ids for oid, ids in created.items() if len(ids) != 1}
    assert not twice, f"orders created under several event ids: {twice}"
    assert cancelled.keys() == written.cancelled, (
        f"cancelled without event: {len(written.cancelled - cancelled.keys())}, "
        f"event without cancel: {len(cancelled.keys() - written.cancelled)}"
    )
    twice = {oid: ids for oid, ids in cancelled.items() if len(ids) != 1}
    assert not twice, f"orders cancelled under several event ids: {twice}"
    return EventFigures(
        records=len(events),
        created=len(created),
        cancelled=len(cancelled),
        redelivered=sum(n - 1 for n in repeated.values()),
    )


# --- the read model --------------------------------------------------------------------------


async def read_model_differences(engine: AsyncEngine, written: WriteModel) -> list[str]:
    """How ``order_views`` and ``product_sales`` differ from the write model; [] if equal."""
    return checks.read_model_differences(written, await stores.load_read_model(engine))


async def wait_converged(api: HttpApi, *, timeout: float = 90.0) -> WriteModel:
    """Poll until ``/readyz`` shows no lag and the read model equals the write model.

    Both, because a projector's lag report may predate the relay's last batch by a second.
    Returns the write model it found equal.
    """
    deadline = time.monotonic() + timeout
    lag: object = None
    differences: list[str] = ["not compared yet"]
    while time.monotonic() < deadline:
        reply = await api.call("GET", "/readyz")
        lag = reply.body.get("lag") if isinstance(reply.body, dict) else reply.body
        if reply.status == 200 and isinstance(lag, dict) and lag.get("events") == 0:
            written = await write_model(api.engine)
            differences = await read_model_differences(api.engine, written)
            if not differences:
                return written
        await asyncio.sleep(0.5)
    raise AssertionError(f"no convergence in {timeout}s: lag {lag}, {differences[:10]}")


# --- latency ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    count: int
    p50: float
    p99: float
    max: float

    def __str__(self) -> str:
        return (
            f"n={self.count} p50={self.p50 * 1000:.0f} ms p99={self.p99 * 1000:.0f} ms "
            f"max={self.max * 1000:.0f} ms"
        )


def latency(seconds: Sequence[float]) -> Latency:
    ordered = sorted(seconds)
    assert ordered, "nothing to measure"

    def rank(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return Latency(len(ordered), rank(0.50), rank(0.99), ordered[-1])


@dataclass(frozen=True)
class ReadLag:
    """How long committed orders took to reach the read model, in segments (seconds)."""

    occurred_to_applied: Latency
    occurred_to_published: Latency  # the request's own commit, then the outbox's wait
    published_to_applied: Latency  # broker, projector fetch and transaction
    answered_to_applied: Latency  # what a client sees; negative: visible before the 201 came

    def __str__(self) -> str:
        return "\n".join(
            f"    {name.replace('_to_', ' -> ').replace('_', ' ')}: {getattr(self, name)}"
            for name in (
                "occurred_to_applied",
                "occurred_to_published",
                "published_to_applied",
                "answered_to_applied",
            )
        )


async def read_lag(engine: AsyncEngine, answered_at: Mapping[str, float]) -> ReadLag:
    """From each ``order.created``'s outbox row (``occurred_at``: set by the API as it priced
    the order, before reserving and committing; ``published_at``: the relay's mark after the
    broker's ack) and the client's receipt of its 201 (``answered_at``: order id -> Unix
    time) to its first application (``processed_events.processed_at``). One host, one clock.
    """
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT o.aggregate_id, o.occurred_at, o.published_at, p.processed_at "
                    "FROM outbox o JOIN processed_events p ON p.event_id = o.event_id "
                    "WHERE o.type = :t"
                ),
                {"t": ORDER_CREATED},
            )
        ).all()
    segments: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        occurred, published = _utc_timestamp(r.occurred_at), _utc_timestamp(r.published_at)
        applied = _utc_timestamp(r.processed_at)
        segments["occurred_to_applied"].append(applied - occurred)
        segments["occurred_to_published"].append(published - occurred)
        segments["published_to_applied"].append(applied - published)
        if r.aggregate_id in answered_at:
            segments["answered_to_applied"].append(applied - answered_at[r.aggregate_id])
    return ReadLag(**{name: latency(values) for name, values in segments.items()})


def _utc_timestamp(naive_utc: datetime) -> float:
    # Raw SQL skips the UtcDateTime type: the columns come back as naive UTC.
    return naive_utc.replace(tzinfo=UTC).timestamp()

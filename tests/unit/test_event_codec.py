"""The wire form of an event, shared by Kafka and the in-memory bus."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from flashorder.adapters.events.codec import MalformedEvent, decode_event, encode_event
from flashorder.domain.events import ORDER_CREATED, Event

SEOUL = timezone(timedelta(hours=9))


def event(at: datetime) -> Event:
    return Event(ORDER_CREATED, "o-1", 3, at, {"orderId": "o-1", "items": [{"q": 1}], "x": None})


def test_an_event_survives_the_round_trip_exactly() -> None:
    e = event(datetime(2024, 7, 1, 12, 0, 0, 1, tzinfo=UTC))

    assert decode_event(encode_event(e)) == e


def test_the_envelope_is_camel_case_json_with_the_time_in_utc() -> None:
    e = event(datetime(2024, 7, 1, 21, 0, tzinfo=SEOUL))

    assert orjson.loads(encode_event(e)) == {
        "eventId": str(e.event_id),
        "type": "order.created",
        "occurredAt": "2024-07-01T12:00:00.000000Z",
        "aggregateId": "o-1",
        "aggregateVersion": 3,
        "payload": {"orderId": "o-1", "items": [{"q": 1}], "x": None},
    }
    assert decode_event(encode_event(e)).occurred_at.tzinfo == UTC


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_event(event(datetime(2024, 7, 1, 12, 0)))


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"type": "order.created"}',
        b'{"eventId": "nope", "type": "t", "occurredAt": "2024-07-01T12:00:00Z",'
        b' "aggregateId": "a", "aggregateVersion": 1, "payload": {}}',
        b'{"eventId": "0b6d3c1e-5f1a-4c1e-9d7a-2f4c7f0f0a11", "type": "t",'
        b' "occurredAt": "2024-07-01T12:00:00", "aggregateId": "a", "aggregateVersion": 1,'
        b' "payload": {}}',
        b'{"eventId": "0b6d3c1e-5f1a-4c1e-9d7a-2f4c7f0f0a11", "type": "t",'
        b' "occurredAt": "2024-07-01T12:00:00Z", "aggregateId": "a", "aggregateVersion": true,'
        b' "payload": {}}',
    ],
)
def test_bytes_that_are_not_an_envelope_are_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedEvent):
        decode_event(raw)


def test_event_ids_are_time_ordered_so_the_tables_of_seen_ids_grow_at_their_end() -> None:
    before = time.time_ns() // 1_000_000
    ids = []
    for _ in range(300):
        ids.append(Event("t", "a", 1, datetime.now(UTC), {}).event_id)
        time.sleep(0.0001)
    after = time.time_ns() // 1_000_000
    stamps = [i.int >> 80 for i in ids]  # the 48 bits of milliseconds
    assert {(i.version, i.variant) for i in ids} == {(7, uuid.RFC_4122)}
    assert stamps == sorted(stamps)
    assert before <= stamps[0]
    assert stamps[-1] <= after
    assert len(set(ids)) == len(ids)
    assert str(ids[0]) == str(uuid.UUID(str(ids[0])))  # a UUID like any other on the wire

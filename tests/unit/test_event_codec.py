"""The wire form of an event, shared by Kafka and the in-memory bus."""

from __future__ import annotations

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
    ids = [Event("t", "a", 1, datetime.now(UTC), {}).event_id for _ in range(1000)]
    assert {i.version for i in ids} == {7}
    assert ids == sorted(ids, key=lambda i: i.bytes)
    assert len(set(ids)) == len(ids)

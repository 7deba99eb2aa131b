"""The wire form of an event: one JSON envelope, the same on Kafka and on the in-memory bus.

    {"eventId": "…", "type": "order.created", "occurredAt": "2024-07-01T12:00:00.000000Z",
     "aggregateId": "…", "aggregateVersion": 3, "payload": {…}}

``decode_event(encode_event(e)) == e`` for every event whose time is timezone-aware and whose
payload is plain JSON (the time always comes back in UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from flashorder.domain.events import Event


class MalformedEvent(ValueError):
    """The bytes are not an event envelope (a message some other producer wrote)."""


def format_time(at: datetime) -> str:
    if at.tzinfo is None:
        # A naive time would be read back as some other instant on another machine.
        raise ValueError("event times must be timezone-aware")
    # Fixed microsecond precision so the text sorts like the instant it names.
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_event(e: Event) -> bytes:
    return orjson.dumps(
        {
            "eventId": str(e.event_id),
            "type": e.type,
            "occurredAt": format_time(e.occurred_at),
            "aggregateId": e.aggregate_id,
            "aggregateVersion": e.aggregate_version,
            "payload": e.payload,
        }
    )


def decode_event(b: bytes) -> Event:
    try:
        raw: Any = orjson.loads(b)
        payload = raw["payload"]
        version = raw["aggregateVersion"]
        # bool is an int subclass: refuse it explicitly rather than read True as version 1.
        if (
            not isinstance(payload, dict)
            or not isinstance(version, int)
            or isinstance(version, bool)
        ):
            raise TypeError("payload must be an object and aggregateVersion an integer")
        occurred_at = datetime.fromisoformat(raw["occurredAt"])
        if occurred_at.tzinfo is None:
            raise ValueError("occurredAt has no time zone")
        return Event(
            type=_text(raw["type"]),
            aggregate_id=_text(raw["aggregateId"]),
            aggregate_version=version,
            occurred_at=occurred_at.astimezone(UTC),
            payload=payload,
            event_id=UUID(_text(raw["eventId"])),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedEvent(f"not an event envelope: {exc}") from exc


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value

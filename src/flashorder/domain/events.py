"""Events: facts, named in the past tense. Aggregates record them; the outbox publishes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

ORDER_CREATED = "order.created"
ORDER_CANCELLED = "order.cancelled"
STOCK_CHANGED = "stock.changed"

EVENT_TYPES = (ORDER_CREATED, ORDER_CANCELLED, STOCK_CHANGED)


@dataclass(frozen=True, slots=True)
class Event:
    """The envelope every event travels in, from the outbox to the read model.

    ``event_id`` is what consumers dedupe on; ``aggregate_version`` orders the events of one
    aggregate, so that a late redelivery never overwrites a newer state.
    """

    type: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: datetime
    payload: dict[str, Any]
    event_id: UUID = field(default_factory=uuid4)
    #: The W3C trace context of the step that wrote or forwarded the event, when tracing is
    #: on: metadata that travels beside the event (an outbox column, a Kafka header), never
    #: in its JSON envelope, and takes no part in what the event means.
    traceparent: str | None = field(default=None, compare=False)

"""Events: facts, named in the past tense. Aggregates record them; the outbox publishes them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

ORDER_CREATED = "order.created"
ORDER_CANCELLED = "order.cancelled"
ORDER_PAID = "order.paid"
ORDER_EXPIRED = "order.expired"
#: A ``processing`` payment moved the order's deadline (once).
ORDER_DEADLINE_EXTENDED = "order.deadline_extended"
#: Money must go back: a paid order was cancelled, or a payment came for an order that no
#: longer waited for it. Not a change of the order.
PAYMENT_REFUND_DUE = "payment.refund_due"
STOCK_CHANGED = "stock.changed"

EVENT_TYPES = (
    ORDER_CREATED,
    ORDER_CANCELLED,
    ORDER_PAID,
    ORDER_EXPIRED,
    ORDER_DEADLINE_EXTENDED,
    PAYMENT_REFUND_DUE,
    STOCK_CHANGED,
)


def time_ordered_uuid() -> UUID:
    """A UUID of version 7 (RFC 9562): the Unix time in milliseconds (48 bits), then random
    bits. Ids made later sort later (within one millisecond, in any order)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # the version
    value = value & ~(0x3 << 62) | 0x2 << 62  # the variant (RFC 9562)
    return UUID(int=value)


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
    #: Time-ordered (UUID version 7): the tables that hold every event id (the outbox's
    #: unique key, the read model's ``processed_events``) take each new one at their end,
    #: not at a random place in a B-tree that grows with every sale.
    event_id: UUID = field(default_factory=time_ordered_uuid)
    #: The W3C trace context of the step that wrote or forwarded the event, when tracing is
    #: on: metadata that travels beside the event (an outbox column, a Kafka header), never
    #: in its JSON envelope, and takes no part in what the event means.
    traceparent: str | None = field(default=None, compare=False)

"""Tracing, as the application sees it: named spans around the steps of an order, and a
W3C ``traceparent`` that travels with each event from the outbox to the read model.

One order is one trace: the HTTP request, the stock reservation (Redis), the write (the
database transaction) and its outbox row, the relay's publish and the projector's apply.
The outbox row and the Kafka message carry the ``traceparent`` of the step before them, so
the relay and the projector, in other processes, continue the request's trace.

Tracing is off unless the standard ``OTEL_*`` variables turn it on (``adapters/tracing``).
Off, the tracer is ``NO_TRACER``: ``span`` hands back one shared do-nothing context manager
and callers skip the per-event work on ``enabled``, so no span object is ever made.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from flashorder.domain.events import Event


class Tracer(Protocol):
    #: False for ``NO_TRACER``: callers skip the work of building what only spans need.
    enabled: bool

    def span(self, name: str) -> AbstractContextManager[object]:
        """A span of the current trace around the block (the current span inside it)."""
        ...

    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the current span, or None outside any."""
        ...

    def each_event(
        self, name: str, events: Sequence[Event]
    ) -> AbstractContextManager[Sequence[Event]]:
        """A span per event, each a child of the span named by the event's ``traceparent``,
        around the block; the block gets the events re-stamped with their new spans, so the
        next hop continues from this one. Events without a ``traceparent`` get no span."""
        ...


_NOTHING: AbstractContextManager[object] = nullcontext()


class NoTracer:
    """Tracing off: nothing is created, nothing is recorded."""

    enabled = False

    def span(self, name: str) -> AbstractContextManager[object]:
        return _NOTHING

    def traceparent(self) -> str | None:
        return None

    def each_event(
        self, name: str, events: Sequence[Event]
    ) -> AbstractContextManager[Sequence[Event]]:
        return nullcontext(events)


NO_TRACER: Tracer = NoTracer()

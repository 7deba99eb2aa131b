"""``Tracer`` on the OpenTelemetry SDK (see the package for when it is on)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flashorder.domain.events import Event

_W3C = TraceContextTextMapPropagator()


class OtelTracer:
    """See ``application.tracing.Tracer``. ``shutdown`` flushes what is still buffered."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("flashorder")

    def shutdown(self) -> None:
        self.provider.shutdown()

    def span(self, name: str) -> AbstractContextManager[object]:
        return self._tracer.start_as_current_span(name)

    def server_span(
        self, name: str, headers: Mapping[str, str]
    ) -> AbstractContextManager[trace.Span]:
        """The span of an incoming request, continuing the caller's ``traceparent``."""
        parent = _W3C.extract(headers)
        return self._tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER)

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        return carrier.get("traceparent")

    @contextmanager
    def each_event(self, name: str, events: Sequence[Event]) -> Iterator[Sequence[Event]]:
        spans = []
        stamped = []
        for event in events:
            if event.traceparent is None:
                stamped.append(event)
                continue
            parent = _W3C.extract({"traceparent": event.traceparent})
            span = self._tracer.start_span(
                name,
                context=parent,
                kind=SpanKind.PRODUCER if "publish" in name else SpanKind.CONSUMER,
                attributes={
                    "messaging.message.id": str(event.event_id),
                    "flashorder.event.type": event.type,
                    "flashorder.aggregate.id": event.aggregate_id,
                },
            )
            spans.append(span)
            carrier: dict[str, str] = {}
            _W3C.inject(carrier, context=trace.set_span_in_context(span))
            stamped.append(replace(event, traceparent=carrier.get("traceparent")))
        try:
            yield stamped
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            for span in spans:
                span.end()

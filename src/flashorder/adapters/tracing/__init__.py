"""``Tracer`` on the OpenTelemetry SDK, configured by the standard ``OTEL_*`` variables.

Off by default. ``from_environment`` turns tracing on when

- ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``, or
- it is unset and ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
  is set,

unless ``OTEL_SDK_DISABLED=true``. The SDK itself reads the rest: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (the resource), ``OTEL_TRACES_SAMPLER``/``_ARG`` (sampling),
``OTEL_EXPORTER_OTLP_*`` (where and how spans go: OTLP over HTTP/protobuf) and
``OTEL_BSP_*`` (the batch processor). The provider is this process's own, never the global
one, and is shut down (flushed) with the process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flashorder.adapters.tracing.otel import OtelTracer


def enabled_by(env: Mapping[str, str]) -> str | None:
    """The exporter the variables ask for (``otlp`` or ``console``), or None: tracing off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    chosen = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if chosen in ("otlp", "console"):
        return chosen
    if not chosen and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return "otlp"
    return None


def from_environment(service: str) -> OtelTracer | None:
    """A tracer as the ``OTEL_*`` variables describe, or None when they leave tracing off.
    ``service`` names the process when ``OTEL_SERVICE_NAME`` does not."""
    exporter_name = enabled_by(os.environ)
    if exporter_name is None:
        return None
    # Imported only when tracing is on: a process without it never loads the SDK.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    from flashorder.adapters.tracing.otel import OtelTracer

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        # Imported only when used: the exporter pulls in protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return OtelTracer(provider)

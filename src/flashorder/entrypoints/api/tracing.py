"""The HTTP request's span: the root of an order's trace (or a child of the caller's
``traceparent``). Installed only when tracing is on, so a request without it pays nothing."""

from __future__ import annotations

from opentelemetry.trace import StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashorder.adapters.tracing.otel import OtelTracer


class TracingMiddleware:
    def __init__(self, app: ASGIApp, *, tracer: OtelTracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        with self.tracer.server_span(method, headers) as span:
            span.set_attribute("http.request.method", method)

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                await send(message)

            try:
                await self.app(scope, receive, traced_send)
            finally:
                # The route is known once the router matched: the span is named by its
                # template, never by a path with ids in it.
                route = scope.get("route")
                template = getattr(route, "path", None)
                if template is not None:
                    span.set_attribute("http.route", template)
                    span.update_name(f"{method} {template}")

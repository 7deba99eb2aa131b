"""Prometheus metrics: request counts and latencies, order outcomes, projector lag.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` must point at an empty folder
shared by them; ``/metrics`` then aggregates every worker's values.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "flashorder_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flashorder_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.lag_events = Gauge(
            "flashorder_read_model_lag_events",
            "Events not yet applied to the read model (outbox backlog + broker lag)",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.lag_seconds = Gauge(
            "flashorder_read_model_lag_seconds",
            "Age of the oldest event the read model has not applied yet",
            registry=self.registry,
            multiprocess_mode="max",
        )

    def exposition(self) -> tuple[bytes, str]:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every request by its route template (never the raw path: ids in
    paths would make the label set unbounded)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def tracked_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            route = _route_of(scope)
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def _route_of(scope: Scope) -> str:
    # The router leaves the route it matched in the scope: no second match per request.
    route = scope.get("route")
    if route is None:
        return "unmatched"
    return str(getattr(route, "path", "other"))

"""Prometheus metrics of an API process: requests by route and outcome, latencies, the
event loop's lag and the connection pools; the figures read from the database at scrape time
(stock, holds, orders by state, outbox) come from ``scrape_figures``.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` points at a folder shared by them
(``flashorder serve`` makes one); ``/metrics`` and the sale page then read every worker's
values from it, so counters and histograms add up across workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashorder.application.ports import OrderCallsSample
from flashorder.entrypoints.api.problems import OUTCOME_KEY

#: The order call, as the metrics label it.
ORDER_ROUTE = ("POST", "/api/v1/orders")

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "flashorder_http_requests_total",
            "HTTP requests by route, status and outcome (ok, or the problem type)",
            ["method", "route", "status", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flashorder_http_request_duration_seconds",
            "HTTP request latency by route and outcome",
            ["method", "route", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Set by the process that answers a scrape, from the database: the most recent
        # value of any worker is the right one.
        self.lag_events = Gauge(
            "flashorder_read_model_lag_events",
            "Events not yet applied to the read model (outbox backlog + broker lag)",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.lag_seconds = Gauge(
            "flashorder_read_model_lag_seconds",
            "Age of the oldest event the read model has not applied yet",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        # Per worker (a ``pid`` label in multiprocess mode): one stalled worker must show.
        self.loop_lag = Gauge(
            "flashorder_event_loop_lag_seconds",
            "How late the event loop ran a timer, over the last second (the worst)",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        # Summed over the live workers: what the database and Redis see.
        self.db_pool = Gauge(
            "flashorder_db_pool_connections",
            "Database connections of the API's pools, by state (in_use, idle) and the limit",
            ["state"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.redis_pool = Gauge(
            "flashorder_redis_pool_connections",
            "Redis connections of the API's pools, by state (in_use, idle) and the limit",
            ["state"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def _collected(self) -> CollectorRegistry:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return registry
        return self.registry

    def exposition(self, extra: Iterable[Metric] = ()) -> tuple[bytes, str]:
        """Every worker's metrics, then ``extra`` (figures read at scrape time)."""
        body = generate_latest(self._collected())
        families = list(extra)
        if families:
            scraped = CollectorRegistry(auto_describe=False)
            scraped.register(_Fixed(families))
            body += generate_latest(scraped)
        return body, CONTENT_TYPE_LATEST

    def order_calls(self) -> OrderCallsSample:
        """The order call's cumulative figures over every worker (see ``OrderCallsSample``)."""
        method, route = ORDER_ROUTE
        outcomes: dict[str, float] = {}
        buckets: dict[float, float] = {}
        for family in self._collected().collect():
            if family.name == "flashorder_http_requests":
                for s in family.samples:
                    labels = s.labels
                    if (
                        s.name.endswith("_total")
                        and labels.get("route") == route
                        and labels.get("method") == method
                    ):
                        outcome = labels["outcome"]
                        outcomes[outcome] = outcomes.get(outcome, 0.0) + s.value
            elif family.name == "flashorder_http_request_duration_seconds":
                for s in family.samples:
                    labels = s.labels
                    if (
                        s.name.endswith("_bucket")
                        and labels.get("route") == route
                        and labels.get("method") == method
                    ):
                        bound = float(labels["le"])
                        buckets[bound] = buckets.get(bound, 0.0) + s.value
        return OrderCallsSample(outcomes=outcomes, latency_buckets=sorted(buckets.items()))


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def gauge(name: str, documentation: str, labels: list[str], rows: Iterable[tuple]) -> Metric:  # type: ignore[type-arg]
    """A gauge family of ``rows`` (label values..., value), for figures read at scrape time."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for *values, value in rows:
        family.add_metric([str(v) for v in values], float(value))
    return family


class MetricsMiddleware:
    """Counts and times every request by its route template (never the raw path: ids in
    paths would make the label set unbounded) and its outcome."""

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
            # The problem handlers name the outcome of a refusal; a bare error status (the
            # body limit's 413) is named by its number.
            outcome = scope.get(OUTCOME_KEY) or ("ok" if status < 400 else str(status))
            self.metrics.requests.labels(method, route, str(status), outcome).inc()
            self.metrics.latency.labels(method, route, outcome).observe(
                time.perf_counter() - started
            )


def _route_of(scope: Scope) -> str:
    # The router leaves the route it matched in the scope: no second match per request.
    route = scope.get("route")
    if route is None:
        return "unmatched"
    return str(getattr(route, "path", "other"))


#: Reads (in use, idle, limit) of one connection pool.
PoolReader = Callable[[], tuple[int, int, int]]


def sql_pool(engine: AsyncEngine) -> PoolReader:
    def read() -> tuple[int, int, int]:
        pool = engine.pool
        # A QueuePool; SQLite's pools report the same methods or none (then zeros).
        in_use = int(getattr(pool, "checkedout", lambda: 0)())
        idle = int(getattr(pool, "checkedin", lambda: 0)())
        limit = int(getattr(pool, "size", lambda: 0)()) + max(
            0, int(getattr(pool, "_max_overflow", 0))
        )
        return in_use, idle, limit

    return read


def redis_pool(client: Redis) -> PoolReader:
    pool = client.connection_pool

    def read() -> tuple[int, int, int]:
        counts = pool.get_connection_count()
        idle, in_use = (int(n) for n, _ in counts[:2])
        return in_use, idle, int(pool.max_connections)

    return read


async def watch_runtime(
    metrics: Metrics,
    *,
    pools: list[tuple[Gauge, PoolReader]],
    stop: asyncio.Event,
    every: float = 1.0,
) -> None:
    """Until ``stop``: the event loop's lag (how late a timer fires, the worst of each
    period) and the pools' usage, reported every ``every`` seconds; ten timers a second."""
    tick = every / 10

    def report(lag: float) -> None:
        metrics.loop_lag.set(lag)
        for family, read in pools:
            in_use, idle, limit = read()
            family.labels("in_use").set(in_use)
            family.labels("idle").set(idle)
            family.labels("limit").set(limit)

    report(0.0)
    worst = 0.0
    next_report = time.monotonic() + every
    while not stop.is_set():
        expected = time.monotonic() + tick
        await asyncio.sleep(tick)
        worst = max(worst, time.monotonic() - expected)
        if time.monotonic() >= next_report:
            next_report = time.monotonic() + every
            report(worst)
            worst = 0.0

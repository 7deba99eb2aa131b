"""The app factory. Resources are built in the lifespan and reach requests as state."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypedDict

from fastapi import FastAPI
from prometheus_client import Gauge, multiprocess
from redis.asyncio import Redis

from flashorder import __version__
from flashorder.adapters import tracing
from flashorder.application.sale_watch import QueueFigures, SaleWatch
from flashorder.application.tracing import NO_TRACER
from flashorder.bootstrap import Service, build
from flashorder.config import Settings
from flashorder.domain import errors
from flashorder.domain.model import ProductId
from flashorder.entrypoints import logs
from flashorder.entrypoints.api import (
    bench_routes,
    catalogue,
    direct,
    docs_ui,
    openapi,
    ops,
    orders,
    payments,
    problems,
    queue,
    sales,
)
from flashorder.entrypoints.api.auth import Authenticator, secret_warning
from flashorder.entrypoints.api.limits import SizeLimits
from flashorder.entrypoints.api.metrics import (
    Metrics,
    MetricsMiddleware,
    PoolReader,
    redis_pool,
    sql_pool,
    watch_runtime,
)
from flashorder.entrypoints.api.probes import Probes
from flashorder.entrypoints.api.sale_session import Sessions
from flashorder.entrypoints.heap import freeze_startup_heap

if TYPE_CHECKING:
    from flashorder.adapters.tracing.otel import OtelTracer

log = logging.getLogger("flashorder.api")


class State(TypedDict):
    service: Service
    metrics: Metrics
    authenticator: Authenticator
    probes: Probes
    sessions: Sessions
    sale_watch: SaleWatch


def _webhook_secret_warning(settings: Settings) -> str | None:
    """The webhook's development secret let through by the development switch where it would
    be refused otherwise (``Settings.webhook_secret_problem``)."""
    if not settings.allow_dev_secret:
        return None
    problem = settings.model_copy(update={"allow_dev_secret": False}).webhook_secret_problem()
    if problem is None:
        return None
    return f"FLASHORDER_ALLOW_DEV_SECRET is set: ANYONE CAN MARK ORDERS PAID. {problem}"


def serving_app() -> FastAPI:
    """The app of a serving worker process (``flashorder serve``): its startup heap frozen
    once started (see ``heap``). Not for apps built in a process that goes on doing other
    things, such as tests: what a frozen object holds is never collected."""
    return create_app(freeze_heap=True)


def create_app(
    settings: Settings | None = None,
    *,
    background: bool = True,
    freeze_heap: bool = False,
    tracer: OtelTracer | None = None,
) -> FastAPI:
    """Build the ASGI app. ``background`` runs the embedded relay and projector (no Kafka);
    ``freeze_heap`` exempts what startup built from later garbage collections; ``tracer``
    traces requests (default: as the ``OTEL_*`` variables say, off when they say nothing)."""
    settings = settings or Settings()
    tracer = tracer or tracing.from_environment("flashorder-api")
    # Each uvicorn worker is a fresh process that builds its app here.
    logs.configure(settings.log_level, json=settings.log_json)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        if problem := (
            settings.dev_secret_problem()
            or settings.sale_session_secret_problem()
            or settings.queue_secret_problem()
            or settings.webhook_secret_problem()
        ):
            # ``flashorder serve`` refuses these settings before it starts; this catches any
            # other way of serving the app (another ASGI server, an import).
            raise RuntimeError(problem)
        if warning := secret_warning(settings):
            log.warning("auth.development_secret", extra={"warning": warning})
        if warning := _webhook_secret_warning(settings):
            log.warning("payments.development_secret", extra={"warning": warning})
        authenticator = Authenticator(settings)
        async with AsyncExitStack() as stack:
            if tracer is not None:
                # Last out: what the other parts' shutdown traced is flushed too.
                stack.callback(tracer.shutdown)
            service = await stack.enter_async_context(
                build(settings, background=background, tracer=tracer or NO_TRACER)
            )
            watch = SaleWatch(
                service.figures,
                metrics.order_calls,
                service.lag,
                queue=_queue_figures(service),
                every=settings.sale_page_sample_seconds,
            )
            stack.push_async_callback(watch.close)
            await stack.enter_async_context(_runtime_watched(metrics, service))
            if freeze_heap:
                freeze_startup_heap()
            yield {
                "service": service,
                "metrics": metrics,
                "authenticator": authenticator,
                "probes": Probes(service, ttl=settings.probe_cache_seconds),
                "sessions": Sessions(settings),
                "sale_watch": watch,
            }

    app = FastAPI(
        title="flashorder",
        version=__version__,
        lifespan=lifespan,
        # Served by ``docs_ui`` from the package: no CDN. No ReDoc.
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,
        # The service exports its own Prometheus metrics. FastAPI's OpenTelemetry hooks
        # would look up the global tracer provider (an environment read) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    if settings.bench_endpoints:
        # First, as the order routes are: the router tries the routes in order (a quarter of
        # the echo's CPU went to matching when it came last), and the echo is the ceiling of
        # the order route only if it costs what the order route costs to reach.
        app.include_router(bench_routes.router)
    app.include_router(orders.router, responses=problems.common_responses())
    app.include_router(catalogue.router, responses=problems.common_responses())
    app.include_router(payments.router, responses=problems.common_responses())
    app.include_router(queue.router, responses=problems.common_responses())
    app.include_router(ops.router)
    app.include_router(sales.router)
    problems.install(app)
    openapi.install(app, settings)
    docs_ui.install(app)
    # Last of the routes: the front learns where the router sends each request.
    direct.install_front(app.router)
    app.add_middleware(
        SizeLimits,
        max_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if tracer is not None:
        # Imported only with tracing on (it loads the SDK). Outermost: the request's span
        # covers everything else, metrics included.
        from flashorder.entrypoints.api.tracing import TracingMiddleware

        app.add_middleware(TracingMiddleware, tracer=tracer)
    return app


@asynccontextmanager
async def _runtime_watched(metrics: Metrics, service: Service) -> AsyncIterator[None]:
    """This worker's event-loop lag and pool usage, sampled while it serves."""
    pools: list[tuple[Gauge, PoolReader]] = [(metrics.db_pool, sql_pool(service.engine))]
    # One pool per client; a Redis Cluster client keeps one per node and is not reported.
    if isinstance(service.redis, Redis):
        pools.append((metrics.redis_pool, redis_pool(service.redis)))
    stop = asyncio.Event()
    task = asyncio.create_task(watch_runtime(metrics, pools=pools, stop=stop), name="runtime")
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            # The live gauges (loop lag, pools) of a worker that stops leave the sums.
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _queue_figures(service: Service) -> QueueFigures:
    """The sale page's view of a product's waiting room (None: the product is not queued)."""

    async def figures(product_id: ProductId) -> Mapping[str, Any] | None:
        room = service.waiting_room
        if room is None:
            return None
        try:
            stats = await room.stats(product_id)
        except (errors.NoQueue, errors.ProductNotFound):
            return None
        return stats.as_json()

    return figures

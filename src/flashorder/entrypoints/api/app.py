"""The app factory. Resources are built in the lifespan and reach requests as state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from flashorder import __version__
from flashorder.bootstrap import Service, build
from flashorder.config import Settings
from flashorder.entrypoints import logs
from flashorder.entrypoints.api import (
    bench_routes,
    catalogue,
    docs_ui,
    openapi,
    ops,
    orders,
    problems,
)
from flashorder.entrypoints.api.auth import Authenticator, secret_warning
from flashorder.entrypoints.api.limits import SizeLimits
from flashorder.entrypoints.api.metrics import Metrics, MetricsMiddleware
from flashorder.entrypoints.api.probes import Probes
from flashorder.entrypoints.heap import freeze_startup_heap

log = logging.getLogger("flashorder.api")


class State(TypedDict):
    service: Service
    metrics: Metrics
    authenticator: Authenticator
    probes: Probes


def serving_app() -> FastAPI:
    """The app of a serving worker process (``flashorder serve``): its startup heap frozen
    once started (see ``heap``). Not for apps built in a process that goes on doing other
    things, such as tests: what a frozen object holds is never collected."""
    return create_app(freeze_heap=True)


def create_app(
    settings: Settings | None = None, *, background: bool = True, freeze_heap: bool = False
) -> FastAPI:
    """Build the ASGI app. ``background`` runs the embedded relay and projector (no Kafka);
    ``freeze_heap`` exempts what startup built from later garbage collections."""
    settings = settings or Settings()
    # Each uvicorn worker is a fresh process that builds its app here.
    logs.configure(settings.log_level, json=settings.log_json)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        if problem := settings.dev_secret_problem():
            # ``flashorder serve`` refuses these settings before it starts; this catches any
            # other way of serving the app (another ASGI server, an import).
            raise RuntimeError(problem)
        if warning := secret_warning(settings):
            log.warning("auth.development_secret", extra={"warning": warning})
        authenticator = Authenticator(settings)
        async with build(settings, background=background) as service:
            if freeze_heap:
                freeze_startup_heap()
            yield {
                "service": service,
                "metrics": metrics,
                "authenticator": authenticator,
                "probes": Probes(service, ttl=settings.probe_cache_seconds),
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
    app.include_router(orders.router, responses=problems.common_responses())
    app.include_router(catalogue.router, responses=problems.common_responses())
    app.include_router(ops.router)
    if settings.bench_endpoints:
        app.include_router(bench_routes.router)
    problems.install(app)
    openapi.install(app, settings)
    docs_ui.install(app)
    app.add_middleware(
        SizeLimits,
        max_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app

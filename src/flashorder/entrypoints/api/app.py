"""The app factory. Resources are built in the lifespan and reach requests as state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from flashorder import __version__
from flashorder.bootstrap import Service, build
from flashorder.config import DEV_PAYMENT_WEBHOOK_SECRET, Settings
from flashorder.entrypoints import logs
from flashorder.entrypoints.api import (
    bench_routes,
    catalogue,
    docs_ui,
    openapi,
    ops,
    orders,
    payments,
    problems,
)
from flashorder.entrypoints.api.auth import Authenticator, secret_warning
from flashorder.entrypoints.api.limits import BodyLimit
from flashorder.entrypoints.api.metrics import Metrics, MetricsMiddleware
from flashorder.entrypoints.heap import freeze_startup_heap

log = logging.getLogger("flashorder.api")


class State(TypedDict):
    service: Service
    metrics: Metrics
    authenticator: Authenticator


def _webhook_secret_warning(settings: Settings) -> str | None:
    if (
        settings.database_url is not None
        and settings.payment_webhook_secret.get_secret_value() == DEV_PAYMENT_WEBHOOK_SECRET
    ):
        return (
            "FLASHORDER_PAYMENT_WEBHOOK_SECRET is the documented development secret while "
            "FLASHORDER_DATABASE_URL is set: ANYONE CAN MARK ORDERS PAID. Set the secret "
            "your payment provider signs its webhook with."
        )
    return None


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
        for warning in (secret_warning(settings), _webhook_secret_warning(settings)):
            if not warning:
                continue
            log.warning("%s\n%s\n%s", "!" * 78, warning, "!" * 78)
        authenticator = Authenticator(settings)
        async with build(settings, background=background) as service:
            if freeze_heap:
                freeze_startup_heap()
            yield {"service": service, "metrics": metrics, "authenticator": authenticator}

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
    app.include_router(payments.router, responses=problems.common_responses())
    app.include_router(ops.router)
    if settings.bench_endpoints:
        app.include_router(bench_routes.router)
    problems.install(app)
    openapi.install(app, settings)
    docs_ui.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app

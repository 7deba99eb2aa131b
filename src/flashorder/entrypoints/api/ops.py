"""Liveness, readiness and metrics: open to anyone, so what they read of the dependencies
is shared for ``FLASHORDER_PROBE_CACHE_SECONDS`` (see ``probes``)."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Request
from prometheus_client.core import Metric
from starlette.responses import JSONResponse, Response

from flashorder.bootstrap import Service
from flashorder.entrypoints.api.deps import ServiceDep
from flashorder.entrypoints.api.metrics import Metrics, gauge
from flashorder.entrypoints.api.probes import Probes
from flashorder.entrypoints.api.schemas import Health, Readiness

router = APIRouter(tags=["operations"])

log = logging.getLogger("flashorder.api")

#: The products a scrape reports: the most recently changed ones (those on sale).
SCRAPED_PRODUCTS = 50


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is down: not ready"}},
    summary="Readiness: every dependency answers; read-model lag in detail",
)
async def readyz(request: Request) -> JSONResponse:
    probes: Probes = request.state.probes
    checks = await probes.readiness()
    lag = await probes.lag()
    ready = all(state == "ok" for state in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks, "lag": lag},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request, service: ServiceDep) -> Response:
    registry: Metrics = request.state.metrics
    probes: Probes = request.state.probes
    lag = await probes.lag()
    registry.lag_events.set(lag.get("events", 0))
    registry.lag_seconds.set(lag.get("seconds", 0.0))
    body, content_type = registry.exposition(await _database_figures(service))
    return Response(body, media_type=content_type)


async def _database_figures(service: Service) -> list[Metric]:
    """The figures of the write model, read at scrape time (a few indexed queries).
    A database that does not answer leaves them out; the request metrics still go out."""
    figures = service.figures
    try:
        async with asyncio.timeout(2):
            sales = await figures.products((), newest=SCRAPED_PRODUCTS)
            by_status = await figures.orders_by_status()
            outbox = await figures.outbox()
    except Exception:
        log.warning("metrics.database_figures_failed", exc_info=True)
        return [
            gauge(
                "flashorder_database_figures_up", "1 when the figures below were read", [], [(0,)]
            )
        ]
    age = 0.0 if outbox.oldest_at is None else max(0.0, time.time() - outbox.oldest_at.timestamp())
    return [
        gauge("flashorder_database_figures_up", "1 when the figures below were read", [], [(1,)]),
        gauge(
            "flashorder_product_stock_units",
            "Units of a product on sale: its stock, available and sold",
            ["product_id", "state"],
            [
                (s.product_id, state, n)
                for s in sales
                for state, n in (("stock", s.stock), ("available", s.available), ("sold", s.sold))
            ],
        ),
        gauge(
            "flashorder_product_orders",
            "Orders holding a line of a product on sale, by status (CREATED: holds awaiting "
            "payment)",
            ["product_id", "status"],
            [(s.product_id, status, n) for s in sales for status, n in s.orders.items()],
        ),
        gauge(
            "flashorder_orders",
            "Orders by status",
            ["status"],
            list(by_status.items()),
        ),
        gauge(
            "flashorder_outbox_backlog_events",
            "Events in the outbox not yet published",
            [],
            [(outbox.backlog,)],
        ),
        gauge(
            "flashorder_outbox_oldest_age_seconds",
            "How long the oldest unpublished event has waited (0 when none waits)",
            [],
            [(age,)],
        ),
    ]

"""Liveness, readiness and metrics: open to anyone, so what they read of the dependencies
is shared for ``FLASHORDER_PROBE_CACHE_SECONDS`` (see ``probes``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from flashorder.entrypoints.api.metrics import Metrics
from flashorder.entrypoints.api.probes import Probes
from flashorder.entrypoints.api.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


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
async def metrics(request: Request) -> Response:
    registry: Metrics = request.state.metrics
    probes: Probes = request.state.probes
    lag = await probes.lag()
    registry.lag_events.set(lag.get("events", 0))
    registry.lag_seconds.set(lag.get("seconds", 0.0))
    body, content_type = registry.exposition()
    return Response(body, media_type=content_type)

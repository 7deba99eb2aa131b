"""FastAPI dependencies: the per-process service, reached through typed request state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from flashorder.bootstrap import Service


async def service_of(request: Request) -> Service:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request.
    service: Service = request.state.service
    return service


ServiceDep = Annotated[Service, Depends(service_of)]

"""FastAPI dependencies: the per-process service, reached through typed request state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from flashorder.bootstrap import Service


def _service(request: Request) -> Service:
    service: Service = request.state.service
    return service


ServiceDep = Annotated[Service, Depends(_service)]

"""Admission: the rate limits in front of the commands that take stock (place, cancel).

Two token buckets per request, one for the caller's user and one for the client address
(behind a proxy, ``FLASHORDER_FORWARDED_ALLOW_IPS`` / ``flashorder serve
--forwarded-allow-ips`` decides whose ``X-Forwarded-For`` is believed). A token is taken from
both or from neither, in one round trip: a user refused by their own bucket costs the shared
address bucket nothing, and a refused request changes nothing else.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from flashorder.application.ports import Bucket
from flashorder.bootstrap import Service
from flashorder.entrypoints.api.auth import Principal, UserDep
from flashorder.entrypoints.api.deps import ServiceDep
from flashorder.entrypoints.api.problems import ProblemType, TooManyRequests, documented

#: The answer of a route behind the limits, for the OpenAPI document.
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: documented(
        "Rate limited: come back after `Retry-After` seconds; nothing was written",
        ProblemType.TOO_MANY_REQUESTS,
        headers={"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    )
}


async def _admitted(request: Request, principal: UserDep, service: ServiceDep) -> Principal:
    await admit(request, principal, service)
    return principal


async def admit(request: Request, principal: Principal, service: Service) -> None:
    """Take a token from the caller's buckets, or raise TooManyRequests."""
    settings = service.settings
    buckets: list[Bucket] = []
    if settings.rate_ip_per_second > 0:
        address = request.client.host if request.client is not None else "unknown"
        buckets.append(Bucket(f"ip:{address}", settings.rate_ip_per_second, settings.rate_ip_burst))
    if settings.rate_user_per_second > 0:
        buckets.append(
            Bucket(
                f"user:{principal.user_id}", settings.rate_user_per_second, settings.rate_user_burst
            )
        )
    if buckets:
        wait = await service.limiter.take(buckets)
        if wait > 0:
            raise TooManyRequests(f"too many requests; retry in {wait:.2f}s", retry_after=wait)


#: The authenticated caller, once admitted by the rate limits.
AdmittedDep = Annotated[Principal, Depends(_admitted)]

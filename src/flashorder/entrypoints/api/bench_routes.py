"""The ceiling of the HTTP stack: an order route that does everything but the order.

``POST /api/v1/bench/echo-order`` takes the same body and headers as ``POST /api/v1/orders``,
validates them the same way (token, schema, Idempotency-Key, the per-order limits) and answers the
validated order back, with no I/O at all. ``flashorder-bench`` drives it with the same load
generator and workers as the real route: what the real route reaches of this ceiling is what
the order pipeline costs. Served only when ``bench_endpoints`` is on.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from flashorder.domain import errors
from flashorder.entrypoints.api.auth import UserDep
from flashorder.entrypoints.api.deps import ServiceDep
from flashorder.entrypoints.api.direct import direct_route
from flashorder.entrypoints.api.orders import IdempotencyKey
from flashorder.entrypoints.api.problems import Forbidden
from flashorder.entrypoints.api.schemas import PlaceOrderIn

router = APIRouter(prefix="/api/v1/bench", tags=["bench"], include_in_schema=False)


@direct_route(
    router,
    "POST",
    "/echo-order",
    status_code=201,
    summary="Validate an order and echo it (no I/O)",
)
async def echo_order(
    body: PlaceOrderIn,
    service: ServiceDep,
    principal: UserDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    # The token is checked as for a real order (a signature check is CPU, not I/O); the
    # per-user rate limit is not, as it is a Redis call.
    if body.user_id != principal.user_id:
        raise Forbidden("an order is placed by its buyer: userId must be the token's subject")
    limits = service.settings
    if len(body.items) > limits.max_items_per_order:
        raise errors.InvalidOrder(f"an order has at most {limits.max_items_per_order} items")
    if any(item.quantity > limits.max_quantity_per_item for item in body.items):
        raise errors.InvalidOrder(f"quantity is at most {limits.max_quantity_per_item} per item")
    echoed = body.model_dump(mode="json", by_alias=True)
    return Response(orjson.dumps(echoed), 201, media_type="application/json")

"""Order routes: the command side (place, cancel) and the query side (read model)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from flashorder.application import handlers
from flashorder.application.queries import order_view
from flashorder.domain import commands, errors
from flashorder.domain.model import DiscountPolicyId, OrderId, ProductId, UserId
from flashorder.domain.pricing import RequestedLine
from flashorder.entrypoints.api.admission import RATE_LIMITED, AdmittedDep, admit
from flashorder.entrypoints.api.auth import AUTH_RESPONSES, UserDep
from flashorder.entrypoints.api.deps import ServiceDep
from flashorder.entrypoints.api.direct import direct_route
from flashorder.entrypoints.api.problems import Forbidden, ProblemType, documented
from flashorder.entrypoints.api.queue import room_of
from flashorder.entrypoints.api.schemas import Ident, OrderOut, OrderPage, PlaceOrderIn

router = APIRouter(prefix="/api/v1/orders", tags=["orders"], responses=AUTH_RESPONSES)

#: Set on a replayed answer only, which is otherwise the first answer as it was (status 201).
REPLAYED = "Idempotent-Replayed"

AdmissionToken = Annotated[
    str | None,
    Header(
        alias="Admission-Token",
        max_length=2048,
        description="A queued product's order: the `admissionToken` of the buyer's "
        "ADMITTED ticket (`POST /api/v1/sales/{productId}/queue`).",
    ),
]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any unique string (a UUID is ideal). Retries with the same key and body "
        "get the first answer; a different body gets 422.",
    ),
]


class deadline:
    """Bound a command. Past the deadline the handler is cancelled (its transaction rolls
    back, its reservation is released) and the client gets a 503. Whether a commit raced the
    deadline cannot be known here: the problem says so, and the Idempotency-Key makes the
    retry safe.

    A class rather than a generator-based context manager: it wraps every order, and the
    generator's machinery cost as much as the timeout itself."""

    __slots__ = ("_seconds", "_timeout")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._timeout = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            raise errors.Unavailable(
                "service",
                f"no answer within {self._seconds:g}s; the outcome is unknown, retry with the "
                "same Idempotency-Key",
                public=True,
            ) from None


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # The body is already a plain dict of the domain's snapshot: serialise it directly rather
    # than validate it again through the response model (which still documents it).
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


@direct_route(
    router,
    "POST",
    "",
    status_code=201,
    response_model=OrderOut,
    responses={
        201: {
            "description": "The order, created; or, for a retry with the same "
            "`Idempotency-Key` and body, the first answer again (status 201 too), marked "
            "`Idempotent-Replayed: true`.",
            "headers": {
                REPLAYED: {
                    "description": "Present, and `true`, only on a replayed answer.",
                    "schema": {"type": "boolean"},
                }
            },
        },
        409: documented(
            "Sold out, limit reached, the same key's request still in flight, or outside "
            "the sale window (`sale-not-started` with `Retry-After`: seconds to the start)",
            ProblemType.SOLD_OUT,
            ProblemType.LIMIT_REACHED,
            ProblemType.DUPLICATE_IN_FLIGHT,
            ProblemType.SALE_NOT_STARTED,
            ProblemType.SALE_ENDED,
            ProblemType.QUEUE_ADMISSION_REQUIRED,
            ProblemType.ADMISSION_TOKEN_EXPIRED,
        ),
        403: documented(
            "`userId` is not the token's subject, or the `Admission-Token` is forged, "
            "another user's or another product's",
            ProblemType.FORBIDDEN,
            ProblemType.ADMISSION_TOKEN_INVALID,
        ),
        422: documented(
            "Invalid, tampered or inconsistent; nothing was written",
            ProblemType.INVALID_REQUEST,
            ProblemType.PRICE_MISMATCH,
            ProblemType.DISCOUNT_NOT_APPLICABLE,
            ProblemType.IDEMPOTENCY_KEY_REUSED,
            ProblemType.UNKNOWN_REFERENCE,
        ),
        **RATE_LIMITED,
    },
    summary="Place an order",
    description="The buyer places their own order: `userId` must be the token's subject, "
    "for admins too (403 otherwise).",
)
async def place_order(
    body: PlaceOrderIn,
    request: Request,
    service: ServiceDep,
    principal: UserDep,
    idempotency_key: IdempotencyKey = None,
    admission_token: AdmissionToken = None,
) -> Response:
    if body.user_id != principal.user_id:
        raise Forbidden("an order is placed by its buyer: userId must be the token's subject")
    if len(body.items) > service.settings.max_items_per_order:
        raise errors.InvalidOrder(
            f"an order has at most {service.settings.max_items_per_order} items"
        )
    if any(item.quantity > service.settings.max_quantity_per_item for item in body.items):
        raise errors.InvalidOrder(
            f"quantity is at most {service.settings.max_quantity_per_item} per item"
        )
    product_ids = [ProductId(item.product_id) for item in body.items]
    # The crowd before a known product's start is refused from what this process holds,
    # before anything else: no rate-limit token, no read, no write.
    handlers.refuse_known_off_sale(
        product_ids, deps=service.deps, keyed=idempotency_key is not None
    )
    # Then admitted: whatever else an order names costs its caller a token before it costs
    # the service a read or a cache entry (a made-up product id would otherwise be a free
    # database reading).
    await admit(request, principal, service)
    # The crowd before a sale's start is refused here, from the process's catalogue cache:
    # no idempotency claim, no reservation, no write.
    await handlers.refuse_off_sale(
        product_ids,
        deps=service.deps,
        keyed=idempotency_key is not None,
    )
    # A queued product's order needs the buyer's admission (no I/O: the token is checked).
    queued = handlers.queued_among(product_ids, deps=service.deps)
    if queued:
        room_of(service).check_order(queued, principal.user_id, admission_token)
    if idempotency_key is None:
        # An unkeyed order of a product this process knows to be sold out costs no further
        # round trip and changes nothing. (A keyed one may be the retry of an order that was
        # placed: the handler answers it from the key's record.)
        gone = await handlers.sold_out_among(product_ids, deps=service.deps)
        if gone is not None:
            raise errors.SoldOut(gone)
    cmd = commands.PlaceOrder(
        user_id=UserId(body.user_id),
        lines=tuple(
            RequestedLine(ProductId(i.product_id), i.quantity, i.product_price) for i in body.items
        ),
        discount_policy_id=(
            DiscountPolicyId(body.discount_policy_id) if body.discount_policy_id else None
        ),
        discount_amount=body.discount_amount,
        delivery_fee=body.delivery_fee,
        payment_amount=body.payment_amount,
        payment_type=body.payment_type,
        idempotency_key=idempotency_key,
    )
    async with deadline(service.settings.request_timeout_seconds):
        placed = await handlers.place_order(cmd, deps=service.deps)
    if placed.replayed:
        return _json(placed.body, placed.status_code, {REPLAYED: "true"})
    if queued:
        room_of(service).note_order(queued, principal.user_id)
    return _json(placed.body, placed.status_code)


@direct_route(
    router,
    "GET",
    "/{order_id}",
    response_model=OrderOut,
    responses={404: documented("No such order, or not yours", ProblemType.NOT_FOUND)},
    summary="Read an order (query side; your own writes at once)",
    description="From the read model, checked against the write side's version: right "
    "after you place, pay or cancel an order, this shows its new state.",
)
async def get_order(order_id: Ident, service: ServiceDep, principal: UserDep) -> Response:
    # Someone else's order looks absent: a 403 would confirm that the id exists.
    view = await order_view(
        OrderId(order_id),
        viewer=None if principal.admin else principal.user_id,
        read_model=service.read_model,
        lookup=service.orders,
    )
    return _json(view)


@router.get(
    "",
    response_model=OrderPage,
    responses={422: documented("A cursor this service did not give", ProblemType.INVALID_REQUEST)},
    summary="List a user's orders, newest first",
    description="Your own orders (403 for anyone else's), or anyone's with an admin token.",
)
async def list_orders(
    service: ServiceDep,
    principal: UserDep,
    user_id: Annotated[Ident, Query(alias="userId")],
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_\-=]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    if user_id != principal.user_id and not principal.admin:
        raise Forbidden("you can list only your own orders")
    items, next_cursor = await service.read_model.orders_of(
        UserId(user_id), cursor=cursor, limit=limit
    )
    return _json({"items": items, "nextCursor": next_cursor})


@router.post(
    "/{order_id}/cancel",
    response_model=OrderOut,
    responses={
        404: documented("No such order, or not yours", ProblemType.NOT_FOUND),
        409: documented(
            "A cancel of this order is in flight, or the order has expired",
            ProblemType.DUPLICATE_IN_FLIGHT,
            ProblemType.ORDER_STATE_CONFLICT,
        ),
        **RATE_LIMITED,
    },
    summary="Cancel an order (idempotent: the stock comes back once)",
    description="The buyer cancels their own order; an admin any order. A paid order "
    "can be cancelled too: its payment is announced for a refund (`payment.refund_due`).",
)
async def cancel_order(order_id: Ident, service: ServiceDep, principal: AdmittedDep) -> Response:
    # The handler makes others' orders look absent, as reading them does.
    owner = None if principal.admin else principal.user_id
    cmd = commands.CancelOrder(OrderId(order_id), user_id=owner)
    body = await handlers.cancel_order(cmd, deps=service.deps)
    return _json(body)

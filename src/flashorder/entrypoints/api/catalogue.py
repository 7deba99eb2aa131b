"""Catalogue routes: products, stock and discount policies. Writes need an admin token,
reads any valid token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Response

from flashorder.application import handlers
from flashorder.domain import commands, errors
from flashorder.domain.model import DiscountPolicy, DiscountPolicyId, Product, ProductId
from flashorder.entrypoints.api.auth import AUTH_RESPONSES, AdminDep, UserDep
from flashorder.entrypoints.api.deps import ServiceDep
from flashorder.entrypoints.api.direct import direct_route
from flashorder.entrypoints.api.problems import ProblemType, documented
from flashorder.entrypoints.api.schemas import (
    DiscountPolicyIn,
    DiscountPolicyOut,
    Ident,
    ProductChangeIn,
    ProductIn,
    ProductOut,
    StockChangeIn,
)

router = APIRouter(prefix="/api/v1", tags=["catalogue"], responses=AUTH_RESPONSES)


def _product_out(product: Product, default_pay_within: timedelta) -> ProductOut:
    return ProductOut(
        product_id=product.product_id,
        name=product.name,
        price=product.price,
        stock=product.stock,
        available=product.available,
        sold=product.sold,
        max_per_user=product.max_per_user,
        sale_starts_at=product.sale_starts_at,
        sale_ends_at=product.sale_ends_at,
        pay_within_seconds=int(product.pay_within(default_pay_within).total_seconds()),
        queued=product.queued,
        queue_opens_at=product.queue_opens_at,
        admission_per_second=product.admission_per_second,
        delivery_fee=product.delivery_fee,
        server_time=datetime.now(UTC),
    )


def _policy_out(policy: DiscountPolicy) -> DiscountPolicyOut:
    return DiscountPolicyOut(
        policy_id=policy.policy_id,
        kind=policy.kind,
        value=policy.value,
        min_order_amount=policy.min_order_amount,
        max_discount=policy.max_discount,
        valid_from=policy.valid_from,
        valid_until=policy.valid_until,
    )


@router.post(
    "/products",
    status_code=201,
    summary="Create a product (admin)",
    responses={
        409: documented("A product with this id exists", ProblemType.ALREADY_EXISTS),
        422: documented(
            "Negative price or stock; a queued sale without saleStartsAt",
            ProblemType.INVALID_REQUEST,
        ),
    },
)
async def create_product(body: ProductIn, service: ServiceDep, _: AdminDep) -> ProductOut:
    product = await handlers.create_product(
        commands.CreateProduct(
            product_id=ProductId(body.product_id),
            name=body.name,
            price=body.price,
            stock=body.stock,
            max_per_user=body.max_per_user,
            sale_starts_at=body.sale_starts_at,
            sale_ends_at=body.sale_ends_at,
            pay_within_seconds=body.pay_within_seconds,
            queued=body.queued,
            queue_opens_at=body.queue_opens_at,
            admission_per_second=body.admission_per_second,
            delivery_fee=body.delivery_fee,
        ),
        deps=service.deps,
    )
    return _product_out(product, service.deps.pay_within)


@router.patch(
    "/products/{product_id}",
    summary="Change a product's sale window, payment deadline, delivery fee or queue (admin)",
    description="Only the fields sent change; `null` clears a bound of the window or the "
    "payment deadline. Every API process applies the change within its catalogue cache's "
    "time-to-live (5 s): an order priced with the old delivery fee meanwhile is refused "
    "(422 `price-mismatch`) by a process that already has the new one, and the other way round.",
    responses={
        404: documented("No such product", ProblemType.NOT_FOUND),
        422: documented("A window that ends before it starts", ProblemType.INVALID_REQUEST),
    },
)
async def change_product(
    product_id: Ident, body: ProductChangeIn, service: ServiceDep, _: AdminDep
) -> ProductOut:
    product = await handlers.change_product(
        commands.ChangeProduct(
            product_id=ProductId(product_id),
            changes=frozenset(body.model_fields_set),
            sale_starts_at=body.sale_starts_at,
            sale_ends_at=body.sale_ends_at,
            pay_within_seconds=body.pay_within_seconds,
            queued=body.queued,
            queue_opens_at=body.queue_opens_at,
            admission_per_second=body.admission_per_second,
            delivery_fee=body.delivery_fee,
        ),
        deps=service.deps,
    )
    return _product_out(product, service.deps.pay_within)


# The page every buyer reloads while a sale is on: a direct route (see ``direct``).
@direct_route(
    router,
    "GET",
    "/products/{product_id}",
    response_model=ProductOut,
    summary="Read a product with its available and sold stock",
    responses={404: documented("No such product", ProblemType.NOT_FOUND)},
)
async def get_product(product_id: Ident, service: ServiceDep, _: UserDep) -> Response:
    product = await handlers.product_view(ProductId(product_id), deps=service.deps)
    # Written out as FastAPI writes the response model (by alias, compact JSON), in one step
    # rather than FastAPI's validate, encode and dump of the returned model.
    return Response(
        _product_out(product, service.deps.pay_within).model_dump_json(by_alias=True),
        media_type="application/json",
    )


@router.post(
    "/products/{product_id}/stock",
    summary="Add to or set the stock mid-sale (admin)",
    responses={
        404: documented("No such product", ProblemType.NOT_FOUND),
        409: documented(
            "The stock would go below what is ordered or reserved",
            ProblemType.STOCK_BELOW_COMMITTED,
        ),
        422: documented("Not exactly one of add and set", ProblemType.INVALID_REQUEST),
    },
)
async def change_stock(
    product_id: Ident, body: StockChangeIn, service: ServiceDep, _: AdminDep
) -> ProductOut:
    if (body.add is None) == (body.set is None):
        raise errors.InvalidOrder("give exactly one of add and set")
    product = await handlers.change_stock(
        commands.ChangeStock(ProductId(product_id), add=body.add, set_to=body.set),
        deps=service.deps,
    )
    return _product_out(product, service.deps.pay_within)


@router.post(
    "/discount-policies",
    status_code=201,
    summary="Create a discount policy (admin)",
    responses={
        409: documented("A policy with this id exists", ProblemType.ALREADY_EXISTS),
        422: documented("validUntil not after validFrom", ProblemType.INVALID_REQUEST),
    },
)
async def create_discount_policy(
    body: DiscountPolicyIn, service: ServiceDep, _: AdminDep
) -> DiscountPolicyOut:
    if body.valid_from and body.valid_until and body.valid_until <= body.valid_from:
        raise errors.InvalidOrder("validUntil must be after validFrom")
    policy = await handlers.create_discount_policy(
        commands.CreateDiscountPolicy(
            policy_id=DiscountPolicyId(body.policy_id),
            kind=body.kind,
            value=body.value,
            min_order_amount=body.min_order_amount,
            max_discount=body.max_discount,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
        ),
        deps=service.deps,
    )
    return _policy_out(policy)


@router.get(
    "/discount-policies/{policy_id}",
    summary="Read a discount policy",
    responses={404: documented("No such policy", ProblemType.NOT_FOUND)},
)
async def get_discount_policy(
    policy_id: Ident, service: ServiceDep, _: UserDep
) -> DiscountPolicyOut:
    policy = await handlers.discount_policy_view(DiscountPolicyId(policy_id), deps=service.deps)
    return _policy_out(policy)

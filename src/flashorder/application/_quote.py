"""An order as the server prices it, from the catalogue (cached per process) and the policy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import uuid_utils

from flashorder.application.catalogue import CatalogueCache
from flashorder.application.ports import ReservationLine, UnitOfWorkFactory
from flashorder.domain import commands, errors
from flashorder.domain.model import (
    DiscountPolicy,
    DiscountPolicyId,
    Order,
    OrderId,
    Product,
    ProductId,
)
from flashorder.domain.pricing import DeliveryRule, check_quote


def new_order_id() -> OrderId:
    # UUIDv7: time-ordered, so the primary key index grows at its right edge and a user's
    # orders sort by creation without a second index.
    return OrderId(str(uuid_utils.uuid7()))


async def priced_order(
    cmd: commands.PlaceOrder,
    *,
    uow: UnitOfWorkFactory,
    catalogue: CatalogueCache,
    now: datetime,
    pay_within: timedelta,
    delivery: DeliveryRule,
) -> tuple[Order, list[ReservationLine]]:
    """The order and the stock it needs; any figure of the client's that differs is a 422,
    a product outside its sale window a 409. ``pay_within`` is the deadline of products that
    set none of their own."""

    async def load_products(ids: Sequence[ProductId]) -> dict[ProductId, Product]:
        async with uow() as work:
            return await work.products.get_many(ids)

    products = await catalogue.products([line.product_id for line in cmd.lines], load_products)
    for product in products.values():
        product.check_on_sale(now)
    policy = await _policy(cmd.discount_policy_id, uow=uow, catalogue=catalogue)
    quote = check_quote(
        requested=cmd.lines,
        catalogue=products,
        policy=policy,
        claimed_discount=cmd.discount_amount,
        delivery_fee=cmd.delivery_fee,
        claimed_payment=cmd.payment_amount,
        at=now,
        delivery=delivery,
    )
    order = Order.place(
        order_id=new_order_id(),
        user_id=cmd.user_id,
        lines=quote.lines,
        discount_policy_id=cmd.discount_policy_id,
        discount_amount=quote.discount_amount,
        delivery_fee=quote.delivery_fee,
        payment_amount=quote.payment_amount,
        payment_type=cmd.payment_type,
        at=now,
        # The tightest deadline of the order's products.
        pay_within=min(products[ln.product_id].pay_within(pay_within) for ln in quote.lines),
    )
    reservation = [
        ReservationLine(line.product_id, line.quantity, products[line.product_id].max_per_user)
        for line in quote.lines
    ]
    return order, reservation


async def _policy(
    policy_id: DiscountPolicyId | None, *, uow: UnitOfWorkFactory, catalogue: CatalogueCache
) -> DiscountPolicy | None:
    if policy_id is None:
        return None

    async def load(wanted: DiscountPolicyId) -> DiscountPolicy | None:
        async with uow() as work:
            return await work.discounts.get(wanted)

    policy = await catalogue.policy(policy_id, load)
    if policy is None:
        raise errors.UnknownReference("discount policy", policy_id)
    return policy

"""Prices are the server's: the client's figures are checked, never trusted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from flashorder.domain import errors
from flashorder.domain.model import DiscountPolicy, Money, OrderLine, Product, ProductId


@dataclass(frozen=True, slots=True)
class RequestedLine:
    product_id: ProductId
    quantity: int
    product_price: Money


@dataclass(frozen=True, slots=True)
class DeliveryRule:
    """What delivery costs, as the shop sets it: a flat fee per order, waived when the items
    amount after the discount reaches ``free_from`` (None: never waived). The buyer's
    ``deliveryFee`` is checked against it like any price, never trusted.

    Products may cost more to deliver (``Product.delivery_fee``). An order ships as one
    parcel, so its fee is the **highest** of the shop's flat fee and its products' own fees,
    not their sum, and the quantity does not multiply it. ``free_from`` waives the shop's
    flat fee only: a product's own fee is what delivering that product costs, whatever else
    the order holds.
    """

    flat: Money = 0
    free_from: Money | None = None

    def fee_for(self, amount: Money, product_fees: Iterable[Money] = ()) -> Money:
        shop = 0 if self.free_from is not None and amount >= self.free_from else self.flat
        return max(shop, *product_fees)


@dataclass(frozen=True, slots=True)
class Quote:
    lines: tuple[OrderLine, ...]
    items_amount: Money
    discount_amount: Money
    delivery_fee: Money
    payment_amount: Money


def check_quote(
    *,
    requested: Sequence[RequestedLine],
    catalogue: Mapping[ProductId, Product],
    policy: DiscountPolicy | None,
    claimed_discount: Money | None,
    delivery_fee: Money,
    claimed_payment: Money,
    at: datetime,
    delivery: DeliveryRule = DeliveryRule(),
) -> Quote:
    """Price the order from the catalogue and reject any figure of the client's that differs.

    ``claimed_discount`` may be omitted (null) only when there is no discount to give;
    ``delivery_fee`` is the client's figure, checked against the shop's ``delivery`` rule and
    the products' own fees.
    """
    if not requested:
        raise errors.InvalidOrder("an order needs at least one item")
    seen: set[ProductId] = set()
    lines: list[OrderLine] = []
    for line in requested:
        if line.product_id in seen:
            raise errors.InvalidOrder(f"product {line.product_id!r} appears twice; merge the lines")
        seen.add(line.product_id)
        if line.quantity <= 0:
            raise errors.InvalidOrder("quantity must be positive")
        product = catalogue.get(line.product_id)
        if product is None:
            raise errors.UnknownReference("product", line.product_id)
        if line.product_price != product.price:
            raise errors.PriceMismatch(
                f"productPrice of {line.product_id}", product.price, line.product_price
            )
        lines.append(OrderLine(line.product_id, line.quantity, product.price))
    items_amount = sum(line.amount for line in lines)
    discount = policy.discount_for(items_amount, at) if policy is not None else 0
    if (claimed_discount or 0) != discount:
        raise errors.PriceMismatch("discountAmount", discount, claimed_discount or 0)
    fee = delivery.fee_for(
        items_amount - discount, (catalogue[line.product_id].delivery_fee for line in lines)
    )
    if delivery_fee != fee:
        raise errors.PriceMismatch("deliveryFee", fee, delivery_fee)
    payment = items_amount - discount + fee
    if claimed_payment != payment:
        raise errors.PriceMismatch("paymentAmount", payment, claimed_payment)
    return Quote(tuple(lines), items_amount, discount, fee, payment)

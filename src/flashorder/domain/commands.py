"""Commands: what a caller asks the service to do, in the imperative."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flashorder.domain.model import (
    DiscountKind,
    DiscountPolicyId,
    Money,
    OrderId,
    PaymentType,
    ProductId,
    UserId,
)
from flashorder.domain.pricing import RequestedLine


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    user_id: UserId
    lines: tuple[RequestedLine, ...]
    discount_policy_id: DiscountPolicyId | None
    discount_amount: Money | None
    delivery_fee: Money
    payment_amount: Money
    payment_type: PaymentType
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CancelOrder:
    order_id: OrderId
    #: When set, only this user's order may be cancelled (others' look absent).
    user_id: UserId | None = None


@dataclass(frozen=True, slots=True)
class CreateProduct:
    product_id: ProductId
    name: str
    price: Money
    stock: int
    max_per_user: int | None = None


@dataclass(frozen=True, slots=True)
class ChangeStock:
    product_id: ProductId
    add: int | None = None
    set_to: int | None = None


@dataclass(frozen=True, slots=True)
class CreateDiscountPolicy:
    policy_id: DiscountPolicyId
    kind: DiscountKind
    value: int
    min_order_amount: Money = 0
    max_discount: Money | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
